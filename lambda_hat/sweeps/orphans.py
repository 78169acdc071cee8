"""Orphan MLflow runs: the runs of jobs killed before they could end them (SIGKILL, scancel, a
time limit) stay RUNNING in the store; ``finalize_orphan_runs`` ends them as KILLED."""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import pandas as pd

from lambda_hat.sweeps.aggregate import read_json
from lambda_hat.sweeps.frame import isnull, typed
from lambda_hat.tracking.store import sqlite_missing

log = logging.getLogger(__name__)

# Statuses of jobs that ended without finishing their MLflow run (SIGKILL, scancel, time limit).
ENDED_BY_SIGNAL = ("killed", "cancelled", "timeout")


def _last_change(folder: Path) -> float:
    """The newest modification time of the job's files (about when a killed job died)."""
    times = [folder.stat().st_mtime]
    for sub in (folder, folder / ".hydra"):
        try:
            times += [e.stat().st_mtime for e in os.scandir(sub) if e.is_file()]
        except OSError:
            pass
    return max(times)


def _job_alive(record: dict[str, Any]) -> bool:
    """Whether the process that wrote mlflow_run.json still runs (only known when the record names
    its pid and host, and the host is this one). This process itself does not count: a callback
    at the end of a sweep runs in the process that ran the basic launcher's jobs."""
    pid, host = record.get("pid"), record.get("host")
    if not isinstance(pid, int) or host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


def finalize_orphan_runs(df: pd.DataFrame, *, min_idle_s: float = 0.0) -> pd.DataFrame:
    """End the MLflow runs of killed jobs that their store still shows RUNNING.

    For each row with status killed (or cancelled, timeout) whose folder holds mlflow_run.json: if
    the run is RUNNING (and the job's process is not known to be alive, and nothing in its folder
    changed in the last min_idle_s seconds, a guard for tables built while a sweep still runs),
    tag it with the row's status and set it KILLED, its end time the folder's last change. Returns a copy of df with
    mlflow_run_id and mlflow_status (the run's status afterwards) filled in for those rows.
    Errors are logged, never raised. mlflow is imported only if there is such a run.
    """
    df = df.copy()
    for col in ("mlflow_run_id", "mlflow_tracking_uri", "mlflow_status"):
        df[col] = pd.Series(list(df[col]) if col in df else [None] * len(df), index=df.index, dtype=object)
    if not len(df) or "output_dir" not in df or "status" not in df:
        return df
    clients: dict[str, Any] = {}
    now = time.time()
    for idx in df.index[df["status"].isin(ENDED_BY_SIGNAL)]:
        out_dir = df.at[idx, "output_dir"]
        if isnull(out_dir):
            continue
        folder = Path(out_dir)
        record = read_json(folder / "mlflow_run.json")
        if not record or not record.get("run_id") or not record.get("tracking_uri"):
            continue
        run_id, uri = str(record["run_id"]), str(record["tracking_uri"])
        df.at[idx, "mlflow_run_id"], df.at[idx, "mlflow_tracking_uri"] = run_id, uri
        try:
            if sqlite_missing(uri):
                log.warning("run %s of %s: its store %s is gone", run_id, folder, uri)
                continue
            if uri not in clients:
                from mlflow import MlflowClient

                clients[uri] = MlflowClient(tracking_uri=uri)
            client = clients[uri]
            run = client.get_run(run_id)
            status = run.info.status
            last = _last_change(folder)
            if status == "RUNNING" and not _job_alive(record) and now - last >= min_idle_s:
                end_ms = max(int(1000 * last), int(run.info.start_time or 0))
                client.set_tag(run_id, "status", str(df.at[idx, "status"]))
                client.set_terminated(run_id, "KILLED", end_time=end_ms)
                status = client.get_run(run_id).info.status
                log.info("MLflow run %s of killed job %s: RUNNING -> %s", run_id, folder, status)
            df.at[idx, "mlflow_status"] = status
        except Exception as e:
            log.warning("could not finalize MLflow run %s of %s: %s", run_id, folder, " ".join(str(e).split())[:300])
    for col in ("mlflow_run_id", "mlflow_tracking_uri", "mlflow_status"):
        df[col] = typed(col, list(df[col]), df.index)
    return df
