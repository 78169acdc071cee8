"""λ̂ from traces: the arithmetic, the diagnostics, and NaN chains flagged and excluded."""

from __future__ import annotations

import numpy as np
import pytest

from lambda_hat.llc import SCATTER, estimate_llc, health_warnings, interval95, split_rhat


def _ar1(rng: np.random.Generator, chains: int, draws: int, mean: float, rho: float = 0.5) -> np.ndarray:
    x = np.zeros((chains, draws))
    x[:, 0] = rng.normal(size=chains)
    for t in range(1, draws):
        x[:, t] = rho * x[:, t - 1] + np.sqrt(1 - rho**2) * rng.normal(size=chains)
    return mean + 0.1 * x


def test_estimate_is_nbeta_times_excess_loss_after_burnin() -> None:
    rng = np.random.default_rng(0)
    loss = _ar1(rng, 4, 2000, mean=1.5)
    loss[:, :500] = 100.0  # burn-in values must not enter the estimate
    m = estimate_llc(loss, 500, nbeta=10.0, L0=0.5, llc_true=10.0)
    assert m["status"] == "ok" and m["chains_ok"] == 4
    assert m["llc_mean"] == pytest.approx(10.0 * (loss[:, 500:].mean() - 0.5))
    assert m["llc_per_chain"] == pytest.approx(list(10.0 * (loss[:, 500:].mean(axis=1) - 0.5)))
    assert m["llc_rel_error"] == pytest.approx(m["llc_mean"] / 10.0 - 1)
    # AR(1) with rho = 0.5 has ESS ≈ N (1 - rho) / (1 + rho) = 6000 / 3 = 2000
    assert 1200 < m["ess"] < 3000 and 1200 < m["ess_bulk"] < 3000
    assert m["llc_sem"] == pytest.approx(np.std(10.0 * loss[:, 500:], ddof=1) / np.sqrt(m["ess"]))
    assert 0.99 < m["r_hat"] < 1.02


def test_nan_chain_is_flagged_and_excluded() -> None:
    rng = np.random.default_rng(1)
    loss = _ar1(rng, 3, 400, mean=2.0)
    loss[1, 250:] = np.nan
    loss[2, 10] = np.inf  # even a burn-in blow-up disqualifies the chain
    m = estimate_llc(loss, 100, nbeta=1.0, L0=0.0)
    assert m["status"] == "some_chains_diverged"
    assert m["chains_diverged"] == [1, 2] and m["chains_ok"] == 1
    assert m["llc_per_chain"][1] is None and m["llc_per_chain"][2] is None
    assert m["llc_mean"] == pytest.approx(loss[0, 100:].mean())
    assert m["r_hat"] is None  # undefined with one chain


def test_all_chains_diverged() -> None:
    loss = np.full((2, 50), np.nan)
    m = estimate_llc(loss, 10, nbeta=1.0, L0=0.0)
    assert m["status"] == "failed" and m["llc_mean"] is None and m["chains_ok"] == 0


def test_health_warnings_point_to_step_tuning_when_the_step_is_too_small_to_mix() -> None:
    under_mixed = {"mala_accept": 0.995, "ess_bulk": 10.0, "r_hat": 1.3}
    warnings = health_warnings(under_mixed)
    assert any("too small" in w and "target_mala_accept" in w for w in warnings), warnings
    # well mixed with a small step: nothing to say about the step
    assert health_warnings({"mala_accept": 0.995, "ess_bulk": 500.0, "r_hat": 1.01}) == []
    # already tuned: no hint to tune
    assert not any("target_mala_accept" in w for w in health_warnings({**under_mixed, "tune_mala_accept": 0.9}))
    # too large a step: the hint rides along with the bias warning
    assert any("too large" in w and "target_mala_accept" in w for w in health_warnings({"mala_accept": 0.6}))


def test_e_bfmi_is_arviz_stats_bfmi_and_equals_its_formula() -> None:
    from lambda_hat.llc import e_bfmi

    rng = np.random.default_rng(0)
    energy = np.cumsum(rng.normal(size=(3, 400)), axis=1) * 0.2 + rng.normal(size=(3, 400))
    formula = np.sum(np.diff(energy, axis=1) ** 2, axis=1) / np.sum((energy - energy.mean(axis=1, keepdims=True)) ** 2, axis=1)
    np.testing.assert_allclose(e_bfmi(energy), formula, rtol=1e-10)
    energy[1, 7] = np.inf
    energy[2] = 1.0
    out = e_bfmi(energy)
    assert np.isfinite(out[0]) and np.isnan(out[1]) and np.isnan(out[2])


def test_interval_counts_the_predicted_bias_and_under_mixing() -> None:
    # no predicted bias, mixed chains: Monte Carlo error and the unmodelled scatter τ in quadrature
    half = 1.96 * np.hypot(1.0, SCATTER * 100.0)
    assert interval95(100.0, 1.0, 1.01, 0.0) == pytest.approx([100.0 - half, 100.0 + half])
    assert interval95(100.0, 0.0, 1.01, 0.0) == pytest.approx([100.0 - 1.96 * SCATTER * 100.0, 100.0 + 1.96 * SCATTER * 100.0])
    # a step predicted to bias λ̂ by +1%: centred at λ̂/1.01, widened by 1% of λ̂ on both sides
    low, high = interval95(101.0, 1.0, 1.01, 0.01)
    half = 1.96 * np.hypot(1.0, SCATTER * 101.0)
    assert low == pytest.approx(100.0 - half - 1.01) and high == pytest.approx(100.0 + half + 1.01)
    # chains still climbing from w* (R-hat 1.25): only the upper end grows, by (1.25 - 1.01) x λ̂
    low2, high2 = interval95(101.0, 1.0, 1.25, 0.01)
    assert low2 == pytest.approx(low) and high2 == pytest.approx(high + 0.24 * 101.0)
    assert interval95(None, None, None, 0.0) is None and interval95(5.0, None, 1.0, 0.0) is None
    assert interval95(100.0, 1.0, None, float("nan")) == interval95(100.0, 1.0, 1.0, 0.0)  # unknown: as none


def test_split_rhat_sees_a_lone_chain_still_drifting() -> None:
    rng = np.random.default_rng(1)
    stationary = rng.normal(size=4000)
    assert split_rhat(stationary) == pytest.approx(1.0, abs=0.01)
    assert split_rhat(stationary + np.linspace(0.0, 3.0, 4000)) > 1.2
    assert split_rhat(np.ones(10)) is None  # too short
