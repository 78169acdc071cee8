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
Carry = Any  # a stepwise warm-up's state (sampler state + adaptation state)


class StepInfo(NamedTuple):
    loss: jax.Array  # L(w) at the new position (a minibatch or full-data loss)
    fge: jax.Array  # full-gradient equivalents this step cost (batch/n per minibatch gradient)
    extras: dict[str, jax.Array]  # sampler diagnostics: acceptance_rate, is_divergent, energy, ...


class Warmup(NamedTuple):
    state: State
    params: Params
    fge: jax.Array  # full-gradient equivalents spent adapting
    extras: dict[str, jax.Array]  # adapted values to report: step_size, L, num_integration_steps


class StepwiseWarmup(NamedTuple):
    """A warm-up the driver can run in chunks, like sampling (progress, bounded memory, signals).

    ``init(key, state, post) -> carry``; ``step(carry, post, t) -> (carry, fge)`` is one adaptation
    step, ``t`` the global warm-up step index (shared by all chains, so a schedule can be indexed
    by it); ``final(carry, post) -> Warmup``. Nothing per step is kept, so memory does not grow
    with ``num_steps``.
    """

    num_steps: int
    init: Callable[[jax.Array, State, Posterior], Carry]
    step: Callable[[Carry, Posterior, jax.Array], tuple[Carry, jax.Array]]
    final: Callable[[Carry, Posterior], Warmup]


class Kernel(NamedTuple):
    """init(key, w0, post) -> state; step(key, state, params, post, t) -> (state, StepInfo).

    ``warmup`` adapts the kernel's parameters: a :class:`StepwiseWarmup`, or a function
    ``(key, state, post) -> Warmup`` that runs as one compiled call (blackjax's MCLMC tuning);
    None: no adaptation, params = (). ``t`` is the global step index, shared by all chains (not
    vmapped), so a step may branch on it with ``lax.cond`` at no cost to the other steps.
    """

    init: Callable[[jax.Array, jax.Array, Posterior], State]
    step: Callable[[jax.Array, State, Params, Posterior, jax.Array], tuple[State, StepInfo]]
    warmup: StepwiseWarmup | Callable[[jax.Array, State, Posterior], Warmup] | None = None
