"""The MLflow parent run of a sweep: created by the launching process, found by every job.

The launching process writes ``<sweep dir>/mlflow_parent.json`` (run id, tracking URI); a job,
wherever it runs (in-process, a local subprocess, a SLURM node sharing the filesystem), reads it
and tags its own run with ``mlflow.parentRunId``. A file in the sweep folder survives every
launcher, unlike an environment variable or a process-local value.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("lambda_hat")

PARENT_FILE = "mlflow_parent.json"


def start(cfg: Any, sweep_dir: Path, launch_dir: Path) -> str | None:
    """Create the sweep's parent run (if tracking is on) and record it; returns its id."""
    if not cfg.mlflow.enabled:
        return None
    from lambda_hat.tracking import store, values
    from lambda_hat.files import write_json

    uri = store.resolve_tracking_uri(cfg.mlflow.tracking_uri, launch_dir)
    db = store.sqlite_path(uri)
    if db is not None:
        store.prepare_sqlite_store(db)
    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    client = MlflowClient(tracking_uri=uri)
    experiment_id = store.experiment_id(client, str(cfg.mlflow.experiment), uri)
    run = client.create_run(experiment_id, run_name=f"sweep {sweep_dir.name}", start_time=int(time.time() * 1000))
    tags = {
        **values.source_tags(),
        "lambda_hat.sweep_dir": str(sweep_dir),
        "lambda_hat.kind": "sweep",
    }
    client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_json(sweep_dir / PARENT_FILE, {"run_id": run.info.run_id, "tracking_uri": uri, "pid": os.getpid()})
    log.info("MLflow parent run %s (experiment %s)", run.info.run_id, cfg.mlflow.experiment)
    return run.info.run_id


def find(sweep_dir: Path | None) -> str | None:
    """The parent run id a job of this sweep should attach to, if the sweep has one."""
    if sweep_dir is None:
        return None
    try:
        return json.loads((Path(sweep_dir) / PARENT_FILE).read_text())["run_id"]
    except (OSError, ValueError, KeyError):
        return None


def finish(sweep_dir: Path, table: Path | None, summary: dict[str, Any] | None) -> None:
    """Attach the sweep table to the parent run, log its counts and end it (FINISHED)."""
    try:
        record = json.loads((sweep_dir / PARENT_FILE).read_text())
    except (OSError, ValueError):
        return
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=record["tracking_uri"])
    run_id = record["run_id"]
    now = int(time.time() * 1000)
    if summary:
        counts = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        client.log_batch(run_id, metrics=[Metric(f"jobs_{k}", v, now, 0) for k, v in counts.items()])
    if table is not None and table.exists():
        client.log_artifact(run_id, str(table))
        _log_curve(client, run_id, table, now)
    client.set_terminated(run_id, "FINISHED", end_time=now)


def _log_curve(client: Any, run_id: str, table: Path, now: int) -> None:
    """A sweep over checkpoints (lambda_hat.sweeps.checkpoints): λ̂, its se and the losses as metric
    histories by training step (MLflow charts ``llc`` against the step), and the figure."""
    import pandas as pd
    from mlflow.entities import Metric

    from lambda_hat.sweeps.checkpoints import FIGURE, curve

    rows = curve(pd.read_parquet(table))
    if rows is None:
        return
    metrics = []
    for _, row in rows.iterrows():
        for name, column in (("llc", "llc_mean"), ("llc_sem", "llc_sem"), ("train_loss", "train_loss"), ("test_loss", "test_loss")):
            value = row.get(column)
            if value is not None and pd.notna(value):
                metrics.append(Metric(name, float(value), now, int(row["training_step"])))
    if metrics:
        client.log_batch(run_id, metrics=metrics)
    figure = table.parent / FIGURE
    if figure.exists():  # written by the sweep's callback beside the table
        client.log_artifact(run_id, str(figure))
