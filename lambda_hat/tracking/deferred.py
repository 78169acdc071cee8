"""A job's MLflow run written down in its folder and logged by the launcher (one writer per store)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lambda_hat.tracking.store import experiment_id, prepare_sqlite_store, resolve_tracking_uri, sqlite_path
from lambda_hat.tracking.values import flatten_config, numeric_metrics, series_metrics, source_tags, split_long

DEFERRED_ENV = "LAMBDA_HAT_MLFLOW_DEFERRED"  # set by a launcher whose process logs the jobs' runs
PENDING_FILE = "mlflow_pending.json"


class DeferredRun:
    """A job's MLflow run written down in its folder (mlflow_pending.json) instead of to the store;
    the launching process logs it (``log_deferred_run``) once the job ends.

    For stores that must have one writer: SQLite's locking is unreliable on network filesystems,
    so jobs on several cluster nodes must not write one mlflow.db (see the SLURM presets). Same
    interface as TrackedRun; nothing here imports mlflow.
    """

    def __init__(
        self,
        cfg: DictConfig,
        launch_dir: Path,
        run_name: str,
        start_time: float | None = None,
        record: Path | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        if record is None:
            raise ValueError("a deferred MLflow run needs the job folder's record path")
        os.environ.pop("MLFLOW_RUN_ID", None)
        self._path = record.with_name(PENDING_FILE)
        params, self.long_params = split_long(flatten_config(cfg))
        self.run_id: str | None = None
        self.error: BaseException | None = None
        self._data: dict[str, Any] = {
            "tracking_uri": resolve_tracking_uri(cfg.mlflow.tracking_uri, launch_dir),
            "experiment": str(cfg.mlflow.experiment),
            "run_name": run_name,
            "start_ms": int(1000 * (time.time() if start_time is None else start_time)),
            "params": params,
            "tags": {**source_tags(), **(tags or {})},
            "status": "RUNNING",
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        self._write()

    def _write(self) -> None:
        from lambda_hat.outputs import write_json

        write_json(self._path, self._data)

    def wait(self) -> None:
        """Nothing to wait for: no store is contacted from the job."""

    def log_results(self, metrics: dict[str, Any], files: list[Path], tags: dict[str, str], frame: Any = None) -> None:
        """Note the result tags and the files to attach (metrics and series come from metrics.json
        and trace.parquet when the run is logged)."""
        self._data.update(result_tags=dict(tags), files=[str(p) for p in files])
        self._write()

    def end(self, status: str) -> None:
        self._data.update(status=status, end_ms=int(time.time() * 1000))
        self._write()


def log_deferred_run(
    out_dir: Path,
    fallback: dict[str, Any] | None = None,
    status_if_unfinished: str = "KILLED",
    extra_tags: dict[str, str] | None = None,
) -> str | None:
    """Log a job's deferred run (its folder's mlflow_pending.json) to the store; returns the run id.

    Run from the one process that writes the store (the launcher). fallback: the same fields for a
    job that died before writing the file (tracking_uri, experiment, run_name, params, tags);
    status_if_unfinished: the run's status when the job never ended it (killed, cancelled).
    Writes mlflow_run.json (what the sweep table reads) and removes the pending file, so calling
    it twice logs once. Returns None when there is nothing to log.
    """
    from lambda_hat.outputs import write_json

    record_path, pending = out_dir / "mlflow_run.json", out_dir / PENDING_FILE
    try:
        data = json.loads(pending.read_text())
    except (OSError, ValueError):
        if record_path.exists() or fallback is None:
            return None
        data = dict(fallback)
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    uri = data["tracking_uri"]
    db = sqlite_path(uri)
    if db is not None:
        prepare_sqlite_store(db)
    client = MlflowClient(tracking_uri=uri)
    start_ms = int(data.get("start_ms") or time.time() * 1000)
    run = client.create_run(experiment_id(client, data["experiment"], uri), start_time=start_ms, run_name=data.get("run_name"))
    run_id = run.info.run_id
    status = data.get("status") or "RUNNING"
    if status == "RUNNING":
        status = status_if_unfinished
    tags = {**data.get("tags", {}), **data.get("result_tags", {}), **(extra_tags or {})}
    client.log_batch(
        run_id,
        params=[Param(k, v) for k, v in data.get("params", {}).items()],
        tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()],
    )
    now = int(time.time() * 1000)
    try:
        metrics = json.loads((out_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        metrics = {}
    batch = [Metric(k, v, now, 0) for k, v in numeric_metrics(metrics).items()]
    if (out_dir / "trace.parquet").exists():
        import pandas as pd

        batch += series_metrics(pd.read_parquet(out_dir / "trace.parquet"), now)
    for i in range(0, len(batch), 1000):  # MLflow takes 1000 metrics per batch
        client.log_batch(run_id, metrics=batch[i : i + 1000])
    for path in data.get("files", []):
        if Path(path).exists():
            client.log_artifact(run_id, path)
    end_ms = int(data.get("end_ms") or now)
    client.set_terminated(run_id, status, end_time=max(end_ms, start_ms))
    write_json(record_path, {"run_id": run_id, "tracking_uri": uri, "pid": data.get("pid"), "host": data.get("host")})
    pending.unlink(missing_ok=True)
    return run_id
