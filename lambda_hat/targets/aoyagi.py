"""Aoyagi's closed-form learning coefficient of a deep linear network at a teacher of given rank.

Its own module: the DLN target (lambda_hat.targets.dln) and the fiber analysis
(lambda_hat.targets.fiber) both use it, and neither imports the other for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


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
