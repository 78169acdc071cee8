"""The sampler interface every algorithm implements (blackjax-style pure init/step functions)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from lambda_hat.posterior import Posterior

State = Any


class StepInfo(NamedTuple):
    """What a step reports to the trace: L(w) at the step's position (a batch or full-data loss)."""

    loss: jax.Array


class Kernel(NamedTuple):
    """A sampler for one chain, pure and jit-friendly; the driver vmaps it over chains.

    init(key, w0, posterior) -> state
    step(key, state, posterior) -> (state, StepInfo)
    position(state) -> flat parameter vector
    fge_per_step: full-gradient equivalents one step costs (batch / n for a minibatch gradient)
    """

    init: Callable[[jax.Array, jax.Array, Posterior], State]
    step: Callable[[jax.Array, State, Posterior], tuple[State, StepInfo]]
    position: Callable[[State], jax.Array]
    fge_per_step: float
