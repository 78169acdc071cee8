"""Fiber of the DLN multiplication map: stratum codimensions, top components, Hessian ranks, local λ."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import pytest

from lambda_hat.targets import fiber as F
from lambda_hat.targets.aoyagi import aoyagi_lambda
from lambda_hat.targets.dln import make_teacher, num_params


def _all_lace_diagrams(widths: tuple[int, ...]) -> Iterator[dict[tuple[int, int], int]]:
    """Every lace diagram (interval-module multiplicities) with this dimension vector.

    At each vertex, choose how many of the strands alive at the previous vertex (grouped by their
    start) continue; the rest of the width is new strands starting here.
    """
    n_v = len(widths)

    def rec(i: int, alive: dict[int, int], done: dict[tuple[int, int], int]) -> Iterator[dict[tuple[int, int], int]]:
        if i == n_v:
            out = dict(done)
            for a, c in alive.items():
                out[(a, n_v - 1)] = out.get((a, n_v - 1), 0) + c
            yield out
            return
        starts = sorted(alive)
        for cont in itertools.product(*(range(alive[a] + 1) for a in starts)):
            if sum(cont) > widths[i]:
                continue
            nxt_done, nxt_alive = dict(done), {}
            for a, c in zip(starts, cont):
                if alive[a] - c:
                    nxt_done[(a, i - 1)] = alive[a] - c
                if c:
                    nxt_alive[a] = c
            if widths[i] - sum(cont):
                nxt_alive[i] = widths[i] - sum(cont)
            yield from rec(i + 1, nxt_alive, nxt_done)

    yield from rec(0, {}, {})


def _codim_via_end(widths: tuple[int, ...], laces: dict[tuple[int, int], int]) -> int:
    """Independent route: dim End(M) − Euler form ⟨n, n⟩ + dim of the rank-r matrices."""

    def hom(i: tuple[int, int], j: tuple[int, int]) -> int:
        (a, b), (c, d) = i, j
        return int(c <= a <= d <= b)

    end = sum(m1 * m2 * hom(i, j) for i, m1 in laces.items() for j, m2 in laces.items())
    euler = sum(n * n for n in widths) - sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    r = laces.get((0, len(widths) - 1), 0)
    return end - euler + r * (widths[0] + widths[-1] - r)


def _numeric_orbit_codim(params: list[np.ndarray]) -> int:
    """d − dim(stratum) with dim(stratum) = dim(GL-orbit) − dim(rank-r matrices), all numerically.

    The orbit's tangent space is the image of X ↦ (−X_{i−1} W_i + W_i X_i)_i over ⊕ gl(n_i).
    """
    widths = F.widths_of(params)
    d = num_params(widths)
    offs = np.cumsum([0] + [w.size for w in params])
    cols = []
    for v, n in enumerate(widths):
        for p, q in itertools.product(range(n), repeat=2):
            x = np.zeros((n, n))
            x[p, q] = 1.0
            col = np.zeros(d)
            if v >= 1:  # W_v (into vertex v) picks up W_v X
                col[offs[v - 1] : offs[v]] += (params[v - 1] @ x).ravel()
            if v < len(params):  # W_{v+1} (out of vertex v) picks up −X W_{v+1}
                col[offs[v] : offs[v + 1]] -= (x @ params[v]).ravel()
            cols.append(col)
    orbit_dim = int(np.linalg.matrix_rank(np.stack(cols, axis=1), tol=1e-8))
    r = F.partial_product_ranks(params)[(0, len(params))]
    return d - (orbit_dim - r * (widths[0] + widths[-1] - r))


# ----------------------------------------------------------------------------------------------
# the [5, 5, 5] examples from the issue


def test_five_five_five_top_component_rank_21() -> None:
    assert F.top_component_rank_pattern([5, 5, 5], 1) == {(0, 1): 3, (1, 2): 3, (0, 2): 1}
    teacher = F.make_top_component_teacher([5, 5, 5], 1, np.random.default_rng(0))
    info = F.hessian_rank_check(teacher)
    assert info["hessian_rank"] == 21 and info["expected_rank"] == 21 and info["orbit_codim"] == 21
    assert info["top_component"] and info["morse_bott"] and info["matches_aoyagi"]
    assert info["gap"] > 1e8
    assert F.local_llc(teacher) == 10.5 == aoyagi_lambda([5, 5, 5], 1)


def test_five_five_five_first_layer_rank_one_is_not_top_rank_25() -> None:
    # dln.make_teacher imposes the rank on the first layer: ranks (1, 5), another component.
    teacher = make_teacher([5, 5, 5], 1, np.random.default_rng(0))
    assert F.partial_product_ranks(teacher) == {(0, 1): 1, (1, 2): 5, (0, 2): 1}
    info = F.hessian_rank_check(teacher)
    assert info["hessian_rank"] == 25 and info["orbit_codim"] == 25 and info["expected_rank"] == 21
    assert not info["top_component"] and not info["matches_aoyagi"]
    # Rank = stratum codimension: the fiber is a codim-25 manifold there, Morse–Bott, λ = 12.5.
    assert info["morse_bott"]
    assert F.local_llc(teacher) == 12.5


def test_singular_points_have_no_certified_llc() -> None:
    # All-zero weights: the Hessian vanishes but the stratum has codimension d.
    zero = [np.zeros((5, 5)), np.zeros((5, 5))]
    info = F.hessian_rank_check(zero)
    assert info["hessian_rank"] == 0 and info["orbit_codim"] == 50 and not info["morse_bott"]
    assert F.local_llc(zero) is None
    # Lau et al.-style teacher (each layer truncated to rank 1): ranks (1, 1), Hessian rank 9 < codim 41.
    rng = np.random.default_rng(3)
    layers = []
    for _ in range(2):
        u, s, vt = np.linalg.svd(rng.normal(size=(5, 5)))
        layers.append(s[0] * np.outer(u[:, 0], vt[0]))
    info = F.hessian_rank_check(layers)
    assert info["ranks"] == {(0, 1): 1, (1, 2): 1, (0, 2): 1}
    assert info["hessian_rank"] == 9 == info["jacobian_rank_formula"] and info["orbit_codim"] == 41
    assert F.local_llc(layers) is None


# ----------------------------------------------------------------------------------------------
# codimension formula


def test_codimension_formula_against_end_route_and_brute_force_minimum() -> None:
    """Ext¹ sum == End − Euler on every stratum; the minimum over strata is 2·aoyagi (LR24 §8)."""
    cases = [w for k in (2, 3, 4) for w in itertools.product(range(1, 5), repeat=k)]
    cases += [(2, 3, 3, 2, 2), (3, 2, 4, 2, 3), (2, 2, 2, 2, 2)]
    strata = 0
    for widths in cases:
        best: dict[int, int] = {}
        for laces in _all_lace_diagrams(widths):
            ranks = F.ranks_from_laces(widths, laces)
            c = F.orbit_codimension(widths, ranks)
            assert c == _codim_via_end(widths, laces), (widths, laces)
            assert F.jacobian_rank_formula(widths, ranks) <= c
            r = ranks[(0, len(widths) - 1)]
            best[r] = min(best.get(r, c), c)
            strata += 1
        for r, c in best.items():
            assert c == pytest.approx(2 * aoyagi_lambda(widths, r)), (widths, r)
            # The constructed pattern attains the minimum.
            assert F.orbit_codimension(widths, F.top_component_rank_pattern(widths, r)) == c
    assert strata > 5000


def test_codimension_formula_matches_numerical_orbit_dimension() -> None:
    """On random points of random strata: formula == numerical codim; numerical d(mult) rank == its formula."""
    rng = np.random.default_rng(5)
    checked = 0
    while checked < 30:
        n_v = int(rng.integers(2, 6))
        intervals = [(a, b) for a in range(n_v) for b in range(a, n_v)]
        laces = {iv: int(rng.integers(1, 3)) for iv in intervals if rng.random() < 0.35}
        widths = [sum(mu for (a, b), mu in laces.items() if a <= i <= b) for i in range(n_v)]
        if min(widths) == 0 or max(widths) > 7:
            continue
        params = F.teacher_from_laces(widths, laces, rng)
        ranks = F.partial_product_ranks(params)
        assert ranks == F.ranks_from_laces(widths, laces)
        assert F.lace_multiplicities(widths, ranks) == laces
        assert F.orbit_codimension(widths, ranks) == _numeric_orbit_codim(params), laces
        jac_rank = int(np.linalg.matrix_rank(F.product_jacobian(params), tol=1e-8))  # layers have norm ~1
        assert jac_rank == F.jacobian_rank_formula(widths, ranks) <= F.orbit_codimension(widths, ranks)
        assert F.hessian_rank_check(params)["hessian_rank"] == jac_rank
        checked += 1


def test_unrealisable_rank_data_is_rejected() -> None:
    # Product rank 2 through a rank-1 layer is impossible.
    with pytest.raises(ValueError):
        F.orbit_codimension([3, 3, 3], {(0, 1): 1, (1, 2): 3, (0, 2): 2})
    with pytest.raises(ValueError):
        F.orbit_codimension([3, 3, 3], {(0, 1): 1, (1, 2): 3})


# ----------------------------------------------------------------------------------------------
# top components


def test_top_pattern_codimension_is_twice_aoyagi_on_all_small_widths() -> None:
    checked = 0
    for k in range(2, 6):
        for widths in itertools.product(range(1, 7), repeat=k):
            for r in range(min(widths) + 1):
                pattern = F.top_component_rank_pattern(widths, r)
                c = F.orbit_codimension(widths, pattern)
                assert c == pytest.approx(2 * aoyagi_lambda(widths, r)), (widths, r)
                assert pattern[(0, k - 1)] == r
                # Jacobian rank = codimension: Morse–Bott on the top component.
                assert F.jacobian_rank_formula(widths, pattern) == c, (widths, r)
                checked += 1
    assert checked > 20000


def test_top_pattern_on_random_large_widths() -> None:
    rng = np.random.default_rng(2)
    for _ in range(300):
        widths = [int(v) for v in rng.integers(1, 80, size=rng.integers(2, 9))]
        r = int(rng.integers(0, min(widths) + 1))
        pattern = F.top_component_rank_pattern(widths, r)
        c = F.orbit_codimension(widths, pattern)
        assert c == pytest.approx(2 * aoyagi_lambda(widths, r)), (widths, r)
        assert F.jacobian_rank_formula(widths, pattern) == c


def test_bottlenecks_and_examples() -> None:
    # [5,5,5], r = 1: every vertex is a bottleneck; 12 strands split 6 + 6 over the two stretches.
    assert F.bottleneck_set([5, 5, 5], 1) == [0, 1, 2]
    # A wide middle layer is not a bottleneck: both layers full rank, im W1 ⊂ ker W2.
    assert F.bottleneck_set([2, 10, 3], 0) == [0, 2]
    assert F.top_component_rank_pattern([2, 10, 3], 0) == {(0, 1): 2, (1, 2): 3, (0, 2): 0}
    assert F.orbit_codimension([2, 10, 3], F.top_component_rank_pattern([2, 10, 3], 0)) == 6


@pytest.mark.parametrize(
    "widths,rank",
    [
        ([5, 5, 5], 0),
        ([5, 5, 5], 3),
        ([4, 2, 5, 3], 1),
        ([3, 7, 2, 6], 0),
        ([6, 6, 6, 6, 6], 2),
        ([8, 3, 9, 4, 7], 2),
        ([10, 10], 4),
        ([4, 6, 6, 6, 4], 4),
        ([3, 8, 8, 8, 3], 0),
    ],
)
def test_top_teachers_are_generic_points_with_exact_product_rank(widths: list[int], rank: int) -> None:
    rng = np.random.default_rng(sum(widths) + rank)
    teacher = F.make_top_component_teacher(widths, rank, rng)
    assert [w.shape for w in teacher] == list(zip(widths[:-1], widths[1:]))
    ranks = F.partial_product_ranks(teacher)
    assert ranks == F.top_component_rank_pattern(widths, rank)
    prod = np.linalg.multi_dot(teacher) if len(teacher) > 1 else teacher[0]
    sv = np.linalg.svd(prod, compute_uv=False)
    assert np.sum(sv > 1e-8) == rank and (rank == 0 or sv[rank - 1] > 1e-3)
    # N(0, 1/fan_in)-like scale for every nonzero layer.
    for w in teacher:
        if np.any(w):
            assert np.mean(w**2) == pytest.approx(1.0 / w.shape[0])
    info = F.hessian_rank_check(teacher)
    assert info["hessian_rank"] == info["expected_rank"] == round(2 * aoyagi_lambda(widths, rank))
    assert info["top_component"] and info["morse_bott"] and info["gap"] > 1e8
    assert F.local_llc(teacher) == pytest.approx(aoyagi_lambda(widths, rank))


def test_zero_map_teacher() -> None:
    rng = np.random.default_rng(11)
    teacher = F.make_top_component_teacher([5, 5, 5], 0, rng)
    prod = teacher[0] @ teacher[1]
    assert np.max(np.abs(prod)) < 1e-12
    assert all(np.linalg.matrix_rank(w) in (2, 3) for w in teacher)  # nonzero layers, ranks 2 + 3
    info = F.hessian_rank_check(teacher)
    assert info["product_rank"] == 0 and info["hessian_rank"] == 19 == info["expected_rank"]
    assert F.local_llc(teacher) == 9.5


def test_data_covariance() -> None:
    rng = np.random.default_rng(4)
    teacher = F.make_top_component_teacher([5, 5, 5], 1, rng)
    x = rng.normal(size=(200, 5))
    info = F.hessian_rank_check(teacher, x)
    assert info["hessian_rank"] == 21
    # Fewer samples than inputs: Σ is singular, the empirical Hessian loses rank, no certified λ.
    few = x[:3]
    assert F.hessian_rank_check(teacher, few)["hessian_rank"] < 21
    assert F.local_llc(teacher, few) is None
    assert F.local_llc(teacher, x) == 10.5


def test_lanczos_and_gram_agree_with_dense_on_a_medium_case() -> None:
    rng = np.random.default_rng(7)
    teacher = F.make_top_component_teacher([16, 3, 16, 16], 0, rng)
    dense = F.hessian_rank_check(teacher, method="dense")
    lanczos = F.hessian_rank_check(teacher, method="lanczos")
    gram = F.hessian_rank_check(teacher, method="gram")
    assert dense["method"] == "dense" and lanczos["method"] == "lanczos" and gram["method"] == "gram"
    assert dense["hessian_rank"] == lanczos["hessian_rank"] == gram["hessian_rank"] == dense["expected_rank"] == 45
    assert gram["smallest_kept"] == pytest.approx(dense["smallest_kept"], rel=1e-6)
    assert lanczos["gap"] > 1e6
    assert lanczos["smallest_kept"] == pytest.approx(dense["smallest_kept"], rel=1e-6)
    # And on a non-top point (first-layer rank imposed), both see the larger rank.
    other = make_teacher([8, 8, 8], 2, rng)
    d2 = F.hessian_rank_check(other, method="dense")
    l2 = F.hessian_rank_check(other, method="lanczos")
    assert d2["hessian_rank"] == l2["hessian_rank"] == d2["orbit_codim"] > d2["expected_rank"]
    g2 = F.hessian_rank_check(other, method="gram")
    assert g2["hessian_rank"] == d2["hessian_rank"]
    # the measured-ranks formula (auto for large in x out and d) agrees with the numerics
    assert F.hessian_rank_check(other, method="formula")["hessian_rank"] == d2["hessian_rank"]
    assert F.hessian_rank_check(teacher, method="formula")["hessian_rank"] == dense["hessian_rank"]
    assert d2["morse_bott"] and math.isclose(F.local_llc(other), d2["hessian_rank"] / 2)
    # auto: the (n_0 n_L)² matrix at these widths.
    assert F.hessian_rank_check(other)["method"] == "gram"
