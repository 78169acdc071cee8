"""Build a report (figures, report.md, a self-contained index.html) from sweeps or an MLflow experiment.

    python -m lambda_hat.report DIR [DIR ...] [--out report/]
    python -m lambda_hat.report --mlflow-experiment NAME [--tracking-uri URI] [--out report/]

DIR is a sweep folder (its llc_runs.parquet is read; without one, the table is rebuilt from the job
folders) or a folder of sweeps; several DIRs are one report (e.g. one sweep per budget level).
Running-λ̂ curves come from each run's trace.parquet (its folder, else its MLflow artifacts).
Exit status 2 (one line) when there is nothing to report.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

PROG = "lambda_hat.report"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="*", metavar="DIR", type=Path, help="sweep folder(s) or a folder of sweeps")
    p.add_argument("--out", type=Path, default=Path("report"), help="folder to write (default ./report)")
    p.add_argument("--mlflow-experiment", metavar="NAME", help="build the report from this MLflow experiment instead")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    p.add_argument("--target", metavar="LABEL", help='target of the running-λ̂ figure, e.g. "DLN [5,8,6,4] r3" (default: the one most estimators ran on)')
    p.add_argument("--level", type=float, default=0.9, help="bootstrap interval level (default 0.9)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def fail(message: str) -> int:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2

    if bool(args.mlflow_experiment) == bool(args.dirs):
        return fail("give sweep folder(s) DIR or --mlflow-experiment NAME (one of them)")
    if args.tracking_uri and not args.mlflow_experiment:
        return fail("--tracking-uri goes with --mlflow-experiment")
    if not 0 < args.level < 1:
        return fail(f"--level={args.level}: must be in (0, 1)")
    logging.basicConfig(level=logging.INFO, format=f"{PROG}: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)

    from lambda_hat.report import build, runs

    try:
        if args.mlflow_experiment:
            table = runs.load_mlflow(args.mlflow_experiment, args.tracking_uri)
            source = f"MLflow experiment {args.mlflow_experiment}"
        else:
            table = runs.load_dirs(args.dirs)
            source = ", ".join(str(d) for d in args.dirs)
        written = build.build(table, args.out, source=source, sweep_dirs=args.dirs, target=args.target, level=args.level, seed=args.seed)
    except (runs.ReportInputError, ValueError) as e:
        return fail(str(e))
    for name, path in written.items():
        print(f"{name}: {path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
