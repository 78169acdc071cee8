"""Stan's window adaptation (step size + inverse mass matrix) as a step function the driver chunks.

blackjax's ``window_adaptation`` runs the whole warm-up inside one ``lax.scan`` and returns
every step's state and info, so the host cannot report progress in steps, a signal waits for the
whole call, and the per-step record costs memory. Its stepwise ``base()`` is deprecated. So the
update logic (about 30 lines, identical to blackjax's ``base``: dual averaging in fast windows,
Welford + dual averaging in slow windows, mass matrix and a restarted dual averaging at each slow
window's end) is written here from blackjax's public pieces — ``build_schedule``,
``mass_matrix_adaptation`` and ``dual_averaging_adaptation`` — and keeps nothing per step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.adaptation.mass_matrix import mass_matrix_adaptation
from blackjax.adaptation.staged_adaptation import build_schedule
from blackjax.adaptation.step_size import dual_averaging_adaptation

from lambda_hat.posterior import Posterior
from lambda_hat.samplers.base import StepwiseWarmup, Warmup

# (key, state, post, step_size, inverse_mass_matrix) -> (state, acceptance_rate, fge)
KernelStep = Callable[[jax.Array, Any, Posterior, jax.Array, jax.Array], tuple[Any, jax.Array, jax.Array]]
# (state, step_size, inverse_mass_matrix, post) -> Warmup
Finish = Callable[[Any, jax.Array, jax.Array, Posterior], Warmup]


class AdaptationState(NamedTuple):
    ss_state: Any  # dual averaging of log step size
    imm_state: Any  # Welford estimate of the posterior variance in the current slow window
    step_size: jax.Array  # in use now
    inverse_mass_matrix: jax.Array  # in use now


def stan_window_adaptation(
    kernel_step: KernelStep,
    finish: Finish,
    num_steps: int,
    *,
    diagonal: bool,
    target_accept: float,
    initial_step_size: float,
) -> StepwiseWarmup:
    """Stan's warm-up schedule for an HMC-family kernel, one adaptation step at a time."""
    schedule = jnp.asarray(build_schedule(num_steps), jnp.int32)  # (num_steps, 2): stage, window end
    mm_init, mm_update, mm_final = mass_matrix_adaptation(diagonal)
    da_init, da_update, da_final = dual_averaging_adaptation(target_accept)

    def init(key: jax.Array, state: Any, post: Posterior):
        imm = mm_init(post.d)
        ws = AdaptationState(da_init(initial_step_size), imm, jnp.asarray(initial_step_size, post.dtype), imm.inverse_mass_matrix)
        return key, state, ws

    def fast(ws: AdaptationState, position: jax.Array, accept: jax.Array) -> AdaptationState:
        ss = da_update(ws.ss_state, accept)
        return ws._replace(ss_state=ss, step_size=jnp.exp(ss.log_step_size).astype(ws.step_size.dtype))

    def slow(ws: AdaptationState, position: jax.Array, accept: jax.Array) -> AdaptationState:
        return fast(ws._replace(imm_state=mm_update(ws.imm_state, position)), position, accept)

    def window_end(ws: AdaptationState) -> AdaptationState:
        imm = mm_final(ws.imm_state)
        ss = da_init(da_final(ws.ss_state))
        return AdaptationState(ss, imm, jnp.exp(ss.log_step_size).astype(ws.step_size.dtype), imm.inverse_mass_matrix)

    def step(carry, post: Posterior, t: jax.Array):
        key, state, ws = carry
        state, accept, fge = kernel_step(jax.random.fold_in(key, t), state, post, ws.step_size, ws.inverse_mass_matrix)
        stage, is_window_end = schedule[t, 0], schedule[t, 1]
        ws = jax.lax.cond(stage == 1, slow, fast, ws, state.position, accept)
        ws = jax.lax.cond(is_window_end == 1, window_end, lambda w: w, ws)
        return (key, state, ws), fge

    def final(carry, post: Posterior) -> Warmup:
        _, state, ws = carry
        step_size = jnp.exp(ws.ss_state.log_step_size_avg).astype(post.dtype)
        return finish(state, step_size, ws.imm_state.inverse_mass_matrix, post)

    return StepwiseWarmup(num_steps=num_steps, init=init, step=step, final=final)
