"""A one-parameter-product polynomial model with a known learning coefficient.

    f(x) = x · ∏_i w_i^{p_i},   y = f*(x) + noise,   w* = 0 (so f* = 0)

The population loss is K(w) = c · ∏_i w_i^{2 p_i}, a monomial, whose real log canonical threshold
at the origin is min_i 1 / (2 p_i) = 1 / (2 max_i p_i) (Watanabe 2009, the normal-crossing case);
its multiplicity is the number of i attaining the maximum. The model is linear in x (f(x) = x P(w)
with P a 1 x 1 matrix), so full-data losses use the Gram matrix like a deep linear network's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache

import jax.numpy as jnp
import numpy as np


def product(params: dict[str, jnp.ndarray], exponents: Sequence[int]) -> jnp.ndarray:
    """P(w) = ∏ w_i^{p_i} as a (1, 1) matrix."""
    p = jnp.asarray(exponents, dtype=params["w"].dtype)
    return jnp.prod(params["w"] ** p).reshape(1, 1)


@cache  # one pair per exponent tuple: compiled samplers are keyed on them (lambda_hat.posterior)
def model_fns(exponents: tuple[int, ...]) -> tuple[Callable, Callable]:
    """(apply(params, x) = x P(w), P(params)) for these exponents."""

    def apply(params: dict[str, jnp.ndarray], x: jnp.ndarray) -> jnp.ndarray:
        return x @ product(params, exponents)

    def prod(params: dict[str, jnp.ndarray]) -> jnp.ndarray:
        return product(params, exponents)

    return apply, prod


def llc(exponents: Sequence[int]) -> float:
    """The learning coefficient at w* = 0: 1 / (2 max p_i)."""
    return 1.0 / (2.0 * max(exponents))


def w_star(exponents: Sequence[int]) -> dict[str, np.ndarray]:
    return {"w": np.zeros(len(exponents))}
