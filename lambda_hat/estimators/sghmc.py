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
from lambda_hat.estimators import PROBE_EVERY, EstimatorSpec, minibatch_fge, probe_gradients, sg_sizes
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
    from lambda_hat.samplers.sgmcmc import SGMCMCState, batch_idx, potential, probe_bias

    h, batch, thermostat = cfg.step_size, int(cfg.batch_size), cfg.name == "sgnht"
    fge = batch / n

    def init(key, w0, post):
        del post
        momentum = jax.random.normal(key, w0.shape, w0.dtype)
        return SGMCMCState(w0, momentum, jnp.zeros((), w0.dtype) + cfg.friction, jnp.zeros((), jnp.int32))

    def step(key, state, params, post, t):
        del params
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
        traces, estimate = probe_bias(key, post, w, grad_u, batch, t)  # the step's predicted bias of λ̂
        extras = {
            "kinetic_temperature": kinetic,  # ≈ 1 when the momentum is thermalised
            "predicted_excess": predicted_excess(h, cfg.friction, friction, w.size, *traces).astype(w.dtype),
        }
        fge_step = jnp.where(estimate, 3 * fge, fge).astype(w.dtype)  # + the probe's two gradients
        return SGMCMCState(new_w, p, xi, state.t + 1), StepInfo(loss, fge_step, extras)

    return Kernel(init=init, step=step)


def predicted_excess(h: Any, noise_friction: Any, friction: Any, d: int, trace_hessian: Any, trace_noise: Any) -> Any:
    """E[U] of the chain's stationary law minus the posterior's, for U locally quadratic with
    Hessian A and minibatch-gradient covariance Σ_g (trace_hessian = tr A, trace_noise = tr Σ_g):
    λ̂ is high by about this (lambda_hat.llc.interval_metrics divides it by λ̂).

    Per direction of curvature a, the kick-drift step above has the exact stationary variance
    1 / (a (1 − a h² / (2 (2 − ξ h)))) for friction ξ (a linear recursion's Lyapunov equation),
    i.e. E[U] higher by a h² / (4 (2 − ξ h)): SGLD's ε tr A / 8 at ε = 2h² / (2 − ξh). The
    minibatch noise adds h² Σ_g to the momentum's variance per step beside the 2 A h injected
    (A = noise_friction) against a friction ξ: temperature (A + h σ²/2) / ξ per direction, so
    E[U] higher by (d (A − ξ) + h tr Σ_g / 2) / (2ξ) — SGHMC (ξ = A): h tr Σ_g / (4A); SGNHT's
    thermostat moves ξ to cancel it on average.
    """
    return h**2 * trace_hessian / (4.0 * (2.0 - friction * h)) + (d * (noise_friction - friction) + h * trace_noise / 2.0) / (2.0 * friction)


def size_sg(s: Any, n: int, fge: Fraction, vi: Any = None) -> dict[str, Any]:
    """SGHMC, SGNHT: num_steps minibatch gradients, plus the bias probe's two every PROBE_EVERY
    steps (1e3 FGE: 19,600 x 0.05 x 1.02)."""
    return sg_sizes(s.name, fge, minibatch_fge(s, n) * Fraction(PROBE_EVERY + probe_gradients(s), PROBE_EVERY), Fraction(0))


ESTIMATORS = (
    EstimatorSpec("sghmc", SGHMCConfig, "minibatch", build, check=check, size=size_sg, grid_keys=("step_size", "friction")),
    EstimatorSpec("sgnht", SGNHTConfig, "minibatch", build, check=check, size=size_sg, grid_keys=("step_size", "friction")),
)
