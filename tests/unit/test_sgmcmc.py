"""Each SG-MCMC sampler on a tiny DLN lands near the true λ; runs are reproducible."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest

from lambda_hat.estimators import PROBE_EVERY
from lambda_hat.runner import run
from lambda_hat.samplers import sgmcmc
from lambda_hat.targets import build_target
from tests.conftest import TINY


@pytest.mark.parametrize(
    "sampler,step",
    [("sgld", 2e-6), ("rmsprop_sgld", 2e-7), ("adam_sgld", 1e-7)],
)
def test_sampler_lands_near_true_llc(make_cfg, tmp_path: Path, sampler: str, step: float) -> None:
    # a fixed length: the work accounting below counts its steps
    cfg = make_cfg(*TINY, f"sampler={sampler}", f"sampler.step_size={step}", "sampler.target_mala_accept=null", "sampler.until_converged=false", "plots=false")
    m = run(cfg, tmp_path / "out", tmp_path)
    assert m["status"] == "ok"
    assert m["llc_true"] == 8.0  # Aoyagi, widths [4, 6, 4], rank 2
    assert abs(m["llc_rel_error"]) < 0.25, m
    assert m["r_hat"] < 1.3
    # work accounting: minibatch gradient = batch / n full-gradient equivalents, and the fixed
    # step's bias probe (one gradient with the LM noise) every PROBE_EVERY steps
    probes = 2000 // PROBE_EVERY
    assert m["n_fge_warmup"] == pytest.approx(4 * (2000 + probes) * 100 / 10000)
    assert m["n_fge"] == pytest.approx(4 * (2000 + probes) * 100 / 10000)


def test_same_seed_same_estimate_other_seed_differs(make_cfg, tmp_path: Path) -> None:
    args = (*TINY, "sampler.num_steps=1000", "sampler.num_burnin=500", "sampler.step_size=2e-6", "sampler.target_mala_accept=null", "plots=false")
    a = run(make_cfg(*args, "seed=4"), tmp_path / "a", tmp_path)
    b = run(make_cfg(*args, "seed=4"), tmp_path / "b", tmp_path)
    c = run(make_cfg(*args, "seed=4", "target_seed=4", "progress=true"), tmp_path / "c", tmp_path)
    d = run(make_cfg(*args, "seed=5", "target_seed=4"), tmp_path / "d", tmp_path)
    e = run(make_cfg(*args, "seed=4", "prng_impl=rbg"), tmp_path / "e", tmp_path)
    f = run(make_cfg(*args, "seed=4", "prng_impl=rbg"), tmp_path / "f", tmp_path)
    assert a["llc_per_chain"] == b["llc_per_chain"]
    assert e["llc_per_chain"] == f["llc_per_chain"] != a["llc_per_chain"]  # the PRNG knob is used
    # progress reporting splits the scan into chunks; the chain must not depend on it
    assert c["llc_per_chain"] == pytest.approx(a["llc_per_chain"], rel=1e-5)
    assert d["llc_per_chain"] != a["llc_per_chain"]


def test_chains_are_independent(make_cfg, tmp_path: Path) -> None:
    """Each chain has its own noise and minibatches: the step-to-step changes of their per-draw λ̂
    are uncorrelated across chains (chains sharing a key would correlate at 1)."""
    import numpy as np
    import pandas as pd

    m = run(make_cfg(*TINY, "sampler.num_steps=600", "sampler.num_burnin=300", "plots=false"), tmp_path, tmp_path)
    assert len(set(m["llc_per_chain"])) == 4
    trace = pd.read_parquet(tmp_path / "trace.parquet")
    steps = trace.pivot(index="draw", columns="chain", values="llc").to_numpy()
    corr = np.corrcoef(np.diff(steps, axis=0).T)
    off_diagonal = corr[~np.eye(4, dtype=bool)]
    assert np.all(np.abs(off_diagonal) < 0.3), corr  # ~N(0, 1/sqrt(600)) for independent chains


def test_divergent_run_is_flagged(make_cfg, tmp_path: Path) -> None:
    from lambda_hat.runner import RunFailed

    cfg = make_cfg(*TINY, "sampler=sgld_lau", "sampler.step_size=1.0", "sampler.num_steps=200", "sampler.num_burnin=100", "plots=false")
    with pytest.raises(RunFailed):
        run(cfg, tmp_path, tmp_path)
    import json

    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "failed" and m["llc_mean"] is None and m["chains_diverged"] == [0, 1, 2, 3]


def test_adam_sgld_first_moment_is_used(make_cfg, tmp_path: Path) -> None:
    # The preset drifts with the current gradient (beta1 = 0); beta1 > 0 drifts with its EMA.
    args = (*TINY, "sampler=adam_sgld", "sampler.num_steps=500", "sampler.num_burnin=250", "plots=false")
    preset = run(make_cfg(*args), tmp_path / "a", tmp_path)
    momentum = run(make_cfg(*args, "sampler.beta1=0.9"), tmp_path / "b", tmp_path)
    assert preset["status"] == momentum["status"] == "ok"
    assert preset["llc_per_chain"] != momentum["llc_per_chain"]


def test_heartbeat_reports_while_a_block_runs(caplog: pytest.LogCaptureFixture) -> None:
    from lambda_hat.samplers.driver import _heartbeat

    def beats() -> int:
        return sum("warm-up still running" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.INFO, logger="lambda_hat.samplers.driver"):
        with _heartbeat("[x] warm-up still running", 0.05):
            deadline = time.monotonic() + 10
            while beats() < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        after_exit = beats()
        time.sleep(0.2)
        assert after_exit >= 2 and beats() == after_exit  # it stops with the block
        with _heartbeat("[x] warm-up still running", 0.05, enabled=False):
            time.sleep(0.2)
        assert beats() == after_exit


def test_tuned_step_keeps_the_unadjusted_chains_bias_small(make_cfg, tmp_path: Path) -> None:
    """A regular model (λ = d/2 = 16) where a step at MALA acceptance 0.95 biases the unadjusted
    chain by ~+4% (ε·tr(A)/(8λ), A = ∇²U): tuning must cap the step (max_bias = 1%), and the
    work of the estimates must be counted."""
    cfg = make_cfg(
        "model=regular",
        "data.n=10000",
        "sampler=sgld",
        "sampler.integrator=euler",  # LM has no Hessian term to cap: next test
        "sampler.batch_size=100",
        "sampler.num_chains=2",
        "sampler.num_tune=400",
        "sampler.num_steps=1000",
        "sampler.num_burnin=500",
        "progress=false",
        "plots=false",
    )
    m = run(cfg, tmp_path / "out", tmp_path)
    x = build_target(cfg, tmp_path).x
    # Exact for a linear model with the mean squared error over `out` outputs: tr ∇²L = 2 tr(XᵀX/n).
    tr_a = m["nbeta"] * 2 * float(np.sum(x**2)) / x.shape[0] + m["gamma"] * m["d"]
    bias = [eps * tr_a / (8 * m["llc_true"]) for eps in m["step_size_per_chain"]]
    assert max(bias) < 0.02, (bias, m["step_size_per_chain"])  # MALA-only tuning: 4.1-4.3%
    assert m["step_size_capped"] == 1.0 and 0.005 < m["predicted_bias"] < 0.02, m
    assert abs(m["llc_rel_error"]) < 0.15, m
    estimates = len([t for t in range(400) if t % sgmcmc.BIAS_EVERY == 0 and t >= 40])
    assert m["n_fge_warmup"] == pytest.approx(2 * (2 * 400 + 2 * estimates + 500) * 100 / 10000, rel=1e-5)


def test_leimkuhler_matthews_noise_removes_the_steps_bias_on_a_quadratic(make_cfg, tmp_path: Path) -> None:
    """A linear model (U exactly quadratic, λ = d/2 = 16) at a fixed step where Euler–Maruyama's
    stationary E[U] is high by ε·tr(A)/8 (+9% of λ): the same chains with the Leimkuhler–Matthews
    noise (ξ_k + ξ_{k+1})/2 have the exact variance, leaving only the minibatch term ε·tr(Σ_g)/8."""
    args = ("model=regular", "data.n=10000", "sampler=sgld", "sampler.batch_size=100", "progress=false", "plots=false")
    fixed = (*args, "sampler.target_mala_accept=null", "sampler.step_size=2e-5", "sampler.num_steps=2000", "sampler.until_converged=false")
    euler = run(make_cfg(*fixed, "sampler.integrator=euler"), tmp_path / "euler", tmp_path)
    lm = run(make_cfg(*fixed, "sampler.integrator=lm"), tmp_path / "lm", tmp_path)
    x = build_target(make_cfg(*args), tmp_path).x
    tr_a = euler["nbeta"] * 2 * float(np.sum(x**2)) / x.shape[0] + euler["gamma"] * euler["d"]
    predicted = 2e-5 * tr_a / (8 * euler["llc_true"])
    assert predicted > 0.08 and euler["llc_rel_error"] > 0.06, (predicted, euler["llc_rel_error"])  # measured +10.5%
    assert abs(lm["llc_rel_error"]) < 3 * lm["llc_sem"] / lm["llc_true"] + 0.005, lm  # measured +0.5% ± 1.0%
    # A fixed step's bias is estimated along the chain and counted in the interval.
    assert euler["llc_ci95_bias"] == pytest.approx(predicted, rel=0.3) and euler["llc_ci95_covers"], euler
    assert abs(euler["llc_bias_corrected"] / euler["llc_true"] - 1) < abs(euler["llc_rel_error"]) / 2, euler
    assert lm["llc_ci95_bias"] < 0.01 and lm["llc_ci95_covers"], lm
    tuned = run(
        make_cfg(*args, "sampler.num_chains=2", "sampler.num_tune=400", "sampler.num_steps=1000", "sampler.until_converged=false"), tmp_path / "tuned", tmp_path
    )
    # Tuned, the step keeps Euler's cap (the chains may meet more curvature later), but the bias
    # it predicts is the minibatch term alone.
    assert tuned["step_size_capped"] == 1.0 and tuned["predicted_bias"] < 0.005, tuned
