"""Deep linear networks: teacher and forward map (Aoyagi's closed-form λ: lambda_hat.targets.aoyagi)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

Params = list  # list of weight matrices, layer i of shape (H_i, H_{i+1}): y = x @ W_1 @ ... @ W_L


def forward(params: Params, x: jnp.ndarray) -> jnp.ndarray:
    """Apply the network to a batch of inputs x of shape (batch, H1)."""
    for w in params:
        x = x @ w
    return x


def product(params: Params) -> jnp.ndarray:
    """The network's input-output matrix P = W_1 @ ... @ W_L (forward(params, x) = x @ P)."""
    prod = params[0]
    for w in params[1:]:
        prod = prod @ w
    return prod


def num_params(widths: Sequence[int]) -> int:
    return sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def product_rank(params: Sequence[np.ndarray]) -> int:
    """Rank of W_1 ... W_L in float64 (float32 can show a rank above the narrowest width), with a
    tolerance relative to the factors' norms, so that a product that is zero up to rounding has rank 0."""
    from lambda_hat.targets.fiber import partial_product_ranks

    return partial_product_ranks(params)[(0, len(params))]


def make_teacher(widths: Sequence[int], true_rank: int | None, rng: np.random.Generator) -> list[np.ndarray]:
    """Random teacher, entries N(0, 1/fan_in); if true_rank is set the product has exactly that rank.

    The rank is imposed on the first layer as a product of two Gaussian factors (H1 x r)(r x H2);
    the remaining layers are generic, so the full product has rank r almost surely (checked in
    float64, redrawn otherwise).
    """
    for _ in range(100):
        params = [rng.normal(0.0, 1.0 / math.sqrt(a), size=(a, b)) for a, b in zip(widths[:-1], widths[1:])]
        if true_rank is not None and true_rank < min(widths):
            h1, h2 = widths[0], widths[1]
            left = rng.normal(0.0, 1.0, size=(h1, true_rank))
            right = rng.normal(0.0, 1.0, size=(true_rank, h2))
            params[0] = (left @ right) / math.sqrt(h1 * true_rank)
        want = min(widths) if true_rank is None else true_rank
        if product_rank(params) == want:
            return params
    raise RuntimeError(f"could not draw a teacher of rank {want} for widths {list(widths)}")


def truncated_teacher(widths: Sequence[int], rank: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Every layer a random N(0, 1/fan_in) matrix truncated (SVD) to rank `rank`, as Lau et al.'s
    reduced-rank experiments draw them; the product has rank `rank` almost surely (checked)."""
    for _ in range(100):
        params = []
        for a, b in zip(widths[:-1], widths[1:]):
            u, sv, vt = np.linalg.svd(rng.normal(0.0, 1.0 / math.sqrt(a), size=(a, b)), full_matrices=False)
            sv[rank:] = 0.0
            params.append((u * sv) @ vt)
        if product_rank(params) == rank:
            return params
    raise RuntimeError(f"could not draw a truncated teacher of rank {rank} for widths {list(widths)}")
