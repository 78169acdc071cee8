"""Build a sweep's table (one row per job, parquet) from its folders or from an MLflow experiment.

    python -m lambda_hat.aggregate DIR [DIR ...] [--out FILE] [--compare]
    python -m lambda_hat.aggregate --mlflow-experiment NAME [--tracking-uri URI] --out FILE
    python -m lambda_hat.aggregate --accuracy DIR_OR_PARQUET [...]

DIR is a sweep folder (multirun/<date>/<time>), a folder of sweeps, or outputs/ with single runs:
every folder under it holding .hydra/config.yaml is a job. With one DIR the table goes to
DIR/llc_runs.parquet unless --out says otherwise. The MLflow runs of killed jobs that their store
still shows RUNNING are set to KILLED (skip with --no-finalize; jobs whose folder changed in the
last --min-idle seconds are left alone, in case they still run). Prints one summary line and a
markdown table of the main columns (with --compare: a sampler comparison per target instead, see
lambda_hat.sweeps.compare). Exit status 2 (one line) when there is nothing to aggregate. --accuracy prints the accuracy
table against the known λ instead (lambda_hat.sweeps.accuracy: median |λ̂/λ − 1| ... per size
class, full-rank and reduced-rank nets apart); given a .parquet table it reads that table as is.
See lambda_hat.sweeps.aggregate for the columns.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any
from pathlib import Path

PROG = "lambda_hat.aggregate"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m {PROG}",
        description=__doc__.split("\n\n")[0],
        epilog="Columns: see the docstring of lambda_hat.sweeps.aggregate.",
    )
    p.add_argument("dirs", nargs="*", metavar="DIR", help="sweep folder(s), a folder of sweeps, or outputs/")
    p.add_argument("--out", type=Path, help="parquet file to write (default: DIR/llc_runs.parquet for one DIR)")
    p.add_argument("--mlflow-experiment", metavar="NAME", help="build the table from this MLflow experiment instead")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    p.add_argument("--no-finalize", action="store_true", help="leave MLflow runs of killed jobs as they are")
    p.add_argument("--min-idle", type=float, default=300.0, metavar="S", help="finalize only jobs whose folder has not changed for S seconds (default 300)")
    p.add_argument("--max-rows", type=int, default=50, metavar="N", help="rows of the printed table (default 50)")
    p.add_argument("--accuracy", action="store_true", help="print the accuracy table against the known λ (DIR may also be a llc_runs.parquet)")
    p.add_argument("--by", metavar="COLUMN", help="with --accuracy: also one row per value of this table column (e.g. cfg.model.generator_seed)")
    p.add_argument("--compare", action="store_true", help="print a sampler comparison per target (λ̂ ± se, rel. error, max |z|, ESS, R-hat, health)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def fail(message: str) -> int:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2

    if args.mlflow_experiment and args.dirs:
        return fail("give either DIR(s) or --mlflow-experiment, not both")
    if not args.mlflow_experiment and not args.dirs:
        return fail("give a sweep folder DIR (or --mlflow-experiment NAME --out FILE)")
    if args.tracking_uri and not args.mlflow_experiment:
        return fail("--tracking-uri goes with --mlflow-experiment")
    if args.by and not args.accuracy:
        return fail("--by goes with --accuracy")
    if args.out is None and not args.accuracy and (args.mlflow_experiment or len(args.dirs) > 1):
        return fail("--out FILE is needed with " + ("--mlflow-experiment" if args.mlflow_experiment else "several DIRs"))
    logging.basicConfig(level=logging.INFO, format=f"{PROG}: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)

    from lambda_hat.sweeps import aggregate, mlflow_table, orphans

    if args.accuracy and args.dirs and all(d.endswith(".parquet") for d in args.dirs):
        import pandas as pd

        missing = [d for d in args.dirs if not Path(d).is_file()]
        if missing:
            return fail(f"{missing[0]}: no such file")
        return _print_accuracy(pd.concat([pd.read_parquet(d) for d in args.dirs], ignore_index=True), args.by, fail)
    if args.mlflow_experiment:
        try:
            df = mlflow_table.from_mlflow(args.mlflow_experiment, args.tracking_uri)
        except ValueError as e:
            return fail(str(e))
        if not len(df):
            return fail(f"experiment {args.mlflow_experiment!r} has no runs")
    else:
        dirs = [Path(d) for d in args.dirs]
        for d in dirs:
            if not d.is_dir():
                return fail(f"{d}: no such folder")
        df = aggregate.collect_rows(*dirs)
        if not len(df):
            return fail(f"{' '.join(map(str, dirs))}: no job folders (.hydra/config.yaml) under it")
        if not args.no_finalize:
            df = orphans.finalize_orphan_runs(df, min_idle_s=args.min_idle)
    if args.out is None and len(args.dirs) != 1:  # --accuracy over several folders: print only
        print(aggregate.summary_line(df))
    else:
        out = (args.out if args.out is not None else Path(args.dirs[0]) / aggregate.TABLE_NAME).resolve()
        print(aggregate.summary_line(df, aggregate.write_table(out.parent, df, out.name)))
    if args.accuracy:
        return _print_accuracy(df, args.by, fail)
    if args.compare:
        print(_compare(df))
    else:
        print(aggregate.markdown_table(df, max_rows=args.max_rows))
    return 0


def _print_accuracy(df: Any, by: str | None, fail: Callable[[str], int]) -> int:
    """Print the accuracy table (``--by``: a row per value of that column); 2 if no such column."""
    from lambda_hat.sweeps.accuracy import accuracy_table

    try:
        print(accuracy_table(df, by))
    except ValueError as e:
        return fail(str(e))
    return 0


def _compare(df) -> str:
    from lambda_hat.sweeps.compare import compare_table

    return compare_table(df)


if __name__ == "__main__":
    sys.exit(main())
