"""Geometry of the fiber of a deep linear network's multiplication map, and where λ is exact.

A DLN with widths ``n_0, ..., n_L`` (layer i of shape ``(n_{i-1}, n_i)``, ``y = x @ W_1 @ ... @ W_L``)
is a representation of the linearly oriented quiver A_{L+1}: vertex i carries R^{n_i}. The fiber
mult⁻¹(B) over a rank-r matrix B splits into orbit strata indexed by the ranks
``r_ij = rank(W_{i+1} ... W_j)`` (Lehalleur & Rimányi 2024, arXiv:2411.19920, §3).

Rank data ⟷ lace diagram. A representation is a direct sum of interval modules ("laces") [a, b]
(a strand that enters at vertex a and dies after vertex b); the multiplicities are recovered from
the ranks by inclusion–exclusion, ``μ_ab = r_ab − r_{a−1,b} − r_{a,b+1} + r_{a−1,b+1}``
(with r_ii = n_i and out-of-range terms 0), and a rank array is realisable iff all μ ≥ 0.

Codimension of a stratum (derived here, checked numerically in tests/unit/test_fiber.py). With O the
orbit of the full group ∏ GL(n_i) in the parameter space Rep and M_r the rank-r matrices,
O → M_r is an equivariant surjection, so the stratum O ∩ mult⁻¹(B) has dimension
dim O − dim M_r and codimension (in the d-dimensional parameter space)

    codim = dim Ext¹(M, M) + r (n_0 + n_L − r),                 (Voigt: codim_Rep O = dim Ext¹)

    dim Ext¹(M, M) = Σ_{I, J} μ_I μ_J ε(I, J),   ε([a,b], [c,d]) = 1 iff a < c ≤ b + 1 ≤ d,

i.e. one extension for every ordered pair of laces where the second starts strictly later, no
later than one step after the first ends, and ends strictly later. Equivalently
dim End(M) − ⟨n, n⟩ with the Euler form ⟨n, n⟩ = Σ n_i² − Σ n_{i−1} n_i.

Top component. The r full-length laces [0, L] have no extensions, so only the part N with
dimension vector m_i = n_i − r and zero product matters. Write S for the bottleneck vertices of
Aoyagi's formula (the smallest m_i, ℓ = |S| − 1, s = Σ_S m_i). Use only laces from vertex 0
("prefix" laces, p_e of them alive at the e-th bottleneck) and laces to vertex L ("suffix", q_e),
so m_{i_e} = p_e + q_e; then ε counts Σ_e p_e q_{e+1} − Σ_e p_e q_e, which equals
½(Σ_e t_e² − Σ_{i∈S} m_i²) with t_e = p_e + q_{e+1} the number of strands on the e-th stretch
between consecutive bottlenecks (Σ t_e = s). This is minimal when the t_e are as equal as possible
(⌈s/ℓ⌉ or ⌊s/ℓ⌋), which is feasible because Aoyagi's condition s ≥ ℓ·max_S m_i gives
t_e ≥ max(m_{i_e}, m_{i_{e+1}}); the value is exactly 2·aoyagi_lambda. Non-bottleneck vertices
(m_j > s/ℓ) just let the t_e strands through and carry extra generic laces of their own, which
have no extensions with anything else. The paper shows that the RLCT is C/2 with C the minimal
codimension (§8), i.e. C = 2·aoyagi; tests/unit/test_fiber.py checks C = 2·aoyagi by enumerating every
stratum of small widths and checks the formula against numerical orbit dimensions.

One module, over the 400-line guide, because it is one derivation: the lace combinatorics, the
top-component teacher built from it and the Hessian-rank check that certifies λ at that teacher
use the same rank data and notation, and read best next to the argument above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lambda_hat.targets.aoyagi import aoyagi_bottlenecks, aoyagi_lambda

Ranks = dict[tuple[int, int], int]  # (i, j) -> rank of W_{i+1} ... W_j, 0 <= i < j <= L
Laces = dict[tuple[int, int], int]  # (a, b) -> multiplicity of the interval module [a, b]

DENSE_MAX_PARAMS = 5000
RANK_RTOL = 1e-10  # relative threshold on singular values of partial products


# ----------------------------------------------------------------------------------------------
# rank data and lace diagrams


def _as_f64(params: Sequence[Any]) -> list[np.ndarray]:
    return [np.asarray(w, dtype=np.float64) for w in params]


def widths_of(params: Sequence[Any]) -> list[int]:
    """Widths n_0, ..., n_L of a DLN given as its weight matrices."""
    ws = _as_f64(params)
    return [ws[0].shape[0]] + [w.shape[1] for w in ws]


def _rank(mat: np.ndarray, scale: float) -> int:
    """Numerical rank with a tolerance relative to `scale` (the product of the factors' norms).

    A tolerance relative to the matrix's own largest singular value would call a product that is
    zero up to rounding (≈ 1e-16) full rank.
    """
    if mat.size == 0 or scale == 0.0:
        return 0
    sv = np.linalg.svd(mat, compute_uv=False)
    return int(np.sum(sv > RANK_RTOL * scale))


def partial_product_ranks(params: Sequence[Any]) -> Ranks:
    """r_ij = rank(W_{i+1} @ ... @ W_j) for 0 <= i < j <= L, in float64.

    Singular values count when above RANK_RTOL times the product of the factors' spectral norms.
    """
    ws = _as_f64(params)
    norms = [float(np.linalg.norm(w, 2)) if w.size else 0.0 for w in ws]
    out: Ranks = {}
    for i in range(len(ws)):
        prod, scale = ws[i], norms[i]
        out[(i, i + 1)] = _rank(prod, scale)
        for j in range(i + 1, len(ws)):
            prod, scale = prod @ ws[j], scale * norms[j]
            out[(i, j + 1)] = _rank(prod, scale)
    return out


def _full_ranks(widths: Sequence[int], ranks: Ranks) -> dict[tuple[int, int], int]:
    """ranks plus the diagonal r_ii = n_i."""
    full = {(i, i): int(n) for i, n in enumerate(widths)}
    full.update({k: int(v) for k, v in ranks.items()})
    return full


def lace_multiplicities(widths: Sequence[int], ranks: Ranks) -> Laces:
    """Multiplicities μ_ab of the interval modules [a, b]; ValueError if the ranks are not realisable."""
    n_v = len(widths)
    full = _full_ranks(widths, ranks)
    missing = [(i, j) for i in range(n_v) for j in range(i + 1, n_v) if (i, j) not in full]
    if missing:
        raise ValueError(f"rank data lacks {missing}")

    def r(i: int, j: int) -> int:
        return full[(i, j)] if 0 <= i <= j < n_v else 0

    laces: Laces = {}
    for a in range(n_v):
        for b in range(a, n_v):
            mu = r(a, b) - r(a - 1, b) - r(a, b + 1) + r(a - 1, b + 1)
            if mu < 0:
                raise ValueError(f"rank data not realisable (multiplicity of [{a},{b}] is {mu})")
            if mu:
                laces[(a, b)] = mu
    return laces


def ranks_from_laces(widths: Sequence[int], laces: Laces) -> Ranks:
    """r_ij = number of laces covering [i, j]; checks that the laces fill every vertex exactly."""
    n_v = len(widths)
    for i in range(n_v):
        cover = sum(mu for (a, b), mu in laces.items() if a <= i <= b)
        if cover != widths[i]:
            raise ValueError(f"laces give dimension {cover} at vertex {i}, width is {widths[i]}")
    return {(i, j): sum(mu for (a, b), mu in laces.items() if a <= i and b >= j) for i in range(n_v) for j in range(i + 1, n_v)}


def _ext(i: tuple[int, int], j: tuple[int, int]) -> int:
    """dim Ext¹([a,b], [c,d]) for the linearly oriented A_n quiver: 1 iff a < c <= b+1 <= d."""
    (a, b), (c, d) = i, j
    return 1 if a < c <= b + 1 <= d else 0


def _hom(i: tuple[int, int], j: tuple[int, int]) -> int:
    """dim Hom([a,b], [c,d]): 1 iff c <= a <= d <= b (image = quotient of one, submodule of other)."""
    (a, b), (c, d) = i, j
    return 1 if c <= a <= d <= b else 0


def ext_self(laces: Laces) -> int:
    """dim Ext¹(M, M) = codimension of the orbit of M in the space of all weights."""
    items = list(laces.items())
    return sum(m1 * m2 * _ext(i, j) for i, m1 in items for j, m2 in items)


def end_dim(laces: Laces) -> int:
    """dim End(M); dim Ext¹(M, M) = dim End(M) − ⟨n, n⟩ (Euler form), a second route to ext_self."""
    items = list(laces.items())
    return sum(m1 * m2 * _hom(i, j) for i, m1 in items for j, m2 in items)


def orbit_codimension(widths: Sequence[int], ranks: Ranks) -> int:
    """Codimension in weight space (dimension d) of the stratum of mult⁻¹(B) with these ranks.

    codim = dim Ext¹(M, M) + r (n_0 + n_L − r), r = r_{0L} the rank of the product (module doc).
    Over a fixed B of rank r this is d − dim(stratum); the local λ at any point of the stratum is
    at most codim / 2.
    """
    w = [int(v) for v in widths]
    laces = lace_multiplicities(w, ranks)
    r = _full_ranks(w, ranks)[(0, len(w) - 1)]
    return ext_self(laces) + r * (w[0] + w[-1] - r)


def jacobian_rank_formula(widths: Sequence[int], ranks: Ranks) -> int:
    """Rank of d(mult) at any point with these ranks: Σ_a (p_a − p_{a+1}) q_a.

    d(mult)(δW) = Σ_a A_{<a} δW_a A_{>a}; its image is Σ_a col(A_{<a}) ⊗ row(A_{>a}), a sum of
    tensor products of a decreasing flag (p_a = rank W_1..W_{a-1}) and an increasing one
    (q_a = rank W_{a+1}..W_L). It depends only on prefix and suffix ranks, so it is at most the
    stratum codimension and generally smaller on lower strata (it is 0 at w = 0).
    """
    w = [int(v) for v in widths]
    n_l = len(w) - 1
    full = _full_ranks(w, ranks)
    p = [full[(0, a - 1)] for a in range(1, n_l + 1)] + [0]  # p[a-1] = rank W_1..W_{a-1}
    q = [full[(a, n_l)] for a in range(1, n_l + 1)]  # q[a-1] = rank W_{a+1}..W_L
    return sum((p[a] - p[a + 1]) * q[a] for a in range(n_l))


# ----------------------------------------------------------------------------------------------
# the top component


def bottleneck_set(widths: Sequence[int], rank: int) -> list[int]:
    """Vertex indices of Aoyagi's set S (the k smallest m_i = n_i − r, ties all in or all out)."""
    thr = max(aoyagi_bottlenecks(widths, rank))
    return [i for i, v in enumerate(widths) if int(v) - int(rank) <= thr]


def top_component_laces(widths: Sequence[int], rank: int) -> Laces:
    """Lace diagram of a generic point of a top-dimensional component of mult⁻¹(rank-r matrix).

    Layout (module doc): r laces [0, L]; bottlenecks i_0 < ... < i_ℓ; ℓ stretches carrying
    t_e ∈ {⌈s/ℓ⌉, ⌈s/ℓ⌉ − 1} strands (the ⌈⌉ ones first); prefix laces [0, i_{e+1} − 1] (δ_e of them,
    dying just before bottleneck e+1) and suffix laces [i_{e−1} + 1, L] (born just after bottleneck
    e−1); the surplus at non-bottleneck vertices forms a generic representation of each run of
    consecutive non-bottleneck vertices.
    """
    w = [int(v) for v in widths]
    r = int(rank)
    n_l = len(w) - 1
    if n_l < 1:
        raise ValueError("need at least two widths (one layer)")
    if not 0 <= r <= min(w):
        raise ValueError(f"rank {r} outside [0, {min(w)}] for widths {w}")
    m = [v - r for v in w]
    bott = bottleneck_set(w, r)
    ell = len(bott) - 1
    ms = [m[i] for i in bott]
    s = sum(ms)
    m_bar = -(-s // ell)  # ceil(s / ell)
    a = s - (m_bar - 1) * ell
    t = [m_bar] * a + [m_bar - 1] * (ell - a)
    # Feasibility (Aoyagi's s >= ell * max_S m): every stretch carries at least its ends' strands.
    assert all(t[e] >= max(ms[e], ms[e + 1]) for e in range(ell)), (w, r, t, ms)
    # Prefix strands: p_0 = m at the first bottleneck, δ_e = t_e − m_{i_{e+1}} die on stretch e.
    p = [ms[0]]
    for e in range(ell):
        p.append(p[-1] - (t[e] - ms[e + 1]))
    q = [ms[e] - p[e] for e in range(ell + 1)]
    assert p[-1] == 0 and q[0] == 0 and min(p) >= 0 and min(q) >= 0

    laces: Laces = {}

    def add(iv: tuple[int, int], mu: int) -> None:
        if mu:
            laces[iv] = laces.get(iv, 0) + mu

    add((0, n_l), r)
    for e in range(ell):
        add((0, bott[e + 1] - 1), p[e] - p[e + 1])  # prefix laces dying on stretch e
        add((bott[e] + 1, n_l), q[e + 1] - q[e])  # suffix laces born on stretch e

    # Strands through each non-bottleneck vertex, and the surplus left for free laces there.
    surplus = [0] * (n_l + 1)
    for j in range(n_l + 1):
        if j in bott:
            continue
        if j < bott[0]:
            through = p[0]
        elif j > bott[-1]:
            through = q[-1]
        else:
            e = max(k for k in range(ell) if bott[k] < j)
            through = t[e]
        surplus[j] = m[j] - through
        assert surplus[j] >= 0, (w, r, j)
    # Each maximal run of non-bottleneck vertices gets the generic (rigid) representation of its
    # surplus dimension vector: ranks min(surplus over [i, j]).
    j = 0
    while j <= n_l:
        if j in bott:
            j += 1
            continue
        start = j
        while j + 1 <= n_l and j + 1 not in bott:
            j += 1
        run = surplus[start : j + 1]

        def rr(i: int, k: int, run: list[int] = run) -> int:
            return min(run[i : k + 1]) if 0 <= i <= k < len(run) else 0

        for x in range(len(run)):
            for y in range(x, len(run)):
                add((start + x, start + y), rr(x, y) - rr(x - 1, y) - rr(x, y + 1) + rr(x - 1, y + 1))
        j += 1
    return laces


def top_component_rank_pattern(widths: Sequence[int], rank: int) -> Ranks:
    """Rank data r_ij of a top-dimensional component of the fiber over a rank-`rank` matrix.

    Its orbit_codimension equals 2 * aoyagi_lambda(widths, rank), the minimal codimension. Example:
    widths [5, 5, 5], rank 1 → both layers of rank 3 (codim 21, λ = 10.5), whereas dln.make_teacher's
    pattern (first layer rank 1, second invertible) has codim 25. See top_component_laces for the layout.
    """
    return ranks_from_laces([int(v) for v in widths], top_component_laces(widths, rank))


# ----------------------------------------------------------------------------------------------
# teachers


def _well_conditioned(n: int, rng: np.random.Generator) -> np.ndarray:
    """Random invertible n x n matrix with singular values in [0.5, 1.5] (keeps ranks numerically clear)."""
    if n == 0:
        return np.zeros((0, 0))
    q1, _ = np.linalg.qr(rng.normal(size=(n, n)))
    q2, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (q1 * rng.uniform(0.5, 1.5, size=n)) @ q2


def teacher_from_laces(widths: Sequence[int], laces: Laces, rng: np.random.Generator) -> list[np.ndarray]:
    """A random point of the orbit with this lace diagram, each layer scaled to mean square 1/fan_in.

    The canonical representation sends each lace's basis vector at vertex i−1 to the same lace's at
    vertex i; a random change of basis g_i at every vertex (W_i → g_{i−1}⁻¹ W_i g_i) moves it to a
    random point of the same orbit, and a nonzero scalar per layer keeps all ranks.
    """
    w = [int(v) for v in widths]
    ranks_from_laces(w, laces)  # validates the dimensions
    index: list[dict[tuple[int, int, int], int]] = [{} for _ in w]
    for (a, b), mu in sorted(laces.items()):
        for copy in range(mu):
            for i in range(a, b + 1):
                index[i][(a, b, copy)] = len(index[i])
    params = []
    for i in range(1, len(w)):
        mat = np.zeros((w[i - 1], w[i]))
        for key, row in index[i - 1].items():
            if key in index[i]:
                mat[row, index[i][key]] = 1.0
        params.append(mat)
    g = [_well_conditioned(n, rng) for n in w]
    out = []
    for i, mat in enumerate(params):
        mat = np.linalg.solve(g[i], mat) @ g[i + 1]
        fro2 = float(np.sum(mat**2))
        if fro2 > 0:  # mean square entry 1/fan_in: ‖W‖_F² = n_{i-1} n_i / n_{i-1}
            mat *= math.sqrt(w[i + 1] / fro2)
        out.append(mat)
    return out


def make_top_component_teacher(widths: Sequence[int], rank: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random teacher at a generic point of a top component of the fiber over its product.

    The product has rank exactly `rank` (0 allowed: zero product, layers generally nonzero), the
    partial-product ranks are top_component_rank_pattern(widths, rank), so the local λ at the
    teacher equals aoyagi_lambda(widths, rank). dln.make_teacher (rank imposed on the first layer)
    and Lau et al.'s teachers (each layer truncated to rank r) generally sit on other strata,
    where the local λ can be larger (local_llc / hessian_rank_check tell).
    """
    return teacher_from_laces(widths, top_component_laces(widths, rank), rng)


# ----------------------------------------------------------------------------------------------
# Hessian of the population loss at w*


def _prefixes_suffixes(ws: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A_{<i} = W_1..W_{i-1} (n_0 x n_{i-1}) and A_{>i} = W_{i+1}..W_L (n_i x n_L), 0-based i."""
    pre = [np.eye(ws[0].shape[0])]
    for w in ws[:-1]:
        pre.append(pre[-1] @ w)
    suf = [np.eye(ws[-1].shape[1])]
    for w in reversed(ws[1:]):
        suf.append(w @ suf[-1])
    return pre, suf[::-1]


def product_jacobian(params: Sequence[Any]) -> np.ndarray:
    """Dense Jacobian of vec(W_1 ... W_L) (row-major, n_0 n_L rows) w.r.t. the flattened layers."""
    ws = _as_f64(params)
    pre, suf = _prefixes_suffixes(ws)
    # vec(A dW B) = (A ⊗ Bᵀ) vec(dW) for row-major vec.
    return np.concatenate([np.kron(a, b.T) for a, b in zip(pre, suf)], axis=1)


GRAM_MAX_SIZE = 3000  # n_0 n_L up to which the Hessian rank comes from the (n_0 n_L)² matrix


def _input_cov(x: np.ndarray | None, n0: int) -> np.ndarray:
    if x is None:  # population with isotropic inputs: the rank is that of d(mult)
        return np.eye(n0)
    x = np.asarray(x, dtype=np.float64)
    return x.T @ x / x.shape[0]


def hessian_rank_check(
    params: Sequence[Any],
    x: np.ndarray | None = None,
    *,
    method: str = "auto",
    rtol: float = 1e-10,
) -> dict[str, Any]:
    """Rank of the float64 Hessian at w* of L(w) = mean_{samples, outputs} (x P(w) − x P(w*))².

    At w* the residual vanishes, so H = (2 / n_L) Jᵀ (Σ ⊗ I) J with J the Jacobian of the product
    map and Σ = xᵀx / n (identity when x is None: the population loss with isotropic inputs; any
    full-rank Σ gives the same rank). Eigenvalues above rtol · (2/n_L) ‖Σ‖ max_i ∏_{j≠i} ‖W_j‖² count
    (an a-priori bound on the scale of H, so that rounding noise at a point where H = 0 is not counted).

    method: "gram" (eigenvalues of the small (n_0 n_L)² matrix (Σ^½⊗I) J Jᵀ (Σ^½⊗I), which has
    the same nonzero eigenvalues as H; J Jᵀ = Σ_i (A_{<i} A_{<i}ᵀ) ⊗ (A_{>i}ᵀ A_{>i}) needs no
    d-sized matrix, so its cost depends on the input and output widths only), "dense" (SVD of
    (Σ^½ ⊗ I) J), "lanczos" (scipy eigsh on the matrix-free H v, asking for the top codim + 10
    eigenvalues — the stratum codimension bounds the rank; dense if that is nearly d), or "auto"
    (gram when n_0 n_L <= 3000, else dense for d <= 5000, else "formula": the rank of d(mult)
    from the measured partial-product ranks, Σ_a (p_a − p_{a+1}) q_a).

    Returns hessian_rank, expected_rank (2·aoyagi at the product's rank), orbit_codim (of the
    stratum through w*), jacobian_rank_formula, top_component (w*'s stratum has the minimal
    codimension 2·aoyagi), morse_bott (rank == orbit_codim: the fiber is a manifold of that
    codimension at w* and the loss is Morse–Bott there), matches_aoyagi (rank == expected_rank),
    gap (λ_k / λ_{k+1}, inf when nothing is cut), smallest_kept (λ_k / λ_max), method, ranks.
    """
    ws = _as_f64(params)
    widths = widths_of(ws)
    d = sum(w.size for w in ws)
    n0, n_out = widths[0], widths[-1]
    cov = _input_cov(x, n0)
    ranks = partial_product_ranks(ws)
    prod_rank = ranks[(0, len(ws))]
    codim = orbit_codimension(widths, ranks)
    expected = int(round(2 * aoyagi_lambda(widths, prod_rank)))  # 2λ = C is an integer
    if method == "auto":
        if n0 * n_out <= GRAM_MAX_SIZE:
            method = "gram"
        else:
            # Beyond, Lanczos needs up to n_0 n_L eigenvalues of a d x d operator (minutes); the
            # rank of d(mult) then comes from the measured partial-product ranks (the formula the
            # numerical methods are tested against), which is exact for the same Σ-generic case.
            method = "dense" if d <= DENSE_MAX_PARAMS else "formula"
    if method == "formula":
        k = jacobian_rank_formula(widths, ranks)
        return {
            "hessian_rank": k,
            "expected_rank": expected,
            "orbit_codim": codim,
            "jacobian_rank_formula": k,
            "top_component": codim == expected,
            "morse_bott": k == codim,
            "matches_aoyagi": k == expected,
            "gap": float("inf"),
            "smallest_kept": float("nan"),
            "method": "formula",
            "product_rank": prod_rank,
            "ranks": ranks,
        }
    k_lanczos = min(codim, n0 * n_out, d) + 10  # rank J <= stratum codim: T(stratum) ⊆ ker J
    if method == "lanczos" and k_lanczos >= d - 1:  # ARPACK needs k < d; dense is cheaper then
        method = "dense"
    if method == "dense":
        evals_c, evecs_c = np.linalg.eigh(cov)
        sqrt_cov = (evecs_c * np.sqrt(np.clip(evals_c, 0.0, None))) @ evecs_c.T
        jac = product_jacobian(ws)  # (n0 * n_out, d), rows (a, b) row-major
        # (Σ^½ ⊗ I) J without forming the Kronecker product: Σ^½ acts on the input index a.
        weighted = np.tensordot(sqrt_cov, jac.reshape(n0, n_out, d), axes=1).reshape(n0 * n_out, d)
        sv = np.linalg.svd(weighted, compute_uv=False)
        eig = np.sort(2.0 / n_out * sv**2)[::-1]
    elif method == "gram":
        evals_c, evecs_c = np.linalg.eigh(cov)
        sqrt_cov = (evecs_c * np.sqrt(np.clip(evals_c, 0.0, None))) @ evecs_c.T
        pre, suf = _prefixes_suffixes(ws)
        # row-major vec: J_i = A_{<i} ⊗ A_{>i}ᵀ, so J_i J_iᵀ = (A_{<i} A_{<i}ᵀ) ⊗ (A_{>i}ᵀ A_{>i})
        jjt = sum(np.kron(sqrt_cov @ a @ a.T @ sqrt_cov, b.T @ b) for a, b in zip(pre, suf))
        eig = np.sort(np.clip(2.0 / n_out * np.linalg.eigvalsh(jjt), 0.0, None))[::-1]
    elif method == "lanczos":
        eig = _lanczos_top(ws, cov, n_out, k=k_lanczos)
    else:
        raise ValueError(f"unknown method {method!r}")
    lam_max = float(eig[0]) if eig.size else 0.0
    # Threshold against an a-priori scale, not λ_max: at a point where J vanishes (e.g. w = 0) the
    # computed eigenvalues are pure rounding and a relative cut would call them full rank.
    norms = [float(np.linalg.norm(w, 2)) if w.size else 0.0 for w in ws]
    jac_scale = max(math.prod(norms[:i] + norms[i + 1 :]) for i in range(len(norms)))  # ≥ ‖J_i‖₂
    ref = 2.0 / n_out * float(np.linalg.eigvalsh(cov)[-1]) * jac_scale**2
    k = int(np.sum(eig > rtol * ref)) if ref > 0 else 0
    gap = float("inf") if k == 0 or k >= eig.size or eig[k] <= 0 else float(eig[k - 1] / eig[k])
    return {
        "hessian_rank": k,
        "expected_rank": expected,
        "orbit_codim": codim,
        "jacobian_rank_formula": jacobian_rank_formula(widths, ranks),
        "top_component": codim == expected,
        "morse_bott": k == codim,
        "matches_aoyagi": k == expected,
        "gap": gap,
        "smallest_kept": float(eig[k - 1] / lam_max) if k else float("nan"),
        "method": method,
        "product_rank": prod_rank,
        "ranks": ranks,
    }


def _lanczos_top(ws: list[np.ndarray], cov: np.ndarray, n_out: int, k: int) -> np.ndarray:
    """Top-k eigenvalues of H = (2/n_out) Jᵀ (Σ⊗I) J, applied matrix-free (J v, then Jᵀ u)."""
    from scipy.sparse.linalg import LinearOperator, eigsh  # scipy comes with jax

    pre, suf = _prefixes_suffixes(ws)
    shapes = [w.shape for w in ws]
    sizes = [w.size for w in ws]
    offsets = np.cumsum([0] + sizes)
    d = int(offsets[-1])

    def matvec(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64).ravel()
        # JVP: dP = Σ_i A_{<i} dW_i A_{>i}; weight by Σ; VJP: dW_i = A_{<i}ᵀ (Σ dP) A_{>i}ᵀ.
        dp = sum(a @ v[o : o + s].reshape(sh) @ b for a, b, o, s, sh in zip(pre, suf, offsets, sizes, shapes))
        u = cov @ dp * (2.0 / n_out)
        return np.concatenate([(a.T @ u @ b.T).ravel() for a, b in zip(pre, suf)])

    op = LinearOperator((d, d), matvec=matvec, dtype=np.float64)
    vals = eigsh(op, k=k, which="LA", return_eigenvectors=False, v0=np.ones(d))
    return np.sort(vals)[::-1]


def local_llc(params: Sequence[Any], x: np.ndarray | None = None) -> float | None:
    """The local learning coefficient λ(w*) of the population loss where it is provably known, else None.

    Requires a full-rank input covariance (then the loss is comparable to ‖P(w) − P(w*)‖², which has
    the same local RLCT, and its zero set is the fiber Z = mult⁻¹(P(w*))). Two cases:

    1. w*'s stratum has codimension C = 2·aoyagi, the minimum (a top component). No stratum of
       larger dimension exists to contain it in its closure, so it is open in Z: near w*, Z is a
       codim-C manifold and K = O(dist(·, Z)²), hence λ(w*) ≤ C/2. And λ(w*) ≥ the global RLCT of
       the fiber, which is C/2 (Lehalleur & Rimányi §8; equal to Aoyagi's λ, which
       tests/unit/test_fiber.py checks by enumerating strata). So λ(w*) = aoyagi.
    2. Hessian rank k equals the stratum codimension c. Choose k product entries with independent
       differentials: they cut out a codim-k manifold N ⊇ Z ⊇ stratum; the stratum has the same
       dimension, hence is open in N, so Z = N near w* and d(mult) has constant rank k along it.
       K is then Morse–Bott along Z (nondegenerate Hessian on the normal bundle), so λ(w*) = k/2
       (e.g. [5,5,5], first layer rank 1, second invertible: k = c = 25, λ = 12.5 > aoyagi 10.5).

    Otherwise (k < c: w* is a singular point of the fiber, e.g. all-zero weights) return None.
    """
    ws = _as_f64(params)
    cov = _input_cov(x, ws[0].shape[0])
    if np.linalg.matrix_rank(cov) < cov.shape[0]:
        return None
    return local_llc_from_check(hessian_rank_check(ws, x))


def local_llc_from_check(info: dict[str, Any]) -> float | None:
    """local_llc from a hessian_rank_check result (computed with a full-rank input covariance)."""
    if info["top_component"]:
        return info["expected_rank"] / 2.0
    if info["morse_bott"]:
        return info["hessian_rank"] / 2.0
    return None
