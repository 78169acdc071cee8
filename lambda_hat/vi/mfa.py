"""Mixture of factor analysers (MFA): q(z) = Σ_m π_m N(z; μ_m, D_m + K_m K_mᵀ), π = softmax(logits).

Each component has its own diagonal D_m = diag(exp(2 ρ_m)) and low-rank factor K_m (d x r_m).
Densities use the Woodbury identity and the matrix determinant lemma, in O(d r²) per component
and never a d x d matrix:

    Σ⁻¹ = D⁻¹ − D⁻¹K C⁻¹ KᵀD⁻¹,   log det Σ = log det D + log det C,   C = I_r + KᵀD⁻¹K (r x r).

Per-component ranks r_m are stored as one (d, R) factor per component, R = max r_m, with the
columns past r_m masked to zero (one vmappable shape; a masked column adds nothing to Σ and a
unit row to C, so the density is exact).

Gradient estimator (``surrogate``): the ELBO is written as an exact expectation over components,

    ELBO = Σ_m π_m E_{ε}[log p(T_m(ε)) − log q(T_m(ε))],   T_m(ε) = μ_m + D_m^½ ε₁ + K_m ε₂,

and estimated with S reparameterised draws from *every* component (stratified). Its gradient is
unbiased for all parameters, weights included (they enter only through π_m and the mixture
density, both differentiable), with no score-function term; the cost is M·S minibatch gradients
per step (``draws_per_step``). log q is the density of the whole mixture, so the ELBO carries the
mixture's entropy, not only the weights'. A Dirichlet(α) prior on π adds (α − 1) Σ log π_m.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from lambda_hat.vi import small_linalg
from lambda_hat.vi.base import LogDensity, Params, VIFamily


def component_logpdf(mu: jax.Array, log_sd: jax.Array, factor: jax.Array, z: jax.Array) -> jax.Array:
    """log N(z; μ, diag(exp(2 log_sd)) + K Kᵀ) in O(d r²) (Woodbury, determinant lemma)."""
    d, r = factor.shape
    x = z - mu
    d_inv = jnp.exp(-2.0 * log_sd)
    u = x * d_inv
    c = jnp.eye(r, dtype=z.dtype) + factor.T @ (factor * d_inv[:, None])
    chol = small_linalg.cholesky(c)  # not jnp.linalg: see small_linalg
    y = small_linalg.solve_lower(chol, factor.T @ u)
    quad = x @ u - y @ y
    log_det = 2.0 * jnp.sum(log_sd) + 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    return -0.5 * (quad + log_det + d * math.log(2.0 * math.pi))


def component_logpdf_precision(mu: jax.Array, log_sd: jax.Array, factor: jax.Array, z: jax.Array) -> jax.Array:
    """log N(z; μ, Λ⁻¹) with precision Λ = diag(exp(−2 log_sd)) + K Kᵀ, in O(d r²)."""
    d, r = factor.shape
    x = z - mu
    var = jnp.exp(2.0 * log_sd)
    c = jnp.eye(r, dtype=z.dtype) + factor.T @ (factor * var[:, None])
    v = factor.T @ x
    quad = jnp.sum(x * x / var) + v @ v
    log_det_precision = -2.0 * jnp.sum(log_sd) + 2.0 * jnp.sum(jnp.log(jnp.diag(small_linalg.cholesky(c))))
    return 0.5 * (log_det_precision - quad - d * math.log(2.0 * math.pi))


def _factors(params: Params, mask: jax.Array) -> jax.Array:
    return params["factor"] * mask[:, None, :]


def log_q(params: Params, mask: jax.Array, z: jax.Array, precision: bool = False) -> jax.Array:
    """log q(z) of the whole mixture."""
    logpdf = component_logpdf_precision if precision else component_logpdf
    comp = jax.vmap(logpdf, in_axes=(0, 0, 0, None))(params["mu"], params["log_sd"], _factors(params, mask), z)
    return logsumexp(jax.nn.log_softmax(params["logits"]) + comp)


def _draw(params: Params, mask: jax.Array, m: jax.Array, key: jax.Array, num: int, precision: bool = False) -> jax.Array:
    """num reparameterised draws from component m.

    Covariance form: μ + D^½ ε₁ + K ε₂. Precision form (Λ = D⁻¹ + K Kᵀ): y = D^-½ ε₁ + K ε₂ has
    covariance Λ, so x = Λ⁻¹ y has covariance Λ⁻¹, with Λ⁻¹ y by Woodbury in O(d r²).
    """
    k1, k2 = jax.random.split(key)
    mu, log_sd, factor = params["mu"][m], params["log_sd"][m], _factors(params, mask)[m]
    eps1 = jax.random.normal(k1, (num, mu.shape[0]), mu.dtype)
    eps2 = jax.random.normal(k2, (num, factor.shape[1]), mu.dtype)
    if not precision:
        return mu + jnp.exp(log_sd) * eps1 + eps2 @ factor.T
    var = jnp.exp(2.0 * log_sd)
    y = jnp.exp(-log_sd) * eps1 + eps2 @ factor.T  # (num, d)
    c = jnp.eye(factor.shape[1], dtype=mu.dtype) + factor.T @ (factor * var[:, None])
    ey = y * var
    corr = small_linalg.cho_solve(small_linalg.cholesky(c), (ey @ factor).T).T  # (num, r)
    return mu + ey - (corr @ factor.T) * var


def build(vi_cfg: Any, d: int) -> VIFamily:
    """The MFA family of a vi=mfa config over d coordinates."""
    m_count = int(vi_cfg.components)
    ranks = [int(r) for r in vi_cfg.ranks] if vi_cfg.ranks is not None else [int(vi_cfg.rank)] * m_count
    r_max = max(ranks)
    alpha = float(vi_cfg.dirichlet_concentration)
    precision = vi_cfg.parameterization == "precision"
    init_scale, init_spread = float(vi_cfg.init_scale), float(vi_cfg.init_spread)

    def mask_of(dtype: Any) -> jax.Array:
        return (jnp.arange(r_max)[None, :] < jnp.asarray(ranks)[:, None]).astype(dtype)

    def init(key: jax.Array) -> Params:
        k_mu, k_f = jax.random.split(key)
        dtype = jnp.zeros(()).dtype  # the run's precision (x64 scope or not)
        # K = 0 is a stationary point of the ELBO in K (Σ depends on K Kᵀ): start off it.
        return {
            "logits": jnp.zeros(m_count, dtype),
            "mu": init_spread * jax.random.normal(k_mu, (m_count, d), dtype),
            "log_sd": jnp.full((m_count, d), math.log(init_scale), dtype),
            "factor": 0.1 * init_scale * jax.random.normal(k_f, (m_count, d, r_max), dtype),
        }

    def sample(params: Params, key: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
        mask = mask_of(params["mu"].dtype)
        k_m, k_z = jax.random.split(key)
        comps = jax.random.categorical(k_m, params["logits"], shape=(num,))
        z = jax.vmap(lambda m, k: _draw(params, mask, m, k, 1, precision)[0])(comps, jax.random.split(k_z, num))
        return z, jax.vmap(lambda x: log_q(params, mask, x, precision))(z)

    def surrogate(params: Params, key: jax.Array, logp: LogDensity, num: int) -> tuple[jax.Array, dict[str, jax.Array]]:
        mask = mask_of(params["mu"].dtype)
        keys = jax.random.split(key, m_count)
        z = jax.vmap(lambda m, k: _draw(params, mask, m, k, num, precision))(jnp.arange(m_count), keys)  # (M, S, d)
        flat = z.reshape(-1, d)
        f = (jax.vmap(logp)(flat) - jax.vmap(lambda x: log_q(params, mask, x, precision))(flat)).reshape(m_count, num)
        log_pi = jax.nn.log_softmax(params["logits"])
        elbo = jnp.sum(jnp.exp(log_pi) * jnp.mean(f, axis=1))
        prior = (alpha - 1.0) * jnp.sum(log_pi)
        return -(elbo + prior), {"elbo": elbo}

    def diagnostics(params: Params) -> dict[str, jax.Array]:
        pi = jax.nn.softmax(params["logits"])
        out = {
            "weight_entropy": -jnp.sum(pi * jnp.log(pi + 1e-30)),
            "weight_max": jnp.max(pi),
            "sd_mean": jnp.mean(jnp.exp(params["log_sd"])),
            "factor_norm": jnp.sqrt(jnp.sum(_factors(params, mask_of(pi.dtype)) ** 2)),
        }
        out |= {f"weight_{m}": pi[m] for m in range(m_count)}
        return out

    return VIFamily(
        init=init,
        sample=sample,
        log_q=lambda params, z: log_q(params, mask_of(params["mu"].dtype), z, precision),
        surrogate=surrogate,
        diagnostics=diagnostics,
        draws_per_step=lambda num: m_count * num,
    )
