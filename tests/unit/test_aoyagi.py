"""The DLN learning coefficient (Aoyagi 2024) and the teacher it is evaluated at."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lambda_hat.targets.aoyagi import aoyagi_lambda, aoyagi_watanabe_two_layer
from lambda_hat.targets.dln import (
    make_teacher,
    num_params,
    product_rank,
)


def test_matches_two_layer_formula_on_all_small_shapes() -> None:
    checked = 0
    for m, h, n in itertools.product(range(1, 10), repeat=3):
        for r in range(0, min(m, h, n) + 1):
            assert aoyagi_lambda([m, h, n], r) == pytest.approx(aoyagi_watanabe_two_layer(m, h, n, r)), (m, h, n, r)
            checked += 1
    assert checked > 1000


def test_matches_two_layer_formula_on_random_large_shapes() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        m, h, n = (int(v) for v in rng.integers(1, 200, size=3))
        r = int(rng.integers(0, min(m, h, n) + 1))
        assert aoyagi_lambda([m, h, n], r) == pytest.approx(aoyagi_watanabe_two_layer(m, h, n, r))


@pytest.mark.parametrize("widths", [[3, 5], [7, 2], [10, 10], [1, 4]])
def test_one_layer_full_rank_is_half_the_dimension(widths: list[int]) -> None:
    assert aoyagi_lambda(widths, min(widths)) == num_params(widths) / 2


def test_known_deep_values_and_bounds() -> None:
    # Full-rank square product: only the H1*H_{L+1} product entries count, λ = 10*10/2.
    assert aoyagi_lambda([10, 20, 20, 10], 10) == 50.0
    rng = np.random.default_rng(1)
    for _ in range(300):
        widths = [int(v) for v in rng.integers(1, 30, size=rng.integers(3, 8))]
        r = int(rng.integers(0, min(widths) + 1))
        lam = aoyagi_lambda(widths, r)
        # λ is at most d/2 and at least the regular part of the rank-r product.
        assert lam <= num_params(widths) / 2 + 1e-9
        assert lam >= (r * (widths[0] + widths[-1]) - r * r) / 2 - 1e-9


def test_rank_outside_range_is_rejected() -> None:
    with pytest.raises(ValueError):
        aoyagi_lambda([3, 2, 4], 3)


@pytest.mark.parametrize("widths,rank", [([10, 20, 15, 10], 4), ([5, 3, 8], 1), ([6, 6, 6, 6, 6], None)])
def test_teacher_has_requested_rank_in_float64(widths: list[int], rank: int | None) -> None:
    teacher = make_teacher(widths, rank, np.random.default_rng(3))
    assert [w.shape for w in teacher] == list(zip(widths[:-1], widths[1:]))
    assert product_rank(teacher) == (min(widths) if rank is None else rank)
