"""The sweep table from an MLflow experiment's runs (``python -m lambda_hat.aggregate --mlflow-experiment``).

Same columns and types as the table of job folders (lambda_hat.sweeps.aggregate), built from what
lambda_hat.tracking logged: params back to typed ``cfg.*`` values, metrics, the result tags.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pandas as pd

from lambda_hat.sweeps.frame import RESERVED, to_frame, to_json
from lambda_hat.tracking.store import resolve_tracking_uri, sqlite_missing


def _parse_param(text: str) -> Any:
    """A param string (lambda_hat.tracking.flatten_config: str(value)) back to a table value."""
    if text == "None":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    if isinstance(value, (list, tuple, dict)):
        return to_json(list(value) if isinstance(value, tuple) else value)
    return value if isinstance(value, (int, float)) else text


_RUN_STATUS = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed", "RUNNING": "running", "SCHEDULED": "running"}


def _mlflow_row(run: Any, uri: str) -> dict[str, Any]:
    info, data = run.info, run.data
    tags, params = data.tags, data.params
    metrics = dict(data.metrics)
    chains = {int(k.rsplit("_", 1)[1]): metrics.pop(k) for k in list(metrics) if k.startswith("llc_chain_") and k[10:].isdigit()}
    row: dict[str, Any] = {
        "job_num": None,
        "status": tags.get("status") or _RUN_STATUS.get(info.status, str(info.status).lower()),
        "error": None,
        "overrides": None,
        "sampler": tags.get("sampler") or params.get("sampler.name"),
        "model": tags.get("model") or params.get("model.name"),
        "target_id": tags.get("target_id"),
        "health": tags.get("health"),
    }
    for key, value in metrics.items():
        row[f"metrics.{key}" if key in RESERVED else key] = value
    if chains:
        size = max(int(metrics.get("num_chains") or 0), max(chains) + 1)
        row["llc_per_chain"] = to_json([chains.get(i) for i in range(size)])
    row.update({f"cfg.{k}": _parse_param(v) for k, v in params.items()})
    row.update(
        {
            "run_name": info.run_name,
            "start_time": pd.Timestamp(info.start_time, unit="ms", tz="UTC") if info.start_time else None,
            "end_time": pd.Timestamp(info.end_time, unit="ms", tz="UTC") if info.end_time else None,
            "mlflow_run_id": info.run_id,
            "mlflow_tracking_uri": uri,
            "mlflow_status": info.status,
        }
    )
    return row


def from_mlflow(experiment: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """The same kind of table from an MLflow experiment's runs (oldest first): params -> cfg.*,
    metrics under their names (llc_chain_<i> folded back into llc_per_chain), tags status /
    sampler / model / target_id / health, run id, status, name, start and end time (UTC).
    tracking_uri: as the app resolves it (None: $MLFLOW_TRACKING_URI, else ./mlflow.db).
    Raises ValueError when the store or the experiment does not exist (a missing SQLite file is
    not created)."""
    uri = resolve_tracking_uri(tracking_uri, Path.cwd())
    if sqlite_missing(uri):
        raise ValueError(f"{uri}: no such MLflow store")
    from mlflow import MlflowClient

    # MlflowClient's pages, not mlflow.search_runs: that takes no tracking URI (it reads MLflow's
    # process-wide one), and switching the process's URI for a call, in a process that may be
    # tracking a job to another store, needs MLflow's private _use_tracking_uri and is not
    # thread-safe. Checked equal (1,106 runs, exact frame equality) before choosing this.
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"{uri}: no experiment named {experiment!r}")
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token, order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            break
    return to_frame([_mlflow_row(run, uri) for run in runs])
