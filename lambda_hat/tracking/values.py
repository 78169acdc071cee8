"""What a run records: the config as params, metrics.json's numbers and the λ̂ series as metrics,
and the source tags (entry point, command line, git commit)."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

MAX_PARAM_CHARS = 6000  # MLflow rejects longer param values


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
    if metrics.get("llc_ci95") is not None:  # the interval's ends, comparable across runs in the UI
        out["llc_ci95_low"], out["llc_ci95_high"] = (float(x) for x in metrics["llc_ci95"])
    return out
