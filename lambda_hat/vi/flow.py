"""Normalizing-flow VI (``sampler=vi vi=flow``): a flowjax flow on a k-dimensional subspace and a
diagonal Gaussian on its complement, exact and O(d·k) per draw, so it scales to d = 1e5 and beyond.

The family, over the driver's whitened coordinates x ∈ R^d (lambda_hat/vi/base.py):

    x = H u,   u = [z; y],   z ~ q_flow on R^k,   y ~ N(m, diag s²) on R^(d−k),
    H = H_1 H_2 ⋯ H_k,   H_i = I − 2 v_i v_iᵀ / |v_i|²   (k Householder reflections: orthogonal)

so log q(x) = log q_flow(z) + log N(y; m, s²) with [z; y] = Hᵀ x, since |det H| = 1: the density
is exact. H's first k columns span the flow's subspace; its other columns are e_j minus a rank-k
correction, so on the complement q is a mean-field Gaussian in (nearly) the driver's own axes.
The reflections start so that H's first k columns are a random orthonormal basis (QR of a Gaussian
d×k matrix; ``subspace: random``) and are learnt with everything else (``learn_subspace: false``
keeps them fixed). The flow (flowjax, built with invert=False so that sampling, the VI hot path,
is the fast direction) is ``affine`` (RealNVP affine coupling), ``maf`` (masked autoregressive,
affine transformer; its inverse, used by log_q only, is k sequential passes) or ``rqs``
(rational-quadratic spline coupling: neural spline flow), then a per-coordinate affine map
(loc 0, scale init_scale at the start).

H is applied in compact WY form, H = I − Vᵀ T⁻¹ V with V the k×d stack of v_i and
T = striu(V Vᵀ) + diag(V Vᵀ)/2 upper triangular (Puglisi 1992; Joffrain et al. 2006, "Accumulating
Householder transformations, revisited"): two d×k products per draw, T⁻¹ formed once per step.

Cost, with S draws per step and P flow parameters (P ≈ layers·(k/2 + 1)·nn_width + layers·nn_width
·(k/2)·p for coupling flows, p = 2 for affine, 3·knots + 1 for rqs; MAF has k in place of k/2):
- memory: φ holds (k + 2)·d + P floats (V, the complement's loc and scale, the flow); Adam keeps two
  more copies. A step holds the S·d draws and their S·k projections V x; no d×d array anywhere.
- time per step: ≈ 4·S·k·d flops for H, O(S·P) for the flow, O(S·d) for the Gaussian, O(k²·d) for
  V Vᵀ (once per step): linear in d. The model's own minibatch gradients (S per step) usually cost
  more. The O(d·k²) set-up of the reflections runs once, at init.

flowjax, equinox and paramax come with the optional extra ``vi``: the config check
(lambda_hat.config.require_extra) stops a run without them in one line (exit 2), and importing
this module without them raises the same MissingExtraError.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from lambda_hat.config import ConfigError, MissingExtraError

try:
    import equinox as eqx
    import flowjax.bijections as fb
    import flowjax.flows as ff
    import paramax
    from flowjax.distributions import StandardNormal, Transformed
except ImportError as e:  # the optional extra `vi` is not installed
    raise MissingExtraError("vi=flow", "vi") from e

from lambda_hat.vi import small_linalg  # noqa: E402
from lambda_hat.vi.base import Params, VIFamily  # noqa: E402  (after the extra's check)


def subspace_reflectors(basis: jax.Array) -> jax.Array:
    """Householder vectors v_1..v_k (rows of a (k, d) array) with (H_1⋯H_k) e_i = ±basis[:, i].

    basis: (d, k) with orthonormal columns. Built column by column, O(d·k²): u_i' = H_{i−1}⋯H_1 u_i
    is orthogonal to e_1..e_{i−1}, and v_i = u_i' + sign(u_i'[i]) e_i reflects e_i onto ∓u_i' while
    fixing e_1..e_{i−1}; the sign keeps |v_i|² = 2 + 2|u_i'[i]| ≥ 2 (no cancellation).
    Hand-written because jnp.linalg.qr does not return its reflectors; loops, not unrolled, so
    the program stays small for large k.
    """
    k = basis.shape[1]

    def column(i: jax.Array, vs: jax.Array) -> jax.Array:
        def reflect(j: jax.Array, u: jax.Array) -> jax.Array:  # u' = H_{i−1}⋯H_1 u, H_1 first
            return u - 2.0 * vs[j] * (vs[j] @ u) / (vs[j] @ vs[j])

        u = jax.lax.fori_loop(0, i, reflect, basis[:, i])
        return vs.at[i].set(u.at[i].add(jnp.where(u[i] >= 0, 1.0, -1.0).astype(u.dtype)))

    return jax.lax.fori_loop(0, k, column, jnp.zeros((k, basis.shape[0]), basis.dtype))


def _wy_factors(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(V, T⁻¹) of the compact WY form H_1⋯H_k = I − Vᵀ T⁻¹ V (module docstring)."""
    gram = v @ v.T
    t = jnp.triu(gram, 1) + jnp.diag(jnp.diag(gram)) / 2
    return v, small_linalg.solve_upper(t, jnp.eye(t.shape[0], dtype=t.dtype))  # not LAPACK: see small_linalg


class HouseholderProduct(fb.AbstractBijection):
    """x ↦ H_1⋯H_k x for k Householder vectors (rows of V), in compact WY form: O(d·k) per point.

    Written here because flowjax's Householder normalises its vector with a paramax
    Parameterize, which a Scan over a vmapped stack (its documented use) normalises by the norm
    of the whole stack, so the stacked layers are not reflections (flowjax 19.1.2, paramax 0.0.5).
    The T⁻¹ factor is a Parameterize too: paramax.unwrap computes it once per call of a
    distribution method, not once per draw.
    """

    shape: tuple[int, ...]
    factors: Any  # Parameterize(_wy_factors, V) -> (V, T⁻¹) after unwrap
    cond_shape = None

    def __init__(self, vectors: jax.Array, trainable: bool = True) -> None:
        self.shape = (vectors.shape[1],)
        self.factors = paramax.Parameterize(_wy_factors, vectors if trainable else paramax.NonTrainable(vectors))

    def transform_and_log_det(self, x: jax.Array, condition: jax.Array | None = None):
        v, t_inv = self.factors
        return x - v.T @ (t_inv @ (v @ x)), jnp.zeros((), x.dtype)

    def inverse_and_log_det(self, y: jax.Array, condition: jax.Array | None = None):
        v, t_inv = self.factors  # H⁻¹ = Hᵀ = I − Vᵀ T⁻ᵀ V
        return y - v.T @ (t_inv.T @ (v @ y)), jnp.zeros((), y.dtype)


def _flow_bijection(key: jax.Array, cfg: Any, k: int) -> fb.AbstractBijection:
    """The k-dimensional flow: flowjax coupling / MAF layers, then a per-coordinate affine map."""
    common = dict(
        base_dist=StandardNormal((k,)),
        flow_layers=int(cfg.layers),
        nn_width=int(cfg.nn_width),
        nn_depth=int(cfg.nn_depth),
        invert=False,
    )
    if cfg.flow == "affine":
        flow = ff.coupling_flow(key, **common)
    elif cfg.flow == "maf":
        flow = ff.masked_autoregressive_flow(key, **common)
    else:
        spline = fb.RationalQuadraticSpline(knots=int(cfg.knots), interval=float(cfg.interval))
        flow = ff.coupling_flow(key, transformer=spline, **common)
    return fb.Chain([flow.bijection, fb.Affine(jnp.zeros(k), float(cfg.init_scale) * jnp.ones(k))])


def make_distribution(key: jax.Array, cfg: Any, d: int) -> Transformed:
    """q as one flowjax distribution over R^d (module docstring); key draws the flow's weights and
    the initial subspace."""
    k = int(cfg.latent_dim)
    k_flow, k_sub = jax.random.split(key)
    flow = _flow_bijection(k_flow, cfg, k)
    if k < d:
        complement = fb.Affine(jnp.zeros(d - k), float(cfg.init_scale) * jnp.ones(d - k))
        flow = fb.Concatenate([flow, complement])
    basis, _ = jnp.linalg.qr(jax.random.normal(k_sub, (d, k)))
    rotation = HouseholderProduct(subspace_reflectors(basis), trainable=bool(cfg.learn_subspace))
    return Transformed(StandardNormal((d,)), fb.Chain([flow, rotation]))


def _parts(q: Transformed) -> tuple[fb.Chain, fb.Affine | None]:
    """(the flow's chain on z, the complement's Affine or None when k = d)."""
    first = q.bijection.bijections[0]
    if isinstance(first, fb.Concatenate):
        return first.bijections[0], first.bijections[1]
    return first, None


def build(vi_cfg: Any, d: int) -> VIFamily:
    """The flow family of a vi=flow config over d coordinates; call it in the run's precision scope
    (flowjax's coupling layers keep their set-up dtype).

    φ is every inexact array of the flowjax distribution (equinox partition: conditioner weights,
    spline/affine parameters, V, the complement's loc and unconstrained scale); the static rest
    (permutations, shapes, functions) is closed over. With learn_subspace=false V stays in φ behind
    paramax.NonTrainable (stop_gradient), so optax sees a zero gradient; weight decay could only
    rescale V, which leaves every reflection unchanged.
    """
    # The other keys are checked with the config (lambda_hat/config.py); d is known only here.
    if int(vi_cfg.latent_dim) > d:
        raise ConfigError("vi.latent_dim", vi_cfg.latent_dim, f"must be <= the number of parameters d = {d}")
    # The template fixes the static structure; init draws its own arrays (same tree) from its key.
    # Built eagerly: flowjax's coupling layers close over arrays, so the static part cannot come
    # out of a jit trace.
    _, static = eqx.partition(make_distribution(jax.random.key(0), vi_cfg, d), eqx.is_inexact_array)

    def dist(params: Params) -> Transformed:
        return paramax.unwrap(eqx.combine(params, static))

    @jax.jit  # one program instead of flowjax's many eager set-up operations
    def init(key: jax.Array) -> Params:
        params, _ = eqx.partition(make_distribution(key, vi_cfg, d), eqx.is_inexact_array)
        dtype = jnp.zeros(()).dtype  # the run's precision (x64 scope or not)
        return jax.tree.map(lambda a: a.astype(dtype), params)

    def sample(params: Params, key: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
        return dist(params).sample_and_log_prob(key, (num,))

    def log_q(params: Params, x: jax.Array) -> jax.Array:
        return dist(params).log_prob(x)

    def diagnostics(params: Params) -> dict[str, jax.Array]:
        flow, complement = _parts(dist(params))
        out = {"flow_scale": jnp.exp(jnp.mean(jnp.log(flow.bijections[-1].scale)))}
        if complement is not None:  # geometric means: one number per part
            out["complement_scale"] = jnp.exp(jnp.mean(jnp.log(complement.scale)))
        return out

    return VIFamily(init=init, sample=sample, log_q=log_q, diagnostics=diagnostics)
