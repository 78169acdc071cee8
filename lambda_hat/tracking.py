"""MLflow logging (mlflow is imported lazily, off the job's critical path: it takes seconds)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

MAX_PARAM_CHARS = 6000  # MLflow rejects longer param values


def resolve_tracking_uri(configured: str | None, launch_dir: Path) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else MLflow 3's own default <launch dir>/mlflow.db."""
    if configured:
        return configured
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(launch_dir / 'mlflow.db').resolve()}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// tracking URI (None for other stores)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def artifact_root(db: Path) -> str:
    """Artifacts live beside the SQLite file (MLflow would use ./mlruns of whatever cwd a job has)."""
    return (db.parent / "mlruns").resolve().as_uri()


def prepare_sqlite_store(db: Path) -> None:
    """Create a fresh SQLite store once, atomically, however many jobs start at the same time.

    MLflow creates and migrates the tables on first use, and concurrent first uses of one file
    fail ("duplicate column name: step", alembic "expected to match one row"; mlflow#19943,
    hydraflow#245: 0-1 of 6 simultaneous jobs got a run here). A job killed mid-way would also
    leave a half-migrated store for all later jobs. So the first job builds the store in a
    temporary file under a file lock and renames it into place; the others find it ready.
    """
    if db.exists():
        return
    from filelock import FileLock

    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db.with_name(db.name + ".lock"))):
        if db.exists():
            return
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
        try:
            store = SqlAlchemyStore(f"sqlite:///{tmp}", artifact_root(db))
            store.engine.dispose()
            os.replace(tmp, db)
        finally:
            tmp.unlink(missing_ok=True)


def flatten_config(cfg: DictConfig) -> dict[str, str]:
    """Dotted keys -> string values of the resolved config (lists kept as their YAML-ish repr)."""
    flat: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat[prefix[:-1]] = str(node)[:MAX_PARAM_CHARS]

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Scalar numbers of metrics.json, with per-chain lists spread into llc_chain_<i>."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, (int, float)):
            out[k] = float(v)
    for i, v in enumerate(metrics.get("llc_per_chain") or []):
        if v is not None:
            out[f"llc_chain_{i}"] = float(v)
    return out


class TrackedRun:
    """One job's MLflow run, created in a background thread while the job computes.

    Importing mlflow and opening its SQLite store takes seconds (about as long as the default
    estimate's sampling), so it overlaps with the target build and sampling instead of preceding
    them. Uses MlflowClient with an explicit run id: MLflow's fluent "active run" is per thread.
    """

    def __init__(self, cfg: DictConfig, launch_dir: Path, run_name: str) -> None:
        # An inherited run id would make every parallel job write into one run.
        os.environ.pop("MLFLOW_RUN_ID", None)
        self._uri = resolve_tracking_uri(cfg.mlflow.tracking_uri, launch_dir)
        self._experiment = str(cfg.mlflow.experiment)
        self._params = flatten_config(cfg)
        self._run_name = run_name
        self._error: BaseException | None = None
        self.client: Any = None
        self.run_id: str | None = None
        self._thread = threading.Thread(target=self._start, name="mlflow-start", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            from mlflow import MlflowClient
            from mlflow.entities import Param

            db = sqlite_path(self._uri)
            if db is not None:
                prepare_sqlite_store(db)
            client = MlflowClient(tracking_uri=self._uri)
            run = client.create_run(self._experiment_id(client), run_name=self._run_name)
            self.client, self.run_id = client, run.info.run_id
            client.log_batch(self.run_id, params=[Param(k, v) for k, v in self._params.items()])
        except BaseException as e:  # re-raised in the job's thread by _ready()
            self._error = e

    def _experiment_id(self, client: Any) -> str:
        experiment = client.get_experiment_by_name(self._experiment)
        if experiment is not None:
            return experiment.experiment_id
        db = sqlite_path(self._uri)
        artifact_location = None if db is None else artifact_root(db)
        try:
            return client.create_experiment(self._experiment, artifact_location=artifact_location)
        except Exception:  # created concurrently by another job
            experiment = client.get_experiment_by_name(self._experiment)
            if experiment is None:
                raise
            return experiment.experiment_id

    def _ready(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error

    def log_results(self, metrics: dict[str, Any], files: list[Path], tags: dict[str, str]) -> None:
        """Tags, numeric metrics and output files of the finished job."""
        from mlflow.entities import Metric, RunTag

        self._ready()
        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(k, v, now, 0) for k, v in numeric_metrics(metrics).items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        for path in files:
            self.client.log_artifact(self.run_id, str(path))

    def end(self, status: str) -> None:
        """FINISHED (a tracking error surfaces here), FAILED or KILLED (the job's own error matters more)."""
        self._thread.join()
        if status == "FINISHED" and self._error is not None:
            raise self._error
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status)


@contextmanager
def mlflow_run(cfg: DictConfig, launch_dir: Path, run_name: str) -> Iterator[TrackedRun | None]:
    """An MLflow run for this job; it ends FINISHED, FAILED if the body raises, KILLED on a signal.

    Yields the TrackedRun (None when tracking is disabled).
    """
    if not cfg.mlflow.enabled:
        yield None
        return
    tracked = TrackedRun(cfg, launch_dir, run_name)
    try:
        yield tracked
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM turned into SystemExit by the app
        tracked.end("KILLED")
        raise
    except BaseException:
        tracked.end("FAILED")
        raise
    tracked.end("FINISHED")


def log_results(tracked: TrackedRun | None, metrics: dict[str, Any], files: list[Path], tags: dict[str, str]) -> None:
    if tracked is not None:
        tracked.log_results(metrics, files, tags)
