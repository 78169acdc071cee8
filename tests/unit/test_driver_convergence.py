"""Sampling until converged (the default; sampler.until_converged, max_steps): chains that start at
w* far from equilibrium keep sampling until split R-hat and bulk ESS are met; the work cap stops
them with a warning; the stopping reason and the work are in metrics.json and the sweep table; a
fixed length (until_converged=false) is the same run, draw for draw, as one that converged at once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from lambda_hat.llc import stationary_start
from lambda_hat.samplers.driver import converged
from tests.conftest import run_cli

# The smoke DLN (d 48, λ 8) with SGLD at a fixed small step: 200 steps leave the chains far from
# equilibrium (λ̂ still rising from 0 at w*).
BASE = [
    "model.widths=[4,6,4]", "model.true_rank=2", "model.teacher=top", "data.n=1000", "posterior.gamma=100",
    "sampler.target_mala_accept=null", "sampler.step_size=1e-5", "sampler.num_chains=4", "sampler.num_steps=200",
    "mlflow.enabled=false", "progress=false", "plots=false",
]  # fmt: skip


def _run(tmp_path: Path, name: str, *extra: str) -> dict:
    proc = run_cli([*BASE, *extra, f"hydra.run.dir={tmp_path / name}"], cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / name / "metrics.json").read_text())


def test_a_chain_far_from_equilibrium_samples_until_converged_and_the_cap_stops_it(tmp_path: Path) -> None:
    fixed = _run(tmp_path, "fixed", "sampler.until_converged=false")
    assert fixed["stop_reason"] == "fixed length" and fixed["num_steps"] == 200 and fixed["r_hat"] > 1.05
    assert fixed["max_steps"] is None
    until = _run(tmp_path, "until", "sampler.max_steps=100000", "sampler.converge_rhat=1.02", "sampler.converge_ess=200")
    assert until["stop_reason"] == "converged", until
    assert 200 < until["num_steps"] < 100000 and 0 <= until["num_burnin"] <= until["num_steps"] // 2  # chosen from the chains
    assert until["r_hat"] <= 1.03 and until["ess_bulk"] >= 150  # blackjax's numbers, near arviz's
    assert abs(until["llc_mean"] / 8.0 - 1) < abs(fixed["llc_mean"] / 8.0 - 1)  # longer = closer to λ
    assert until["n_fge"] > fixed["n_fge"]
    capped = _run(tmp_path, "capped", "sampler.max_steps=400", "sampler.converge_ess=1e9")
    assert capped["stop_reason"] == "work cap" and capped["num_steps"] == 400 and capped["max_steps"] == 400
    assert any("work cap of 400 steps" in w and "raise sampler.max_steps" in w for w in capped["warnings"])
    # converged at its first check: the fixed-length run with the burn-in it chose, to the last bit
    at_once = _run(tmp_path, "at_once", "sampler.converge_rhat=100", "sampler.converge_ess=1")
    assert at_once["stop_reason"] == "converged" and at_once["num_steps"] == 200
    same = _run(tmp_path, "same", "sampler.until_converged=false", f"sampler.num_burnin={at_once['num_burnin']}")
    assert at_once["llc_mean"] == same["llc_mean"] and at_once["llc_sem"] == same["llc_sem"]
    # with num_burnin set, a run until converged keeps it: the same estimate as the fixed length
    set_burnin = _run(tmp_path, "set_burnin", "sampler.converge_rhat=100", "sampler.converge_ess=1", "sampler.num_burnin=100")
    assert set_burnin["num_burnin"] == 100 and set_burnin["llc_mean"] == fixed["llc_mean"]


def test_the_sweep_table_has_each_jobs_stopping_reason(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["--multirun", *BASE, "sampler.until_converged=true,false", "sampler.converge_ess=1e9", f"hydra.sweep.dir={sweep}"]
    proc = run_cli(args, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_parquet(sweep / "llc_runs.parquet").sort_values("job_num")
    assert list(table["stop_reason"]) == ["work cap", "fixed length"]
    assert list(table["num_steps"]) == [4 * 200, 200]  # the default cap: 4 x num_steps


def test_burnin_chosen_from_the_chains_cuts_where_the_mean_levels_off() -> None:
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(4, 2000))
    rising = noise + np.minimum(np.arange(2000) / 300.0, 1.0) * 20  # climbs for 300 draws, then flat
    cut = stationary_start(rising, 1000)
    assert 250 <= cut <= 400 and cut % 5 == 0
    assert stationary_start(noise, 1000) <= 100  # already stationary: keeps (nearly) everything
    assert stationary_start(rising, 200) == 200  # never past the most allowed (burnin_fraction)
    assert stationary_start(rising[:, :20], 10) == 10  # too short to judge: the most allowed
    with_nan = rising.copy()
    with_nan[1, 7] = np.nan  # a diverged chain is left out
    assert stationary_start(with_nan, 1000) == cut


def test_convergence_check() -> None:
    rng = np.random.default_rng(0)
    mixed = rng.normal(size=(4, 2000))
    assert converged(mixed, 0, 1.01, 400)[0]
    drifting = mixed + np.linspace(0, 5, 2000)  # a trend: the split halves disagree
    ok, rhat, _ = converged(drifting, 0, 1.01, 400)
    assert not ok and rhat > 1.01
    apart = mixed + np.arange(4)[:, None]  # chains at different levels
    assert not converged(apart, 0, 1.01, 400)[0]
    assert not converged(mixed[:, :4], 0, 1.01, 1)[0]  # too few draws to judge
    with_nan = mixed.copy()
    with_nan[0, 5] = np.nan  # a diverged chain is left out, as the estimate leaves it out
    assert converged(with_nan, 0, 1.01, 400)[0]
    # a lone chain: its stretches must agree (split R-hat), not R-hat = 1 by definition
    assert converged(mixed[:1], 0, 1.01, 400)[0]
    ok, rhat, _ = converged(drifting[:1], 0, 1.01, 400)
    assert not ok and rhat > 1.01
