"""MLflow logging (mlflow is imported lazily, off the job's critical path: it takes seconds).

The run is set up in a background thread while the target is built and the estimator compiled,
and that thread is joined before the estimator's timed phases (``TrackedRun.wait``), so tracking
never shares the cores with what ``metrics.json`` reports as the estimator's time.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

MAX_PARAM_CHARS = 6000  # MLflow rejects longer param values
# URI schemes MLflow 3 has a tracking store for (postgresql+psycopg2:// etc. count by their prefix).
MLFLOW_SCHEMES = frozenset({"sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc"})


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


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message is one line naming mlflow.tracking_uri."""


def check_store(uri: str) -> None:
    """Fail fast, before any computation, on a store that cannot work (one line, naming the URI).

    SQLite: its folder must exist or be creatable, and be writable. HTTP(S) servers: the port must
    accept a connection. Other schemes are left to MLflow.
    """
    where = f"mlflow.tracking_uri={uri}"
    db = sqlite_path(uri)
    if db is not None:
        folder = db.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrackingError(f"{where}: cannot create {folder} ({e.strerror}); point it elsewhere or set mlflow.enabled=false") from None
        if not os.access(folder, os.W_OK | os.X_OK) or (db.exists() and not os.access(db, os.R_OK | os.W_OK)):
            raise TrackingError(f"{where}: {db} is not writable; point it elsewhere or set mlflow.enabled=false")
        return
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else None
    if scheme is not None and scheme not in MLFLOW_SCHEMES:
        raise TrackingError(
            f"{where}: MLflow has no store for {scheme}://; use sqlite:///<path>/mlflow.db, http(s)://<host>:<port>, "
            "file:///<folder> or a database URL (postgresql://, mysql://, mssql://)"
        )
    if uri.startswith(("http://", "https://")):
        from urllib.parse import urlparse

        u = urlparse(uri)
        port = u.port or (443 if u.scheme == "https" else 80)
        try:
            socket.create_connection((u.hostname or "localhost", port), timeout=3).close()
        except OSError as e:
            raise TrackingError(f"{where}: no tracking server answers at {u.hostname}:{port} ({e}); start one or set mlflow.enabled=false") from None


@functools.cache  # a subprocess: once per process, not once per sweep job
def _git_commit() -> str | None:
    """The commit of the lambda_hat checkout that runs, if it is one (for the run's source tags)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def source_tags() -> dict[str, str]:
    """MLflow's source tags (the UI's Source and Git commit) and the full command line.

    The UI shows a LOCAL source as the last path segment of its name, so the name is the entry
    point alone (a command line holding "hydra.sweep.dir=a/b" showed as "b"); the command line is
    the tag lambda_hat.command."""
    tags = {
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": "python -m lambda_hat",
        "lambda_hat.command": " ".join(["python -m lambda_hat", *sys.argv[1:]])[:5000],
    }
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def flatten_config(cfg: DictConfig) -> dict[str, str]:
    """Dotted keys -> string values of the resolved config (lists kept as their YAML-ish repr)."""
    flat: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat[prefix[:-1]] = str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def split_long(values: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(values MLflow takes as params, values too long for it): long ones go, intact, to an artifact."""
    short = {k: v for k, v in values.items() if len(v) <= MAX_PARAM_CHARS}
    return short, {k: v for k, v in values.items() if len(v) > MAX_PARAM_CHARS}


SERIES_POINTS = 200  # per chain and series: enough for the UI's charts, cheap for SQLite


def series_metrics(frame: Any, now_ms: int) -> list[Any]:
    """Running λ̂ (after burn-in) and the λ̂ draw trace per chain as MLflow metric steps (the
    sampler's step number), thinned to SERIES_POINTS each, so the UI overlays chains and runs."""
    from mlflow.entities import Metric

    out = []
    for chain, rows in frame.groupby("chain"):
        every = max(1, len(rows) // SERIES_POINTS)
        kept = rows[~rows["burnin"]]
        running = kept["llc"].expanding().mean()
        for step, value in zip(kept["step"].to_numpy()[::every], running.to_numpy()[::every]):
            if value == value:  # not NaN
                out.append(Metric(f"running_llc/chain_{chain}", float(value), now_ms, int(step)))
        for step, value in zip(rows["step"].to_numpy()[::every], rows["llc"].to_numpy()[::every]):
            if value == value:
                out.append(Metric(f"llc_draw/chain_{chain}", float(value), now_ms, int(step)))
    return out


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


def experiment_id(client: Any, name: str, uri: str) -> str:
    """The id of experiment `name`, created (artifacts beside a SQLite store) if it does not exist."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    db = sqlite_path(uri)
    artifact_location = None if db is None else artifact_root(db)
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # created concurrently by another job
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


class TrackedRun:
    """One job's MLflow run, created in a background thread while the job computes.

    Importing mlflow and opening its SQLite store takes seconds (about as long as the default
    estimate's sampling), so it overlaps with the target build and sampling instead of preceding
    them. Uses MlflowClient with an explicit run id: MLflow's fluent "active run" is per thread.
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
        # An inherited run id would make every parallel job write into one run.
        os.environ.pop("MLFLOW_RUN_ID", None)
        self._start_ms = int(1000 * (time.time() if start_time is None else start_time))
        self._uri = resolve_tracking_uri(cfg.mlflow.tracking_uri, launch_dir)
        self._experiment = str(cfg.mlflow.experiment)
        self._params, self.long_params = split_long(flatten_config(cfg))
        self._tags = dict(tags or {})
        self._run_name = run_name
        self._record = record  # where to note the run id (the sweep table ends runs a kill left RUNNING)
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
            # The job's real start (the run is created a moment later, in this thread). Tags with
            # the run: a job killed right after still shows under its sweep's parent run.
            tags = {k: v[:5000] for k, v in {**source_tags(), **self._tags}.items()}
            run = client.create_run(self._experiment_id(client), start_time=self._start_ms, run_name=self._run_name, tags=tags)
            self.client, self.run_id = client, run.info.run_id
            if self._record is not None:
                from lambda_hat.files import write_json

                write_json(
                    self._record,
                    {"run_id": self.run_id, "tracking_uri": self._uri, "pid": os.getpid(), "host": socket.gethostname()},
                )
            client.log_batch(self.run_id, params=[Param(k, v) for k, v in self._params.items()])
        except BaseException as e:  # re-raised in the job's thread by _ready()
            self._error = e

    def _experiment_id(self, client: Any) -> str:
        return experiment_id(client, self._experiment, self._uri)

    def wait(self) -> None:
        """Block until the run is set up (call before the estimator's timed phases)."""
        self._thread.join()

    @property
    def error(self) -> BaseException | None:
        return self._error

    def _ready(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise TrackingError(f"mlflow.tracking_uri={self._uri}: {_one_line(self._error)}") from self._error

    def log_results(self, metrics: dict[str, Any], files: list[Path], tags: dict[str, str], frame: Any = None) -> None:
        """Tags, numeric metrics (and the λ̂ series of the trace frame) and output files of the job."""
        from mlflow.entities import Metric, RunTag

        self._ready()
        now = int(time.time() * 1000)
        try:
            scalars = [Metric(k, v, now, 0) for k, v in numeric_metrics(metrics).items()]
            series = series_metrics(frame, now) if frame is not None else []
            batch = scalars + series
            for i in range(0, max(len(batch), 1), 1000):  # MLflow takes 1000 metrics per batch
                self.client.log_batch(self.run_id, metrics=batch[i : i + 1000], tags=[RunTag(k, v) for k, v in tags.items()] if i == 0 else [])
            for path in files:
                self.client.log_artifact(self.run_id, str(path))
        except Exception as e:
            raise TrackingError(f"mlflow.tracking_uri={self._uri}: {_one_line(e)}") from e

    def end(self, status: str) -> None:
        """FINISHED (a tracking error surfaces here), FAILED or KILLED (the job's own error matters more)."""
        self._thread.join()
        if status == "FINISHED" and self._error is not None:
            raise TrackingError(f"mlflow.tracking_uri={self._uri}: {_one_line(self._error)}") from self._error
        if self.run_id is not None:
            try:
                self.client.set_terminated(self.run_id, status, end_time=int(time.time() * 1000))
            except Exception as e:
                if status == "FINISHED":
                    raise TrackingError(f"mlflow.tracking_uri={self._uri}: {_one_line(e)}") from e
                # FAILED/KILLED: the job's own error is the one to report


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


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:300]


@contextmanager
def mlflow_run(
    cfg: DictConfig,
    launch_dir: Path,
    run_name: str,
    start_time: float | None = None,
    record: Path | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[TrackedRun | None]:
    """An MLflow run for this job; it ends FINISHED, FAILED if the body raises, KILLED on a signal.

    Yields the TrackedRun (None when tracking is disabled).
    """
    if not cfg.mlflow.enabled:
        yield None
        return
    from lambda_hat import signals

    deferred = os.environ.get(DEFERRED_ENV) == "1" and record is not None
    tracked: Any = (DeferredRun if deferred else TrackedRun)(cfg, launch_dir, run_name, start_time, record, tags)
    # If a signal cannot be handled in time (a long native call), the watchdog ends the run.
    unregister = signals.on_forced_exit(lambda: tracked.end("KILLED"))
    try:
        yield tracked
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM turned into SystemExit by the app
        unregister()
        tracked.end("KILLED")
        raise
    except BaseException:
        unregister()
        tracked.end("FAILED")
        raise
    unregister()
    tracked.end("FINISHED")


def log_results(tracked: TrackedRun | None, metrics: dict[str, Any], files: list[Path], tags: dict[str, str], frame: Any = None) -> None:
    if tracked is not None:
        tracked.log_results(metrics, files, tags, frame)
