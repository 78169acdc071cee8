"""vi=flow (lambda_hat/vi/flow.py): the density against independent computations on small d, draws
against the density, the compact-WY reflections against dense ones, memory linear in d, and the
one-line error when the `vi` extra is missing."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import paramax
import pytest
from jax.scipy.stats import norm
from omegaconf import OmegaConf

from lambda_hat.command_line import check_overrides
from lambda_hat.config import ConfigError, MissingExtraError
from lambda_hat.vi import flow
from tests.conftest import ROOT, run_cli

# rqs (coupling + spline: the most machinery) always; affine and maf differ only inside flowjax.
FLOWS = [pytest.param("affine", marks=pytest.mark.slow), pytest.param("maf", marks=pytest.mark.slow), "rqs"]


def flow_cfg(**over):
    base = dict(
        flow="rqs",
        latent_dim=3,
        layers=2,
        nn_width=4,
        nn_depth=1,
        knots=4,
        interval=3.0,
        subspace="random",
        learn_subspace=True,
        init_scale=0.7,
    )
    return OmegaConf.create({**base, **over})


@pytest.fixture(scope="module")
def rqs_family():
    """One float64 family for the default tests (building a flowjax flow costs seconds of eager set-up)."""
    with jax.enable_x64(True):
        return flow.build(flow_cfg(), 6)


@partial(jax.jit, static_argnames="scale")
def perturbed(params, key, scale=0.3):
    """φ moved off flowjax's initialisation, so every parameter (V, m, s, flow) matters."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [a + scale * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)])


def distribution(cfg, d, params):
    """The flowjax distribution behind φ (same static structure as build's)."""
    _, static = eqx.partition(flow.make_distribution(jax.random.key(0), cfg, d), eqx.is_inexact_array)
    return paramax.unwrap(eqx.combine(params, static))


def dense_reflections(v: jax.Array) -> jax.Array:
    """H_1⋯H_k as a dense d×d matrix, one reflection at a time (the reference for the WY form)."""
    h = jnp.eye(v.shape[1], dtype=v.dtype)
    for vi in v:
        h = h @ (jnp.eye(v.shape[1], dtype=v.dtype) - 2 * jnp.outer(vi, vi) / (vi @ vi))
    return h


def test_householder_product_is_the_dense_product_and_spans_the_basis():
    d, k = 9, 4

    @jax.jit  # one program, not a few dozen eager operations
    def compare(v, x, basis):
        bij = paramax.unwrap(flow.HouseholderProduct(v))
        y, logdet = bij.transform_and_log_det(x)
        h_basis = dense_reflections(flow.subspace_reflectors(basis))
        return y, dense_reflections(v) @ x, bij.inverse_and_log_det(y)[0], logdet, h_basis

    with jax.enable_x64(True):
        v, x = jax.random.normal(jax.random.key(0), (k, d)), jax.random.normal(jax.random.key(1), (d,))
        basis, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(d, k)))
        y, expected, back, logdet, h = (np.asarray(a) for a in compare(v, x, jnp.asarray(basis)))
    np.testing.assert_allclose(y, expected, atol=1e-12)
    np.testing.assert_allclose(back, x, atol=1e-12)
    assert logdet == 0.0
    # Reflectors built from an orthonormal basis U: the first k columns of H are ±U.
    np.testing.assert_allclose(np.abs(np.sum(h[:, :k] * basis, axis=0)), np.ones(k), atol=1e-12)
    np.testing.assert_allclose(h @ h.T, np.eye(d), atol=1e-12)


@pytest.mark.parametrize("kind", FLOWS)
def test_log_q_against_independent_computations(kind, rqs_family):
    """log q(x) against (1) an independent assembly: u = Hᵀx with H dense, flowjax's own log_prob of
    the k-dim flow on u[:k], the Gaussian log density of u[k:] by hand; (2) brute-force change of
    variables of the map F that draws x from ε: log N(ε; 0, I) − log|det ∂F/∂ε| (dense jacfwd);
    and the log q that sample returns with its draws."""
    d, k, cfg = 6, 3, flow_cfg(flow=kind)
    with jax.enable_x64(True):
        fam = rqs_family if kind == "rqs" else flow.build(cfg, d)
        params = perturbed(fam.init(jax.random.key(1)), jax.random.key(2))
        q = distribution(cfg, d, params)
        (flow_chain, complement), rotation = q.bijection.bijections[0].bijections, q.bijection.bijections[1]
        h = dense_reflections(rotation.factors[0])
        q_flow = flow.Transformed(flow.StandardNormal((k,)), flow_chain)

        def assembled(x):
            u = h.T @ x
            y = (u[k:] - complement.loc) / complement.scale
            return q_flow.log_prob(u[:k]) + jnp.sum(norm.logpdf(y) - jnp.log(complement.scale))

        def change_of_variables(eps):
            return jnp.sum(norm.logpdf(eps)) - jnp.linalg.slogdet(jax.jacfwd(q.bijection.transform)(eps))[1]

        @jax.jit
        def check(key):
            x, log_q_drawn = fam.sample(params, key, 8)
            eps = jax.random.normal(key, (8, d))
            x_eps = jax.vmap(q.bijection.transform)(eps)
            log_q = jax.vmap(fam.log_q, (None, 0))
            return (log_q(params, x), jax.vmap(assembled)(x), log_q_drawn, log_q(params, x_eps), jax.vmap(change_of_variables)(eps))

        got, expected, drawn, got_eps, expected_eps = check(jax.random.key(3))
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(drawn, expected, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(got_eps, expected_eps, rtol=1e-9, atol=1e-9)


@pytest.mark.slow  # ~10 s: 69k density evaluations; the exact checks above run by default
def test_density_integrates_to_one_and_draws_follow_it():
    """d = 3, k = 2 (flow, complement and rotation all present): exp(log_q) on a grid integrates to
    1, and the mean and second moments of 20k draws match the grid's."""
    with jax.enable_x64(True):
        d, cfg = 3, flow_cfg(latent_dim=2, init_scale=0.5)
        fam = flow.build(cfg, d)
        params = perturbed(fam.init(jax.random.key(7)), jax.random.key(8), scale=0.2)
        g = jnp.linspace(-5.0, 5.0, 41)
        grid = jnp.stack(jnp.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, d)
        dens = jnp.exp(jax.jit(jax.vmap(fam.log_q, (None, 0)))(params, grid)) * (g[1] - g[0]) ** d
        assert abs(float(dens.sum()) - 1) < 1e-2  # a Riemann sum: the flow is only piecewise smooth
        x, _ = jax.jit(fam.sample, static_argnums=2)(params, jax.random.key(9), 20_000)
        mean_grid = dens @ grid
        second_grid = (grid * dens[:, None]).T @ grid
        np.testing.assert_allclose(x.mean(0), mean_grid, atol=0.02)
        np.testing.assert_allclose(x.T @ x / len(x), second_grid, atol=0.03)


def test_fixed_subspace_gets_no_gradient_and_init_follows_the_key(rqs_family):
    v = jax.random.normal(jax.random.key(0), (2, 5))
    x = jax.random.normal(jax.random.key(1), (5,))

    def v_gradient(trainable: bool) -> jax.Array:
        bij = flow.HouseholderProduct(v, trainable=trainable)
        return eqx.filter_grad(lambda b: jnp.sum(paramax.unwrap(b).transform(x) ** 3))(bij)

    assert float(jnp.abs(v_gradient(True).factors.args[0]).max()) > 0
    assert float(jnp.abs(v_gradient(False).factors.args[0].tree).max()) == 0
    with jax.enable_x64(True):
        params, other = rqs_family.init(jax.random.key(0)), rqs_family.init(jax.random.key(1))
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(params))  # the run's precision
    v0, v1 = (np.asarray(p.bijection.bijections[1].factors.args[0]) for p in (params, other))
    assert np.abs(v0 - v1).max() > 0.1  # another key, another subspace


def test_latent_dim_above_d_is_rejected_in_one_line():
    with pytest.raises(ConfigError, match=r"vi.latent_dim=5 is invalid: must be <= the number of parameters d = 4"):
        flow.build(flow_cfg(latent_dim=5), 4)


MISSING = "vi=flow needs the 'vi' extra: pip install -e \".[vi]\""


def test_missing_extra_is_one_error_naming_the_extra(monkeypatch):
    """flowjax made unimportable (sys.modules entry None): the config check and the module import
    both raise the one-line error; the CLI prints it and exits 2 before anything runs."""
    monkeypatch.setitem(sys.modules, "flowjax", None)
    assert check_overrides(["sampler=vi", "vi=flow"]) == MISSING
    monkeypatch.delitem(sys.modules, "lambda_hat.vi.flow")
    with pytest.raises(MissingExtraError, match=re.escape(MISSING)):
        importlib.import_module("lambda_hat.vi.flow")
    code = "import sys; sys.modules['flowjax'] = None; from lambda_hat.app import main; sys.argv = ['lambda_hat', 'sampler=vi', 'vi=flow']; main()"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"lambda_hat: error: {MISSING}"]


@pytest.mark.slow  # ~1 min of CPU on 2 cores (compiling the flow's fit); the flow's maths runs by default
@pytest.mark.timeout(1200)
def test_cli_fits_a_flow_on_a_tiny_dln(tmp_path: Path) -> None:
    """`python -m lambda_hat sampler=vi vi=flow vi.flow=rqs vi.latent_dim=8` on a tiny DLN (d = 24):
    the run finishes with an estimate, the flow's diagnostics traced per step, the ELBO rising."""
    args = [
        "sampler=vi",
        "vi=flow",
        "vi.flow=rqs",
        "vi.latent_dim=8",
        "vi.layers=2",
        "vi.nn_width=8",
        "model.widths=[3,4,3]",
        "model.true_rank=1",
        "data.n=1000",
        "posterior.gamma=100",
        "sampler.num_chains=2",
        "sampler.num_steps=60",
        "sampler.batch_size=50",
        "sampler.num_samples=2",
        "sampler.num_draws=32",
        "sampler.whitening_batches=4",
        "cpu_devices=1",
        "progress=false",
        "plots=false",
        "mlflow.enabled=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    proc = run_cli(args, tmp_path, timeout=900)  # minutes on a loaded 2-core machine
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["vi"] == "flow" and m["status"] == "ok" and m["d"] == 24
    assert np.isfinite(m["llc_mean"]) and m["llc_sem"] > 0 and m["pareto_khat"] is not None
    assert m["fit_fge"] == pytest.approx(2 * (4 + 60 * 2) * 50 / 1000)
    fit = pd.read_parquet(tmp_path / "run" / "fit_trace.parquet")
    assert len(fit) == 2 * 60 and {"elbo", "grad_norm", "flow_scale", "complement_scale"} <= set(fit.columns)
    for _, chain in fit.groupby("chain"):
        assert chain["elbo"].iloc[-15:].mean() > chain["elbo"].iloc[:15].mean()
