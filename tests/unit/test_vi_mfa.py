"""MFA maths: densities against dense references, ELBO gradients against exact ones, the
mixture-weight gradient estimator against quadrature, and the Pareto k̂ flag."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from lambda_hat.llc import pareto_khat
from lambda_hat.vi import mfa


def _family(d: int, parameterization: str, components: int = 3, rank: int = 2, ranks=None, alpha: float = 1.0):
    cfg = OmegaConf.create(
        dict(
            name="mfa",
            parameterization=parameterization,
            components=components,
            rank=rank,
            ranks=ranks,
            dirichlet_concentration=alpha,
            init_scale=0.7,
            init_spread=0.5,
        )
    )
    return mfa.build(cfg, d)


def _dense_cov(params, m: int, parameterization: str, mask: np.ndarray) -> np.ndarray:
    k = np.asarray(params["factor"][m], np.float64) * mask[m][None, :]
    diag = np.exp(2 * np.asarray(params["log_sd"][m], np.float64))
    if parameterization == "covariance":
        return np.diag(diag) + k @ k.T
    return np.linalg.inv(np.diag(1 / diag) + k @ k.T)


def _random_params(family, key, d: int):
    params = family.init(key)
    k1, k2, k3 = jax.random.split(jax.random.fold_in(key, 1), 3)
    params["logits"] = jax.random.normal(k1, params["logits"].shape)
    params["log_sd"] = params["log_sd"] + 0.3 * jax.random.normal(k2, params["log_sd"].shape)
    params["factor"] = params["factor"] + 0.5 * jax.random.normal(k3, params["factor"].shape)
    return params


@pytest.mark.parametrize("parameterization", ["covariance", "precision"])
def test_log_q_matches_a_dense_mixture_density(parameterization: str) -> None:
    from scipy.stats import multivariate_normal

    d, ranks = 6, [3, 1, 2]
    family = _family(d, parameterization, ranks=ranks)
    params = _random_params(family, jax.random.key(0), d)
    mask = (np.arange(3)[None, :] < np.asarray(ranks)[:, None]).astype(float)
    pi = np.asarray(jax.nn.softmax(params["logits"]), np.float64)
    zs = np.random.default_rng(0).normal(size=(5, d))
    got = jax.jit(jax.vmap(family.log_q, in_axes=(None, 0)))(params, jnp.asarray(zs, jnp.float32))
    for z, value in zip(zs, np.asarray(got)):
        dense = sum(
            pi[m] * multivariate_normal(np.asarray(params["mu"][m], np.float64), _dense_cov(params, m, parameterization, mask)).pdf(z) for m in range(3)
        )
        assert float(value) == pytest.approx(math.log(dense), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("parameterization", ["covariance", "precision"])
def test_draws_have_the_mixture_moments_and_their_density(parameterization: str) -> None:
    d = 4
    family = _family(d, parameterization, components=2, rank=2)
    params = _random_params(family, jax.random.key(1), d)
    z, log_q = jax.jit(family.sample, static_argnums=2)(params, jax.random.key(2), 20_000)
    mask = np.ones((2, 2))
    pi = np.asarray(jax.nn.softmax(params["logits"]), np.float64)
    mus = np.asarray(params["mu"], np.float64)
    mean = pi @ mus
    cov = sum(pi[m] * (_dense_cov(params, m, parameterization, mask) + np.outer(mus[m], mus[m])) for m in range(2)) - np.outer(mean, mean)
    z64 = np.asarray(z, np.float64)
    scale = np.sqrt(np.diag(cov))
    assert np.all(np.abs(z64.mean(0) - mean) < 5 * scale / math.sqrt(len(z64)))
    assert np.allclose(np.cov(z64.T), cov, atol=0.05 * np.max(np.abs(cov)))
    assert np.allclose(log_q[:10], jax.jit(jax.vmap(family.log_q, in_axes=(None, 0)))(params, z[:10]), atol=1e-4)


@pytest.mark.parametrize("parameterization", ["covariance", "precision"])
def test_elbo_gradient_is_the_exact_gradient_on_a_gaussian_target(parameterization: str) -> None:
    """One component, target N(0, A⁻¹): ELBO = −½(tr(AΣ) + μᵀAμ) + ½ log det Σ + const in closed
    form; the surrogate's gradient, averaged over draws, must match its gradient."""
    d = 3
    family = _family(d, parameterization, components=1, rank=2)
    params = _random_params(family, jax.random.key(3), d)
    a = jnp.asarray([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 3.0]])

    def logp(z):
        return -0.5 * z @ a @ z

    def exact(p):
        k = p["factor"][0]
        diag = jnp.exp(2 * p["log_sd"][0])
        cov = jnp.diag(diag) + k @ k.T if parameterization == "covariance" else jnp.linalg.inv(jnp.diag(1 / diag) + k @ k.T)
        mu = p["mu"][0]
        return -0.5 * (jnp.trace(a @ cov) + mu @ a @ mu) + 0.5 * jnp.linalg.slogdet(cov)[1]

    def surrogate_grad(key):
        return jax.grad(lambda p: family.surrogate(p, key, logp, 64)[0])(params)

    grads = jax.jit(jax.vmap(surrogate_grad))(jax.random.split(jax.random.key(4), 100))
    want = jax.jit(jax.grad(exact))(params)
    for name in ("mu", "log_sd", "factor"):
        g = -np.asarray(grads[name], np.float64)  # the surrogate is −ELBO
        mean, se = g.mean(0), g.std(0) / math.sqrt(g.shape[0])
        assert np.all(np.abs(mean - np.asarray(want[name])) < 5 * se + 1e-3), name


def test_mixture_weight_gradient_is_unbiased_against_quadrature() -> None:
    """d = 1, two components, a bimodal target: the exact ELBO (quadrature on a fine grid, whole
    mixture entropy included) and its gradient in the logits; the stratified estimator's mean
    gradient must agree within its Monte Carlo error."""
    family = _family(1, "covariance", components=2, rank=1, alpha=1.0)
    params = {
        "logits": jnp.asarray([0.4, -0.3]),
        "mu": jnp.asarray([[-1.0], [1.5]]),
        "log_sd": jnp.asarray([[-0.5], [-0.2]]),
        "factor": jnp.asarray([[[0.3]], [[0.2]]]),
    }

    def logp(z):
        z = z[0]
        return jnp.logaddexp(jnp.log(0.3) - 0.5 * (z + 1.2) ** 2 / 0.25, jnp.log(0.7) - 0.5 * (z - 1.0) ** 2)

    grid = jnp.linspace(-12.0, 12.0, 24_001)

    def exact(p):
        lq = jax.vmap(lambda x: family.log_q(p, x[None]))(grid)
        lp = jax.vmap(lambda x: logp(x[None]))(grid)
        return jnp.trapezoid(jnp.exp(lq) * (lp - lq), grid)

    want = np.asarray(jax.jit(jax.grad(exact))(params)["logits"])
    grads = jax.jit(jax.vmap(lambda k: jax.grad(lambda p: family.surrogate(p, k, logp, 16)[0])(params)["logits"]))(jax.random.split(jax.random.key(5), 1000))
    g = -np.asarray(grads, np.float64)
    mean, se = g.mean(0), g.std(0) / math.sqrt(g.shape[0])
    assert np.all(np.abs(mean - want) < 5 * se), (mean, want, se)
    assert np.all(np.abs(want) > 10 * se)  # the check has power: the gradient is far from 0


def test_dirichlet_prior_pulls_weights_together() -> None:
    family = _family(2, "precision", components=3, rank=1, alpha=5.0)
    params = family.init(jax.random.key(0))
    params["logits"] = jnp.asarray([2.0, 0.0, -2.0])
    flat = _family(2, "precision", components=3, rank=1, alpha=1.0)

    @jax.jit
    def grads(p):
        def loss(f):
            return lambda p: f.surrogate(p, jax.random.key(1), lambda z: -0.5 * z @ z, 1)[0]

        return jax.grad(loss(family))(p)["logits"], jax.grad(loss(flat))(p)["logits"]

    g, g0 = grads(params)
    # (α − 1) Σ log π_m: its gradient in the logits is (α − 1)(1 − M π), pushing towards uniform
    pi = jax.nn.softmax(params["logits"])
    assert np.allclose(-(g - g0), 4.0 * (1 - 3 * pi), atol=1e-4)


def test_pareto_khat_flags_a_too_narrow_q() -> None:
    rng = np.random.default_rng(0)

    # q = N(0, σ²), p = N(0, 1): log p − log q at draws of q
    def ratios(sigma, n=4000):
        z = sigma * rng.normal(size=n)
        return -0.5 * z**2 + 0.5 * (z / sigma) ** 2 + math.log(sigma)

    # q wider than p: bounded ratios, k̂ < 0; q narrower (σ = 0.3): log ratio = ½ N² (1 − σ²),
    # a Pareto tail with k = 1 − σ² = 0.91
    wide, narrow = pareto_khat(np.stack([ratios(1.2), ratios(0.3)]))
    assert wide < 0.5 and narrow > 0.7
    assert np.isnan(pareto_khat(np.asarray([[0.0, np.nan, 1.0]]))[0])
    assert np.isnan(pareto_khat(np.zeros((1, 16)) + np.arange(16))[0])  # too few draws for a tail fit
