"""Microcanonical Langevin Monte Carlo (blackjax), tuned with ``mclmc_find_L_and_step_size``.

Every knob of the schema reaches blackjax: the three tuning fractions, the desired energy
variance, trust in the estimate, the number of effective samples, diagonal preconditioning,
the L factor and the integrator. Tuning runs per chain; its integrator steps are counted as
warm-up work (each isokinetic integrator step costs one gradient per position update).
"""

from __future__ import annotations

from typing import Any

import blackjax
import jax
import jax.numpy as jnp
from blackjax.mcmc import integrators

from lambda_hat.posterior import Posterior
from lambda_hat.samplers.base import Kernel, StepInfo, Warmup

# Gradient evaluations per integrator step (= position updates in the splitting scheme).
INTEGRATORS = {
    "isokinetic_velocity_verlet": (integrators.isokinetic_velocity_verlet, 1),
    "isokinetic_mclachlan": (integrators.isokinetic_mclachlan, 2),
    "isokinetic_yoshida": (integrators.isokinetic_yoshida, 3),
    "isokinetic_omelyan": (integrators.isokinetic_omelyan, 5),
}


def _warmup_result(state: Any, params: Any, num_tuning_steps: Any, grads_per_step: int) -> Warmup:
    """Package blackjax's MCLMCAdaptationState; tuning cost = integrator steps x gradients each."""
    dtype = state.position.dtype
    tuned = {"L": params.L, "step_size": params.step_size, "inverse_mass_matrix": params.inverse_mass_matrix}
    extras = {
        "L": params.L,
        "step_size": params.step_size,
        "mean_inverse_mass": jnp.mean(params.inverse_mass_matrix),
        "num_tuning_steps": jnp.asarray(num_tuning_steps, dtype),
    }
    return Warmup(state, tuned, jnp.asarray(num_tuning_steps * grads_per_step, dtype), extras)


def build(cfg: Any, n: int) -> Kernel:
    del n
    integrator, grads_per_step = INTEGRATORS[cfg.integrator]
    raw_kernel = blackjax.mcmc.mclmc.build_kernel(integrator=integrator, desired_energy_var=float(cfg.desired_energy_var))

    def init(key: jax.Array, w0: jax.Array, post: Posterior):
        return blackjax.mcmc.mclmc.init(position=w0, logdensity_fn=post.logdensity, rng_key=key)

    def warmup(key: jax.Array, state, post: Posterior) -> Warmup:
        state, params, num_tuning_steps = blackjax.mclmc_find_L_and_step_size(
            mclmc_kernel=raw_kernel,
            num_steps=int(cfg.num_steps),
            state=state,
            rng_key=key,
            logdensity_fn=post.logdensity,
            frac_tune1=float(cfg.frac_tune1),
            frac_tune2=float(cfg.frac_tune2),
            frac_tune3=float(cfg.frac_tune3),
            desired_energy_var=float(cfg.desired_energy_var),
            trust_in_estimate=float(cfg.trust_in_estimate),
            num_effective_samples=int(cfg.num_effective_samples),
            diagonal_preconditioning=bool(cfg.diagonal_preconditioning),
            l_factor=float(cfg.l_factor),
        )
        return _warmup_result(state, params, num_tuning_steps, grads_per_step)

    def step(key, state, params, post: Posterior, t):
        del t
        state, info = raw_kernel(key, state, post.logdensity, params["inverse_mass_matrix"], params["L"], params["step_size"])
        dtype = state.position.dtype
        loss = -(info.logdensity + post.localization(state.position)) / post.nbeta
        extras = {
            # the quantity MCLMC tunes: energy error variance per dimension
            "energy_var_per_dim": (info.energy_change**2 / post.d).astype(dtype),
        }
        return state, StepInfo(loss, jnp.asarray(grads_per_step, dtype), extras)

    return Kernel(init=init, step=step, warmup=warmup)


def build_adjusted(cfg: Any, n: int) -> Kernel:
    """Metropolis-adjusted MCLMC (blackjax ``adjusted_mclmc_dynamic``), tuned per chain by
    ``adjusted_mclmc_find_L_and_step_size`` (dual averaging of the step to ``target_accept``)."""
    del n
    integrator, grads_per_step = INTEGRATORS[cfg.integrator]
    dynamic = blackjax.mcmc.adjusted_mclmc_dynamic
    raw_kernel = dynamic.build_kernel(
        integrator=integrator,
        integration_steps_fn=dynamic.make_random_trajectory_length_fn(bool(cfg.random_trajectory_length)),
    )

    def init(key: jax.Array, w0: jax.Array, post: Posterior):
        return dynamic.init(w0, post.logdensity, key)

    def warmup(key: jax.Array, state, post: Posterior) -> Warmup:
        state, params, num_tuning_steps = blackjax.adjusted_mclmc_find_L_and_step_size(
            mclmc_kernel=raw_kernel,
            logdensity_fn=post.logdensity,
            num_steps=int(cfg.num_steps),
            state=state,
            rng_key=key,
            target=float(cfg.target_accept),
            frac_tune1=float(cfg.frac_tune1),
            frac_tune2=float(cfg.frac_tune2),
            frac_tune3=float(cfg.frac_tune3),
            diagonal_preconditioning=bool(cfg.diagonal_preconditioning),
            num_windows=int(cfg.num_windows),
            tuning_factor=float(cfg.tuning_factor),
            target_num_integration_steps=float(cfg.target_num_integration_steps),
        )
        return _warmup_result(state, params, num_tuning_steps, grads_per_step)

    def step(key, state, params, post: Posterior, t):
        del t
        state, info = raw_kernel(
            rng_key=key,
            state=state,
            logdensity_fn=post.logdensity,
            step_size=params["step_size"],
            inverse_mass_matrix=params["inverse_mass_matrix"],
            integration_steps_params=(params["L"] / params["step_size"],),
        )
        dtype = state.position.dtype
        loss = -(state.logdensity + post.localization(state.position)) / post.nbeta
        extras = {
            "acceptance_rate": info.acceptance_rate,
            "is_divergent": info.is_divergent,
            "num_integration_steps": info.num_integration_steps,
        }
        extras = {k: jnp.asarray(v).astype(dtype) for k, v in extras.items()}
        fge = jnp.asarray(info.num_integration_steps * grads_per_step).astype(dtype)
        return state, StepInfo(loss, fge, extras)

    return Kernel(init=init, step=step, warmup=warmup)


def gradients_per_chain(cfg: Any) -> tuple[float | None, float | None]:
    """(expected, upper bound) full-data gradients one chain spends, tuning included."""
    fracs = float(cfg.frac_tune1) + float(cfg.frac_tune2) + float(cfg.frac_tune3)
    if cfg.diagonal_preconditioning:
        fracs += float(cfg.frac_tune2) / 3
    total = int(cfg.num_steps) * (1 + fracs) * INTEGRATORS[cfg.integrator][1]
    return total, total


def gradients_per_chain_adjusted(cfg: Any) -> tuple[float | None, float | None]:
    """Adjusted MCLMC: tuning adapts the trajectory length, so only the sampling part is known."""
    sampling = int(cfg.num_steps) * float(cfg.target_num_integration_steps) * INTEGRATORS[cfg.integrator][1]
    return sampling, None
