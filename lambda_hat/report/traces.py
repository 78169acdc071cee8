"""Running λ̂ against work, from a run's trace.parquet (its job folder, or its MLflow artifacts)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

TRACE_FILE = "trace.parquet"


def find_trace(row: pd.Series, download_dir: Path | None = None) -> Path | None:
    """The run's trace.parquet: in its output folder, else downloaded from its MLflow run."""
    out = row.get("output_dir")
    if isinstance(out, str) and (Path(out) / TRACE_FILE).is_file():
        return Path(out) / TRACE_FILE
    run_id, uri = row.get("mlflow_run_id"), row.get("mlflow_tracking_uri")
    if not isinstance(run_id, str) or not isinstance(uri, str):
        return None
    try:
        from mlflow import MlflowClient

        dest = download_dir or Path(tempfile.mkdtemp(prefix="lambda_hat_report_"))
        dest = dest / run_id
        dest.mkdir(parents=True, exist_ok=True)
        path = Path(MlflowClient(tracking_uri=uri).download_artifacts(run_id, TRACE_FILE, str(dest)))
        return path if path.is_file() else None
    except Exception as e:  # a run without the artifact: the figure says so
        log.warning("no trace for MLflow run %s: %s", run_id, " ".join(str(e).split())[:200])
        return None


def _f(row: pd.Series, key: str, default: float = np.nan) -> float:
    value: Any = row.get(key)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return default
    return default if np.isnan(value) else value


def running_llc(trace: pd.DataFrame, row: pd.Series) -> pd.DataFrame:
    """λ̂ averaged over the kept draws so far (burn-in excluded; chains pooled draw by draw),
    against the work one chain had spent at that draw (FGE, warm-up included).

    Work at step s = warm-up FGE + s × FGE per step, with the per-step rate from the run's own
    count (n_fge over the kept steps): exact for SG-MCMC and HMC, the run's average for NUTS.
    Returns columns fge, llc (one row per kept draw index)."""
    chains = _f(row, "num_chains", _f(row, "cfg.sampler.num_chains", 1.0))
    steps = _f(row, "num_steps", _f(row, "cfg.sampler.num_steps"))
    burnin = _f(row, "num_burnin", 0.0)
    n_fge, n_fge_warm = _f(row, "n_fge"), _f(row, "n_fge_warmup", 0.0)
    kept = trace[~trace["burnin"].astype(bool)] if "burnin" in trace else trace
    per_draw = kept.groupby("draw", sort=True).agg(step=("step", "first"), llc=("llc", "mean"))
    if not len(per_draw) or np.isnan(steps) or np.isnan(n_fge) or steps <= burnin:
        return pd.DataFrame({"fge": [], "llc": []})
    rate = n_fge / chains / (steps - burnin)  # FGE per step and chain after burn-in
    warm_only = (n_fge + n_fge_warm) / chains - rate * steps
    fge = warm_only + rate * per_draw["step"].to_numpy(dtype=float)
    running = np.cumsum(per_draw["llc"].to_numpy(dtype=float)) / np.arange(1, len(per_draw) + 1)
    return pd.DataFrame({"fge": fge, "llc": running})
