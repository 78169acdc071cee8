"""Full-batch HMC and NUTS (blackjax), tuned per chain by Stan's window adaptation.

Warm-up adapts the step size (dual averaging to ``target_accept``) and a diagonal (or dense)
inverse mass matrix, one step at a time (``window_adaptation``) so that the driver reports its
progress; each chain adapts on its own so that chains stay independent and R-hat remains
meaningful. One integration step costs one full-data gradient (1 FGE).
"""

from __future__ import annotations

from typing import Any

import blackjax
import jax
import jax.numpy as jnp

from lambda_hat.posterior import Posterior
from lambda_hat.samplers.base import Kernel, StepInfo, Warmup
from lambda_hat.samplers.window_adaptation import stan_window_adaptation


def loss_of_state(post: Posterior, state: Any) -> jax.Array:
    """L_n(w) recovered from the cached log density, without another forward pass."""
    return -(state.logdensity + post.localization(state.position)) / post.nbeta


def build(cfg: Any, n: int) -> Kernel:
    """HMC (cfg.name == "hmc") or NUTS ("nuts") with per-chain window adaptation."""
    del n
    is_nuts = cfg.name == "nuts"
    algorithm = blackjax.nuts if is_nuts else blackjax.hmc
    raw_kernel = algorithm.build_kernel()
    num_steps_fixed = None if is_nuts else int(cfg.num_integration_steps)

    def transition(key, state, post: Posterior, step_size, inverse_mass_matrix, n_leapfrog=None):
        """One transition: (state, info, gradients spent)."""
        if is_nuts:
            state, info = raw_kernel(key, state, post.logdensity, step_size, inverse_mass_matrix, max_num_doublings=int(cfg.max_tree_depth))
            return state, info, info.num_integration_steps
        n_leapfrog = num_steps_fixed if n_leapfrog is None else n_leapfrog
        state, info = raw_kernel(key, state, post.logdensity, step_size, inverse_mass_matrix, n_leapfrog)
        return state, info, n_leapfrog

    def init(key: jax.Array, w0: jax.Array, post: Posterior):
        del key
        return algorithm.init(w0, post.logdensity)

    def adapt_step(key, state, post, step_size, inverse_mass_matrix):
        # During warm-up HMC always uses num_integration_steps (the trajectory length, if set,
        # needs the adapted step size).
        state, info, n_grad = transition(key, state, post, step_size, inverse_mass_matrix)
        dtype = state.position.dtype
        return state, info.acceptance_rate.astype(dtype), jnp.asarray(n_grad).astype(dtype)

    def finish(state, step_size, inverse_mass_matrix, post: Posterior) -> Warmup:
        if is_nuts:
            n_leapfrog = jnp.zeros((), jnp.int32)  # NUTS chooses per step
        elif cfg.trajectory_length is not None:
            # Fixed trajectory length: the number of steps follows the adapted step size.
            n_leapfrog = jnp.clip(jnp.ceil(cfg.trajectory_length / step_size), 1, cfg.max_integration_steps).astype(jnp.int32)
        else:
            n_leapfrog = jnp.asarray(num_steps_fixed, jnp.int32)
        tuned = {"step_size": step_size, "inverse_mass_matrix": inverse_mass_matrix, "n": n_leapfrog}
        extras = {"step_size": step_size, "mean_inverse_mass": jnp.mean(inverse_mass_matrix)}
        if not is_nuts:
            extras["num_integration_steps"] = n_leapfrog
            extras["trajectory_length"] = step_size * n_leapfrog
        return Warmup(state, tuned, jnp.zeros((), post.dtype), extras)

    warmup = stan_window_adaptation(
        adapt_step,
        finish,
        int(cfg.num_warmup),
        diagonal=bool(cfg.diagonal_mass_matrix),
        target_accept=float(cfg.target_accept),
        initial_step_size=float(cfg.initial_step_size),
    )

    def step(key, state, params, post: Posterior, t):
        del t
        state, info, n_grad = transition(key, state, post, params["step_size"], params["inverse_mass_matrix"], None if is_nuts else params["n"])
        extras = {}
        if is_nuts:
            extras = {
                "tree_depth": info.num_trajectory_expansions,
                "num_integration_steps": n_grad,
                "trajectory_length": params["step_size"] * n_grad,
            }
        dtype = state.position.dtype
        extras |= {"acceptance_rate": info.acceptance_rate, "is_divergent": info.is_divergent, "energy": info.energy}
        extras = {k: jnp.asarray(v).astype(dtype) for k, v in extras.items()}
        return state, StepInfo(loss_of_state(post, state), jnp.asarray(n_grad).astype(dtype), extras)

    return Kernel(init=init, step=step, warmup=warmup)


def gradients_per_chain(cfg: Any) -> tuple[float | None, float]:
    """(expected, upper bound) full-data gradients one chain spends, warm-up included."""
    steps = int(cfg.num_warmup) + int(cfg.num_steps)
    if cfg.name == "nuts":  # a tree of depth k costs up to 2^k - 1 leapfrog steps
        return None, float(steps * (2 ** int(cfg.max_tree_depth) - 1))
    fixed = int(cfg.num_integration_steps)
    if cfg.trajectory_length is None:
        return float(steps * fixed), float(steps * fixed)
    return None, float(int(cfg.num_warmup) * fixed + int(cfg.num_steps) * int(cfg.max_integration_steps))
