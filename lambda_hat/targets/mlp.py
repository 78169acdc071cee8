"""Multi-layer perceptrons for teacher-student targets."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import cache, partial

import jax
import jax.numpy as jnp
import numpy as np

Params = list  # [{"w": (a, b), "b": (b,)}, ...]; "b" absent without bias

ACTIVATION_FNS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda z: z,
}


def init_params(widths: Sequence[int], bias: bool, rng: np.random.Generator, bias_std: float = 0.0) -> list[dict[str, np.ndarray]]:
    """LeCun-normal weights N(0, 1/fan_in); biases N(0, bias_std^2) (0 = zeros)."""
    params = []
    for a, b in zip(widths[:-1], widths[1:]):
        layer = {"w": rng.normal(0.0, 1.0 / math.sqrt(a), size=(a, b))}
        if bias:
            layer["b"] = rng.normal(0.0, bias_std, size=(b,)) if bias_std > 0 else np.zeros(b)
        params.append(layer)
    return params


def forward(params: Params, x: jnp.ndarray, activation: str) -> jnp.ndarray:
    """Hidden layers use the activation, the output layer is linear."""
    act = ACTIVATION_FNS[activation]
    for i, layer in enumerate(params):
        x = x @ layer["w"]
        if "b" in layer:
            x = x + layer["b"]
        if i < len(params) - 1:
            x = act(x)
    return x


@cache  # one object per activation: compiled samplers are keyed on it (lambda_hat.posterior)
def make_apply(activation: str) -> Callable[[Params, jnp.ndarray], jnp.ndarray]:
    return partial(forward, activation=activation)
