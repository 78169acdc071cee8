"""Cholesky factor and triangular solves of small (r x r) matrices, in plain JAX operations.

Why hand-written: inside the VI fit's compiled step, jaxlib 0.10's batched LAPACK kernels
(``lapack_spotrf_ffi`` and the triangular solves) split their batch over the XLA CPU thread pool
(``ParallelBatchMap``) and block until it is done. When XLA runs two such kernels at once on a
2-thread pool, both threads wait for work only they could do: the fit hangs for good, idle
(``vi.rank=64`` with 4 fits on 2 cores; gdb shows both pool threads in
``BlockingCounter::Wait`` under ``CholeskyFactorization``). These loops lower to ordinary XLA
operations, so nothing waits on the pool. They cost O(r³) per matrix like LAPACK, in r vectorised
steps, and r is the MFA rank or the flow's latent size (tens), so the loop overhead is small.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cholesky(a: jax.Array) -> jax.Array:
    """Lower-triangular L with L Lᵀ = a, for a symmetric positive definite (r, r) a."""
    n = a.shape[-1]
    rows = jnp.arange(n)

    def column(j: jax.Array, low: jax.Array) -> jax.Array:
        # Columns ≥ j of `low` are still zero, so low @ low[j] sums over k < j only.
        v = a[:, j] - low @ low[j]
        return low.at[:, j].set(jnp.where(rows >= j, v / jnp.sqrt(v[j]), 0.0))

    return jax.lax.fori_loop(0, n, column, jnp.zeros_like(a))


def solve_lower(low: jax.Array, b: jax.Array) -> jax.Array:
    """x with low @ x = b (forward substitution); b is (r,) or (r, m)."""

    def row(i: jax.Array, x: jax.Array) -> jax.Array:
        return x.at[i].set((b[i] - low[i] @ x) / low[i, i])  # rows ≥ i of x are still zero

    return jax.lax.fori_loop(0, low.shape[-1], row, jnp.zeros_like(b))


def solve_upper(up: jax.Array, b: jax.Array) -> jax.Array:
    """x with up @ x = b (back substitution); b is (r,) or (r, m)."""
    n = up.shape[-1]

    def row(k: jax.Array, x: jax.Array) -> jax.Array:
        i = n - 1 - k
        return x.at[i].set((b[i] - up[i] @ x) / up[i, i])  # rows ≤ i of x are still zero

    return jax.lax.fori_loop(0, n, row, jnp.zeros_like(b))


def cho_solve(low: jax.Array, b: jax.Array) -> jax.Array:
    """x with (low lowᵀ) x = b, given the Cholesky factor low."""
    return solve_upper(low.T, solve_lower(low, b))
