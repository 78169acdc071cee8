"""Hydra callback: at the end of a multirun, the sweep's table (llc_runs.parquet in the sweep folder).

Register it in conf/config.yaml::

    hydra:
      callbacks:
        aggregate:
          _target_: lambda_hat.sweeps.callbacks.AggregateCallback

Hydra instantiates callbacks for single runs too, so this module imports only Hydra's base class;
pandas (and mlflow, for orphan runs) are imported when a sweep ends.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("lambda_hat")


class AggregateCallback(Callback):
    """on_multirun_end: collect hydra.sweep.dir into <sweep dir>/<filename>, end the MLflow runs of
    killed jobs left RUNNING, and log one line saying where the table is. Never raises."""

    def __init__(self, filename: str = "llc_runs.parquet", finalize_mlflow: bool = True) -> None:
        self.filename = filename
        self.finalize_mlflow = finalize_mlflow

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """The sweep's MLflow parent run; its jobs become its children (lambda_hat.sweeps.parent)."""
        try:
            from lambda_hat.sweeps import parent

            launch_dir = Path(str(config.hydra.runtime.cwd))
            parent.start(config, Path(str(config.hydra.sweep.dir)).resolve(), launch_dir)
        except Exception as e:  # the jobs still log their own runs
            log.warning("no MLflow parent run for this sweep (%s: %s)", type(e).__name__, " ".join(str(e).split())[:300])

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            from lambda_hat.sweeps import aggregate, orphans

            sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
            df = aggregate.collect_rows(sweep_dir)
            if not len(df):
                log.warning("sweep table: no job folders under %s", sweep_dir)
                return
            if self.finalize_mlflow:
                df = orphans.finalize_orphan_runs(df)
            path = aggregate.write_table(sweep_dir, df, self.filename)
        except Exception as e:  # the jobs' own files are on disk; `python -m lambda_hat.aggregate` rebuilds it
            log.warning(
                "sweep table not written (%s: %s); rebuild it with: python -m lambda_hat.aggregate %s",
                type(e).__name__,
                " ".join(str(e).split())[:300],
                _sweep_dir_text(config),
            )
            return
        from lambda_hat.sweeps import outcome

        # the counts let the launching process exit non-zero when jobs failed, whatever the launcher
        summary = outcome.current().table = {**aggregate.summarize(df), "path": str(path)}
        log.info("sweep table: %s", aggregate.summary_line(df, path))
        # Each addition on its own: one that fails (a figure, say) is said in one line, and neither
        # the others nor the parent run's end depend on it.
        _also("λ̂ over training figure", lambda: _curve(sweep_dir, df))
        _also("calibration report", lambda: _calibration(sweep_dir, df, summary))
        _also("MLflow parent run's end", lambda: _finish_parent(sweep_dir, path, summary))


def _also(what: str, step: Any) -> None:
    try:
        step()
    except Exception as e:
        log.warning("sweep table written, but the %s failed (%s: %s)", what, type(e).__name__, " ".join(str(e).split())[:300])


def _curve(sweep_dir: Path, df: Any) -> None:
    from lambda_hat.sweeps import checkpoints

    figure = checkpoints.write_figure(sweep_dir, df)
    if figure is not None:
        log.info("λ̂ over training: %s", figure)


def _calibration(sweep_dir: Path, df: Any, summary: dict[str, Any]) -> None:
    """The calibration report of a step-size grid; its diverged steps are verdicts of the grid
    (it tries too-large steps on purpose), so they do not make the command fail."""
    from lambda_hat.sweeps import calibration

    report = calibration.write_report(sweep_dir, df)
    if report is None:
        return
    log.info("%s -> %s", report.summary_line(), report.paths["calibration.md"])
    if "chains_ok" in df:
        summary["diverged_verdicts"] = int(((df["status"] == "failed") & (df["chains_ok"] == 0)).sum())


def _finish_parent(sweep_dir: Path, path: Path, summary: dict[str, Any]) -> None:
    from lambda_hat.sweeps import parent

    parent.finish(sweep_dir, path, summary)


def _sweep_dir_text(config: DictConfig) -> str:
    try:
        return str(config.hydra.sweep.dir)
    except Exception:
        return "<sweep dir>"
