"""MLflow logging (imported lazily: mlflow takes seconds to import)."""

from __future__ import annotations

import os
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


@contextmanager
def mlflow_run(cfg: DictConfig, launch_dir: Path, run_name: str) -> Iterator[Any]:
    """Start an MLflow run for this job; it ends FINISHED, or FAILED if the body raises.

    Yields the ``mlflow`` module (or None when tracking is disabled).
    """
    if not cfg.mlflow.enabled:
        yield None
        return
    import mlflow

    # An inherited run id would make every parallel job write into one run.
    os.environ.pop("MLFLOW_RUN_ID", None)
    uri = resolve_tracking_uri(cfg.mlflow.tracking_uri, launch_dir)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    if experiment is None:
        artifact_location = None
        if uri.startswith("sqlite:///"):
            # Artifacts beside the database (MLflow would use ./mlruns of whatever cwd the job has).
            db = Path(uri.removeprefix("sqlite:///"))
            artifact_location = (db.parent / "mlruns").resolve().as_uri()
        try:
            mlflow.create_experiment(cfg.mlflow.experiment, artifact_location=artifact_location)
        except Exception:  # created concurrently by another job
            if mlflow.get_experiment_by_name(cfg.mlflow.experiment) is None:
                raise
    mlflow.set_experiment(cfg.mlflow.experiment)
    with mlflow.start_run(run_name=run_name):
        mlflow.log_params(flatten_config(cfg))
        yield mlflow


def log_results(mlflow: Any, metrics: dict[str, Any], files: list[Path], tags: dict[str, str]) -> None:
    if mlflow is None:
        return
    mlflow.set_tags(tags)
    mlflow.log_metrics(numeric_metrics(metrics))
    for path in files:
        mlflow.log_artifact(str(path))
