"""Full-batch HMC and NUTS (blackjax), tuned per chain by blackjax's window adaptation.

Warm-up adapts the step size (dual averaging to ``target_accept``) and a diagonal (or dense)
inverse mass matrix; each chain adapts on its own so that chains stay independent and R-hat
remains meaningful. One integration step costs one full-data gradient (1 FGE).
"""

from __future__ import annotations

from typing import Any

import blackjax
import jax
import jax.numpy as jnp

from lambda_hat.posterior import Posterior
from lambda_hat.samplers.base import Kernel, StepInfo, Warmup

NAMES = ("hmc", "nuts")


def loss_of_state(post: Posterior, state: Any) -> jax.Array:
    """L_n(w) recovered from the cached log density, without another forward pass."""
    return -(state.logdensity + post.localization(state.position)) / post.nbeta


def build(cfg: Any, n: int) -> Kernel:
    del n
    is_nuts = cfg.name == "nuts"
    algorithm = blackjax.nuts if is_nuts else blackjax.hmc
    raw_kernel = algorithm.build_kernel()
    num_steps_fixed = None if is_nuts else int(cfg.num_integration_steps)

    def init(key: jax.Array, w0: jax.Array, post: Posterior):
        del key
        return algorithm.init(w0, post.logdensity)

    def warmup(key: jax.Array, state, post: Posterior) -> Warmup:
        extra = {"max_num_doublings": int(cfg.max_tree_depth)} if is_nuts else {"num_integration_steps": num_steps_fixed}
        adapt = blackjax.window_adaptation(
            algorithm,
            post.logdensity,
            is_mass_matrix_diagonal=bool(cfg.diagonal_mass_matrix),
            initial_step_size=float(cfg.initial_step_size),
            target_acceptance_rate=float(cfg.target_accept),
            **extra,
        )
        (state, params), info = adapt.run(key, state.position, num_steps=int(cfg.num_warmup))
        step_size = params["step_size"]
        if is_nuts:
            fge = jnp.sum(info.info.num_integration_steps)
            n_leapfrog = jnp.zeros((), jnp.int32)  # NUTS chooses per step
        else:
            fge = jnp.asarray(num_steps_fixed * int(cfg.num_warmup))
            if cfg.trajectory_length is not None:
                # Fixed trajectory length: the number of steps follows the adapted step size.
                n_leapfrog = jnp.clip(
                    jnp.ceil(cfg.trajectory_length / step_size), 1, cfg.max_integration_steps
                ).astype(jnp.int32)
            else:
                n_leapfrog = jnp.asarray(num_steps_fixed, jnp.int32)
        tuned = {"step_size": step_size, "inverse_mass_matrix": params["inverse_mass_matrix"], "n": n_leapfrog}
        extras = {"step_size": step_size, "mean_inverse_mass": jnp.mean(params["inverse_mass_matrix"])}
        if not is_nuts:
            extras["num_integration_steps"] = n_leapfrog
            extras["trajectory_length"] = step_size * n_leapfrog
        return Warmup(state, tuned, fge.astype(state.position.dtype), extras)

    def step(key, state, params, post: Posterior, t):
        del t
        if is_nuts:
            state, info = raw_kernel(
                key, state, post.logdensity, params["step_size"], params["inverse_mass_matrix"],
                max_num_doublings=int(cfg.max_tree_depth),
            )
            n_grad = info.num_integration_steps
            extras = {
                "tree_depth": info.num_trajectory_expansions,
                "num_integration_steps": n_grad,
                "trajectory_length": params["step_size"] * n_grad,
            }
        else:
            state, info = raw_kernel(
                key, state, post.logdensity, params["step_size"], params["inverse_mass_matrix"], params["n"]
            )
            n_grad = params["n"]
            extras = {}
        dtype = state.position.dtype
        extras |= {
            "acceptance_rate": info.acceptance_rate,
            "is_divergent": info.is_divergent,
            "energy": info.energy,
        }
        extras = {k: jnp.asarray(v).astype(dtype) for k, v in extras.items()}
        return state, StepInfo(loss_of_state(post, state), jnp.asarray(n_grad).astype(dtype), extras)

    return Kernel(init=init, step=step, warmup=warmup)


