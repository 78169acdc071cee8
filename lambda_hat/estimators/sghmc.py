"""SGHMC (Chen et al. 2014) and SGNHT (Ding et al. 2014), in blackjax's parametrisation (step h,
friction = blackjax's alpha, w <- w + h p).

Written here rather than taken from blackjax: blackjax's diffusions move w with the *old* momentum
(explicit Euler), which gains energy by a factor sqrt(1 + h²K) per step on a direction of
curvature K unless the friction absorbs it; the localized tempered posterior is stiff (K ~ nβ
times the loss Hessian), and it heated the chains (+37-40% λ̂ at n = 1e4) or diverged (n = 1e5).
Kicking the momentum first and then drifting w with the new momentum (symplectic Euler, Chen et
al.'s own ordering) is stable for h²K < 4 at the same cost. The minibatch potential is
lambda_hat.samplers.sgmcmc's.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from omegaconf import DictConfig

from lambda_hat.config import require
from lambda_hat.estimators import EstimatorSpec, minibatch_fge, sg_sizes
from lambda_hat.estimators.sgld import SGMCMCConfig, check_minibatch


@dataclass
class SGHMCConfig(SGMCMCConfig):
    """SGHMC (Chen et al. 2014), blackjax parametrisation: w <- w + h p, friction (blackjax's alpha)."""

    name: str = "sghmc"
    step_size: float = 3e-4  # h (SGLD's epsilon corresponds to about h^2)
    friction: float = 100.0  # (1 - friction h) p per step; large damps minibatch-noise heating


@dataclass
class SGNHTConfig(SGMCMCConfig):
    """SG Nosé-Hoover thermostat (Ding et al. 2014), blackjax parametrisation; xi starts at friction."""

    name: str = "sgnht"
    step_size: float = 3e-4
    friction: float = 100.0  # injected-noise level and the thermostat's initial value


def check(cfg: DictConfig) -> None:
    check_minibatch(cfg)
    s = cfg.sampler
    require(0 <= s.friction * s.step_size < 1, "sampler.friction", s.friction, f"friction x step must be in [0, 1) (step_size={s.step_size})")


def build(cfg: Any, n: int) -> Any:
    """SGHMC (constant friction) or SGNHT (cfg.name == "sgnht": the thermostat ξ adapts it)."""
    import jax
    import jax.numpy as jnp

    from lambda_hat.samplers.base import Kernel, StepInfo
    from lambda_hat.samplers.sgmcmc import SGMCMCState, batch_idx, potential

    h, batch, thermostat = cfg.step_size, int(cfg.batch_size), cfg.name == "sgnht"
    fge = batch / n

    def init(key, w0, post):
        del post
        momentum = jax.random.normal(key, w0.shape, w0.dtype)
        return SGMCMCState(w0, momentum, jnp.zeros((), w0.dtype) + cfg.friction, jnp.zeros((), jnp.int32))

    def step(key, state, params, post, t):
        del params, t
        k_batch, k_noise = jax.random.split(key)
        w = state.position
        idx = batch_idx(k_batch, post, batch)
        (_, loss), grad_u = jax.value_and_grad(potential, argnums=1, has_aux=True)(post, w, idx)
        loss = post.recorded_loss(loss, idx)
        friction = state.v if thermostat else cfg.friction
        noise = jax.random.normal(k_noise, w.shape, w.dtype)
        p = (1.0 - friction * h) * state.m - h * grad_u + jnp.sqrt(2.0 * cfg.friction * h) * noise
        new_w = w + h * p  # drift with the new momentum (symplectic Euler)
        kinetic = jnp.mean(p**2)
        xi = state.v + h * (kinetic - 1.0) if thermostat else state.v
        extras = {"kinetic_temperature": kinetic}  # ≈ 1 when the momentum is thermalised
        return SGMCMCState(new_w, p, xi, state.t + 1), StepInfo(loss, jnp.asarray(fge, w.dtype), extras)

    return Kernel(init=init, step=step)


def size_sg(s: Any, n: int, fge: Fraction, vi: Any = None) -> dict[str, Any]:
    """SGHMC, SGNHT: num_steps minibatch gradients (1e3 FGE: 20,000 x 0.05)."""
    return sg_sizes(s.name, fge, minibatch_fge(s, n), Fraction(0))


ESTIMATORS = (
    EstimatorSpec("sghmc", SGHMCConfig, "minibatch", build, check=check, size=size_sg, grid_keys=("step_size", "friction")),
    EstimatorSpec("sgnht", SGNHTConfig, "minibatch", build, check=check, size=size_sg, grid_keys=("step_size", "friction")),
)
