"""A job's MLflow run, logged by the job itself, and ``mlflow_run``: the context a job runs in.

The run is set up in a background thread while the target is built and the estimator compiled,
and that thread is joined before the estimator's timed phases (``TrackedRun.wait``), so tracking
never shares the cores with what ``metrics.json`` reports as the estimator's time.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lambda_hat.tracking.deferred import DEFERRED_ENV, DeferredRun
from lambda_hat.tracking.store import TrackingError, experiment_id, prepare_sqlite_store, resolve_tracking_uri, sqlite_path
from lambda_hat.tracking.values import flatten_config, numeric_metrics, series_metrics, source_tags, split_long


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
