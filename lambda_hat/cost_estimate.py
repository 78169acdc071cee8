"""The up-front cost estimate of a full-batch run: a few full-data gradients timed on the target,
times the gradients the estimator says a chain will spend (EstimatorSpec.cost), said in one log
line with the keys that shorten it (EstimatorSpec.cost_knobs), before the long part starts."""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import jax
from omegaconf import DictConfig

from lambda_hat import registry
from lambda_hat.posterior import Posterior

log = logging.getLogger("lambda_hat.runner")  # the runner's logger: the line reads as the run's


@functools.partial(jax.jit, static_argnums=2)
def _many_gradients(w: jax.Array, posterior: Posterior, count: int) -> jax.Array:
    # The posterior is an argument, not a constant: later runs of the same shapes reuse the program.
    return jax.lax.fori_loop(0, count, lambda _, v: v + 1e-30 * jax.grad(posterior.logdensity)(v), w)


def _time_gradient(posterior: Posterior, repeats: int = 3, per_call: int = 20) -> float:
    """Seconds per full-data gradient of the log density: a compiled loop of per_call gradients
    (so dispatch overhead is not counted), median of a few calls."""
    _many_gradients(posterior.w_star, posterior, per_call).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _many_gradients(posterior.w_star, posterior, per_call).block_until_ready()
        times.append((time.perf_counter() - start) / per_call)
    return sorted(times)[len(times) // 2]


def _fmt_s(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def log_cost_estimate(cfg: DictConfig, posterior: Posterior, devices: int) -> dict[str, Any]:
    """Time a few full-data gradients and say up front what a full-batch run will cost."""
    spec = registry.get(cfg.sampler.name)
    budget = spec.gradients_per_chain(cfg.sampler)
    if budget is None:
        return {}
    expected, upper = budget
    per_grad = _time_gradient(posterior)
    chains = int(cfg.sampler.num_chains)
    # chains run in parallel over the devices, vmapped within one
    scale = per_grad * chains / max(1, devices)
    parts = [f"1 full-data gradient = {1e3 * per_grad:.2f} ms"]
    if expected is not None:
        parts.append(f"{chains} chains x {expected:,.0f} gradients ~ {_fmt_s(expected * scale)}")
    if upper is not None and upper != expected:
        parts.append(f"at most {upper:,.0f} gradients per chain ~ {_fmt_s(upper * scale)}")
    knobs = spec.cost_knobs
    if not cfg.posterior.gram_loss or posterior.gram is None:
        knobs += ", data.n"
    log.info("[%s] cost estimate: %s (on %d device(s)); shorten with %s", cfg.sampler.name, "; ".join(parts), devices, knobs)
    return {"seconds_per_gradient": per_grad, "estimated_time_s": None if expected is None else expected * scale}
