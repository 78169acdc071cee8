"""Rebuild a calibration sweep's report and check its recommendation against a reference.

    python -m lambda_hat.calibrate SWEEP_DIR [--reference [SAMPLER]]

SWEEP_DIR is the folder of a ``+experiment=calibration`` sweep (or any sweep of fixed-step SGLD
jobs over several step sizes). Writes calibration.md / .png / .csv there (see
lambda_hat.sweeps.calibration for the rules), prints the verdicts and the recommended setting.
``--reference`` runs the recommended setting's target and posterior once with a long full-batch
sampler (``objective.reference``: NUTS by default; HMC, MCLMC, ... by name), cached under
``<cache_dir>/references`` like the Optuna search's references, and prints λ̂ against it. For a
target with a known λ (DLN) the known λ is the reference. The full-batch reference is meant for
small models: every NUTS step is a full-data gradient pass, many per transition.
Exit status 2 (one line) when the folder holds no calibration sweep.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

PROG = "lambda_hat.calibrate"


def _reference(rec: dict, sampler: str) -> dict:
    from omegaconf import OmegaConf, open_dict

    from lambda_hat.sweeps import references

    cfg = OmegaConf.load(Path(str(rec["output_dir"])) / "config_resolved.yaml")
    with open_dict(cfg):
        cfg.objective.reference.sampler = sampler
    metrics = json.loads((Path(str(rec["output_dir"])) / "metrics.json").read_text())
    return references.get_reference(cfg, target_id=metrics.get("target_id"), llc_true=metrics.get("llc_true"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR")
    p.add_argument("--reference", nargs="?", const="nuts", metavar="SAMPLER", help="check the recommendation against a cached full-batch run (default nuts)")
    args = p.parse_args(argv)
    import pandas as pd

    from lambda_hat.sweeps import aggregate, calibration

    path = args.sweep_dir / "llc_runs.parquet"
    table = pd.read_parquet(path) if path.is_file() else aggregate.collect_rows(args.sweep_dir)
    report = calibration.write_report(args.sweep_dir, table) if len(table) else None
    if report is None:
        print(f"{PROG}: error: {args.sweep_dir}: no calibration sweep there (fixed-step SG-MCMC jobs over several step sizes)", file=sys.stderr)
        return 2
    print(aggregate.markdown_table(d := calibration.display(report.verdicts).drop(columns=["why"]), columns=list(d.columns), max_rows=10_000))
    print(report.summary_line())
    rec = report.recommended
    if rec is not None:
        print(f"  why: {rec['why']}")
        if args.reference:
            ref = _reference(rec, args.reference)
            z = (rec["llc_mean"] - ref["llc"]) / math.hypot(rec["llc_sem"], ref.get("se") or 0.0) if rec["llc_sem"] else math.nan
            print(
                f"reference ({ref['source']}): λ = {ref['llc']:.4g} ± {ref.get('se') or 0.0:.2g}; recommended λ̂ = "
                f"{rec['llc_mean']:.4g} ± {rec['llc_sem']:.2g} ({rec['llc_mean'] / ref['llc'] - 1:+.1%}, z = {z:+.1f})"
            )
    print(f"report: {report.paths['calibration.md']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
