"""Deep linear networks: teacher, forward map and Aoyagi's closed-form learning coefficient."""

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


def aoyagi_bottlenecks(widths: Sequence[int], rank: int) -> list[int]:
    """Aoyagi's set S as its sorted values m_i = H_i − r: the k smallest, for the smallest k with
    max S < min(rest), sum S >= (k−1) max S and sum S < (k−1) min(rest) (S = all always qualifies)."""
    m = sorted(int(hi) - int(rank) for hi in widths)
    for k in range(1, len(m) + 1):
        s_set, rest = m[:k], m[k:]
        ell, total = k - 1, sum(s_set)
        if rest and not max(s_set) < min(rest):
            continue
        if not total >= ell * max(s_set):
            continue
        if rest and not total < ell * min(rest):
            continue
        return s_set
    raise RuntimeError(f"no admissible set S for widths {list(widths)}, rank {rank}")  # unreachable


def aoyagi_lambda(widths: Sequence[int], rank: int) -> float:
    """Learning coefficient of a deep linear network at a teacher of the given product rank.

    Aoyagi (2024, Neural Networks), which reduces to Aoyagi & Watanabe (2005) for two layers.
    With M_i = H_i - r, S is the set of the k smallest M_i for the smallest k satisfying the
    conditions below, l = k - 1, s = sum_S M, Mbar = ceil(s / l), a = s - (Mbar - 1) l.
    """
    h = list(widths)
    r = int(rank)
    if not 0 <= r <= min(h):
        raise ValueError(f"rank {r} outside [0, {min(h)}] for widths {h}")
    chosen = aoyagi_bottlenecks(h, r)
    ell = len(chosen) - 1
    s = sum(chosen)
    base = (-(r**2) + r * (h[0] + h[-1])) / 2.0
    if ell == 0:
        return base
    m_bar = math.ceil(s / ell)
    a = s - (m_bar - 1) * ell
    pairs = sum(chosen[i] * chosen[j] for i in range(len(chosen)) for j in range(i + 1, len(chosen)))
    return base + a * (ell - a) / (4.0 * ell) - ell * (ell - 1) / 4.0 * (s / ell) ** 2 + 0.5 * pairs


def aoyagi_watanabe_two_layer(m: int, h: int, n: int, r: int) -> float:
    """Reduced-rank regression (input M, hidden H, output N, rank r), Aoyagi & Watanabe 2005."""
    if n + r <= m + h and m + r <= n + h and h + r <= m + n:
        num = 2 * (h + r) * (m + n) - (m - n) ** 2 - (h + r) ** 2
        return (num + (1 if (m + h + n + r) % 2 else 0)) / 8.0
    if m + h < n + r:
        return (h * m - h * r + n * r) / 2.0
    if n + h < m + r:
        return (h * n - h * r + m * r) / 2.0
    return m * n / 2.0
