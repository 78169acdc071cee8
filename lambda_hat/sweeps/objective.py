"""What a job returns to a sweeper (Optuna) when ``objective.enabled``: the estimate's error.

``objective_value(cfg, metrics, out_dir)`` compares ``metrics["llc_mean"]`` with a reference λ:
the target's analytic λ (``metrics["llc_true"]``) when it has one, else a long full-batch run on
the same target and posterior, computed once and cached (lambda_hat.sweeps.references). It writes
what it used to ``out_dir/objective.json`` and returns

- a float, the error by ``objective.metric``:
  ``abs_rel_error`` |λ̂ − λ| / |λ|, ``rel_error`` (λ̂ − λ) / |λ| (signed: for analysis, not for
  minimising), ``abs_error`` |λ̂ − λ|, ``sq_error`` (λ̂ − λ)²;
- with ``objective.with_work`` a tuple (error, total FGE = n_fge + n_fge_warmup), for a
  two-objective search (``hydra.sweeper.direction: [minimize, minimize]``, a Pareto front);
- None for a failed run (no estimate) or when no reference could be had: the sweeper records the
  trial as FAIL and goes on.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lambda_hat.files import write_json

log = logging.getLogger("lambda_hat")

OBJECTIVE_FILE = "objective.json"


def error(estimate: float, reference: float, metric: str) -> tuple[float, str]:
    """The error of estimate against reference by metric, and the metric actually used.

    A relative metric against a reference of 0 (e.g. the zero map) falls back to the absolute
    one, which the returned name says.
    """
    diff = estimate - reference
    if metric in ("abs_rel_error", "rel_error") and reference == 0:
        metric = "abs_error" if metric == "abs_rel_error" else "signed_error"
        return (abs(diff) if metric == "abs_error" else diff), metric
    if metric == "abs_rel_error":
        return abs(diff) / abs(reference), metric
    if metric == "rel_error":
        return diff / abs(reference), metric
    if metric == "abs_error":
        return abs(diff), metric
    if metric == "sq_error":
        return diff * diff, metric
    raise ValueError(f"objective.metric={metric!r} is invalid: must be one of abs_rel_error, rel_error, abs_error, sq_error")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _write(out_dir: Path, record: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / OBJECTIVE_FILE, record, default=str)


def reference_for(cfg: DictConfig, metrics: dict[str, Any]) -> dict[str, Any]:
    """The reference λ for this run's target: analytic when known, else the cached reference run."""
    from lambda_hat.sweeps.references import get_reference

    return get_reference(cfg, target_id=metrics.get("target_id"), llc_true=metrics.get("llc_true"))


def objective_value(cfg: DictConfig, metrics: dict[str, Any], out_dir: Path) -> float | tuple[float, float] | None:
    """The value a sweeper minimises for this run (see the module docstring); writes objective.json."""
    out_dir = Path(out_dir)
    obj = cfg.objective
    work = float((metrics.get("n_fge") or 0.0) + (metrics.get("n_fge_warmup") or 0.0))
    record: dict[str, Any] = {
        "metric": str(obj.metric),
        "with_work": bool(obj.with_work),
        "llc_mean": metrics.get("llc_mean"),
        "llc_sem": metrics.get("llc_sem"),
        "status": metrics.get("status"),
        "n_fge_total": work,
        "target_id": metrics.get("target_id"),
        "value": None,
    }
    estimate = metrics.get("llc_mean")
    if metrics.get("status") == "failed" or not _finite(estimate):
        record["reason"] = f"no estimate (status {metrics.get('status')}, llc_mean {estimate})"
        _write(out_dir, record)
        log.warning("objective: %s; the trial is recorded as failed", record["reason"])
        return None
    try:
        ref = reference_for(cfg, metrics)
    except Exception as e:  # the trial fails, the sweep goes on (and says why)
        record["reason"] = f"no reference λ: {type(e).__name__}: {' '.join(str(e).split())[:500]}"
        _write(out_dir, record)
        log.error("objective: %s", record["reason"])
        return None
    value, used = error(float(estimate), float(ref["llc"]), str(obj.metric))
    record.update(
        value=value,
        metric_used=used,
        reference={k: ref.get(k) for k in ("llc", "se", "source", "key", "converged", "path")},
    )
    result: float | tuple[float, float] = value
    if obj.with_work:
        record["values"] = [value, work]
        result = (value, work)
    _write(out_dir, record)
    log.info(
        "objective: %s = %.6g (λ̂ %.4g vs %s λ %.4g ± %.2g)%s",
        used,
        value,
        estimate,
        ref["source"],
        ref["llc"],
        ref.get("se") or 0.0,
        f", work {work:.4g} FGE" if obj.with_work else "",
    )
    return result
