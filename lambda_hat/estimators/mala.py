"""MALA, full batch (blackjax ``mala``): a Langevin move w' = w + s ∇log p(w) + sqrt(2s) ξ,
accepted or rejected by Metropolis–Hastings, so λ̂ has no step-size bias at any step — the exact
counterpart of SGLD's move (SGLD's ε is 2s), for checking an SG-MCMC estimate on a target whose
full-data gradient is affordable.

Warm-up: s is tuned per chain by dual averaging (blackjax's ``dual_averaging_adaptation``) to the
acceptance rate ``target_accept``; 0.574 is the optimal rate for MALA as d grows (Roberts &
Rosenthal 1998). One step costs one full-data gradient (at the proposal; the current position's is
kept in the state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from omegaconf import DictConfig

from lambda_hat.config import positive
from lambda_hat.estimators import EstimatorSpec, SamplerConfig, check_open_unit, check_sampler, too_small


@dataclass
class MALAConfig(SamplerConfig):
    name: str = "mala"
    num_warmup: int = 500  # dual-averaging steps per chain (warm-up work, not part of num_steps)
    num_steps: int = 2000
    target_accept: float = 0.574
    initial_step_size: float = 1e-5  # s, where dual averaging starts
    dtype: str = "float64"


def check(cfg: DictConfig) -> None:
    check_sampler(cfg)
    positive(cfg, "sampler.num_warmup", integer=True)
    positive(cfg, "sampler.initial_step_size")
    check_open_unit(cfg, "target_accept")


def gradients_per_chain(cfg: Any) -> tuple[float, float]:
    total = float(int(cfg.num_warmup) + int(cfg.num_steps))
    return total, total


def size(s: Any, n: int, fge: Fraction, vi: Any = None) -> dict[str, Any]:
    """A quarter of the budget tunes the step, the rest samples (1 FGE a step)."""
    total = math.floor(fge)
    warmup = total // 4
    if warmup < 1 or total - warmup < 4:
        raise too_small("mala", float(fge), "one warm-up step and 4 draws")
    return {"num_warmup": warmup, "num_steps": total - warmup}


def build(cfg: Any, n: int) -> Any:
    import blackjax
    import jax
    import jax.numpy as jnp
    from blackjax.adaptation.step_size import dual_averaging_adaptation

    from lambda_hat.samplers.base import Kernel, StepInfo, StepwiseWarmup, Warmup

    del n
    raw_kernel = blackjax.mala.build_kernel()
    da_init, da_update, da_final = dual_averaging_adaptation(float(cfg.target_accept))

    def init(key, w0, post):
        del key
        return blackjax.mala.init(w0, post.logdensity)

    def warm_init(key, state, post):
        del post
        return key, state, da_init(float(cfg.initial_step_size))

    def warm_step(carry, post, t):
        key, state, da = carry
        state, info = raw_kernel(jax.random.fold_in(key, t), state, post.logdensity, jnp.exp(da.log_step_size))
        return (key, state, da_update(da, info.acceptance_rate)), jnp.ones((), state.position.dtype)

    def warm_final(carry, post) -> Warmup:
        _, state, da = carry
        step_size = jnp.asarray(da_final(da), state.position.dtype)
        return Warmup(state, {"step_size": step_size}, jnp.zeros((), state.position.dtype), {"step_size": step_size})

    def step(key, state, params, post, t):
        del t
        state, info = raw_kernel(key, state, post.logdensity, params["step_size"])
        dtype = state.position.dtype
        extras = {"acceptance_rate": info.acceptance_rate.astype(dtype)}
        return state, StepInfo(post.loss_of_logdensity(state.logdensity, state.position), jnp.ones((), dtype), extras)

    return Kernel(init=init, step=step, warmup=StepwiseWarmup(int(cfg.num_warmup), warm_init, warm_step, warm_final))


ESTIMATORS = (EstimatorSpec("mala", MALAConfig, "full_batch", build, gradients_per_chain, check, "sampler.num_warmup, sampler.num_steps", size),)
