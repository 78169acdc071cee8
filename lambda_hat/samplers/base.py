"""The sampler interface every algorithm implements (blackjax-style pure functions, one chain).

The driver vmaps these over chains and scans ``step`` over steps. Everything a step reports is a
scalar per chain, so traces scale with draws x chains, never with parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from lambda_hat.posterior import Posterior

State = Any
Params = Any  # per-chain tuned parameters (step size, inverse mass matrix, L, ...); () if none


class StepInfo(NamedTuple):
    loss: jax.Array  # L(w) at the new position (a minibatch or full-data loss)
    fge: jax.Array  # full-gradient equivalents this step cost (batch/n per minibatch gradient)
    extras: dict[str, jax.Array]  # sampler diagnostics: acceptance_rate, is_divergent, energy, ...


class Warmup(NamedTuple):
    state: State
    params: Params
    fge: jax.Array  # full-gradient equivalents spent adapting
    extras: dict[str, jax.Array]  # adapted values to report: step_size, L, num_integration_steps


class Kernel(NamedTuple):
    """init(key, w0, post) -> state; step(key, state, params, post, t) -> (state, StepInfo).

    ``warmup(key, state, post) -> Warmup`` adapts the kernel's parameters (None: no adaptation,
    params = ()). ``t`` is the global step index, shared by all chains (not vmapped), so a step may
    branch on it with ``lax.cond`` at no cost to the other steps.
    """

    init: Callable[[jax.Array, jax.Array, Posterior], State]
    step: Callable[[jax.Array, State, Params, Posterior, jax.Array], tuple[State, StepInfo]]
    warmup: Callable[[jax.Array, State, Posterior], Warmup] | None = None
