"""The localized tempered posterior over a flat parameter vector.

    log p(w) = -n β L_n(w) - γ/2 |w - w*|²,   β = beta0 / log n

``Posterior`` is a pytree: data, w*, nβ, γ and L0 are array leaves, so jit-compiled samplers take
it as an argument (no large constants baked into the program, and changing γ or nβ does not
recompile); the loss function and sizes are static.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from lambda_hat.targets import Target, mse

FlatLoss = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def nbeta_for(n: int, beta0: float) -> float:
    """n·β with β = beta0 / log n (Watanabe's WBIC inverse temperature)."""
    return n * beta0 / math.log(n)


@dataclass(frozen=True)
class Posterior:
    x: jax.Array
    y: jax.Array
    w_star: jax.Array  # flat
    nbeta: jax.Array
    gamma: jax.Array
    L0: jax.Array  # L_n(w*) in the posterior's precision
    loss_fn: FlatLoss = field(metadata=dict(static=True))  # (w_flat, x, y) -> mean loss
    n: int = field(metadata=dict(static=True))
    d: int = field(metadata=dict(static=True))

    @property
    def dtype(self) -> jnp.dtype:
        return self.w_star.dtype

    def full_loss(self, w: jax.Array) -> jax.Array:
        """L_n(w) on the whole data set."""
        return self.loss_fn(w, self.x, self.y)

    def batch_loss(self, w: jax.Array, idx: jax.Array) -> jax.Array:
        """Mean loss on the rows idx (an unbiased estimate of L_n(w) for uniform idx)."""
        return self.loss_fn(w, self.x[idx], self.y[idx])

    def localization(self, w: jax.Array) -> jax.Array:
        return 0.5 * self.gamma * jnp.sum((w - self.w_star) ** 2)

    def logdensity(self, w: jax.Array) -> jax.Array:
        """Full-data log density (up to a constant)."""
        return -self.nbeta * self.full_loss(w) - self.localization(w)

    def llc_of_loss(self, loss: jax.Array) -> jax.Array:
        """The per-draw λ̂ contribution nβ (L(w) - L0)."""
        return self.nbeta * (loss - self.L0)


jax.tree_util.register_dataclass(Posterior)


def make_posterior(target: Target, beta0: float, gamma: float, dtype: str) -> Posterior:
    """Cast the target to ``dtype`` and flatten its parameters; call inside the dtype's x64 scope."""
    jdtype = jnp.dtype(dtype)
    template = jax.tree.map(lambda a: jnp.asarray(a, jdtype), target.w_star)
    w_star, unravel = ravel_pytree(template)
    apply = target.apply

    def loss_fn(w: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
        return mse(apply(unravel(w), x), y)

    x = jnp.asarray(target.x, jdtype)
    y = jnp.asarray(target.y, jdtype)
    n = int(x.shape[0])
    L0 = jax.jit(loss_fn)(w_star, x, y)
    return Posterior(
        x=x,
        y=y,
        w_star=w_star,
        nbeta=jnp.asarray(nbeta_for(n, beta0), jdtype),
        gamma=jnp.asarray(gamma, jdtype),
        L0=L0,
        loss_fn=loss_fn,
        n=n,
        d=int(w_star.size),
    )
