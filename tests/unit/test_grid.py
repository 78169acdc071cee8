"""Batched grids (lambda_hat.grid): one program for many points, each point's λ̂ as if run alone."""

from __future__ import annotations

import numpy as np
import pytest

from lambda_hat.grid import estimate_grid, structure, sub_batches
from lambda_hat.registry import validate
from lambda_hat.runner import estimate_target
from lambda_hat.targets import build_target

# target_seed: one teacher and data set for every seed (a built-in target is drawn from seed otherwise)
SMALL = ["model.widths=[4,6,4]", "model.true_rank=2", "data.n=2000", "progress=false", "plots=false", "sampler.num_chains=2", "target_seed=0"]
# float32: a point's arithmetic inside a batch may round differently from the same run alone
# (measured ≤ 7e-7 relative for tuned SGLD, ≤ 4e-6 for Adam-SGLD; fixed steps ~1e-8).
TOLERANCE = 1e-5


def _alone_and_batched(make_cfg, runs: list[list[str]], **kw):
    cfgs = [make_cfg(*SMALL, *r) for r in runs]
    for cfg in cfgs:
        validate(cfg)
    target = build_target(cfgs[0])
    alone = [estimate_target(c, target)[0] for c in cfgs]
    batched = [r[0] for r in estimate_grid(cfgs, target, **kw)]
    return alone, batched


def test_tuned_sgld_grid_over_step_gamma_seed_equals_each_job_alone(make_cfg) -> None:
    """Loose convergence targets so that the points stop at different checks."""
    loose = ["sampler.converge_ess=30", "sampler.converge_rhat=1.1"]
    runs = [
        ["sampler.num_steps=400", "sampler.num_tune=100", f"sampler.step_size={e}", f"posterior.gamma={g}", f"seed={s}", *loose]
        for e, g, s in [(1e-5, 50, 0), (3e-5, 100, 1), (1e-5, 100, 2)]
    ]
    alone, batched = _alone_and_batched(make_cfg, runs)
    for a, b in zip(alone, batched):
        assert b["llc_mean"] == pytest.approx(a["llc_mean"], rel=TOLERANCE)
        assert b["step_size"] == pytest.approx(a["step_size"], rel=TOLERANCE)  # each point tuned its own step
        assert b["n_fge"] == pytest.approx(a["n_fge"], rel=1e-9)
        assert b["batch_points"] == 3 and a["batch_points"] == 1
        # run until converged (the default): each point stopped where it stopped alone
        assert (b["stop_reason"], b["num_steps"]) == (a["stop_reason"], a["num_steps"])
    assert len({b["num_steps"] for b in batched}) > 1  # (measured: 520, the cap 1,600, 1,280 steps)
    assert len({round(b["llc_mean"], 6) for b in batched}) == 3  # three different points, not one copied


def test_fixed_step_grid_over_beta0_splits_into_sub_batches_with_a_diverging_point(make_cfg) -> None:
    """A point whose step diverges fails alone; max_points splits 4 points into 2 + 2 programs."""
    steps, betas = (1e-5, 3e-5, 10.0), (1.0, 2.0)
    runs = [["sampler.num_steps=400", "sampler.target_mala_accept=null", f"sampler.step_size={e}", f"posterior.beta0={b}"] for e in steps for b in betas][:4]
    runs.append(["sampler.num_steps=400", "sampler.target_mala_accept=null", "sampler.step_size=10", "posterior.beta0=1"])
    alone, batched = _alone_and_batched(make_cfg, runs, max_points=2)
    assert [b["batch_points"] for b in batched] == [2, 2, 2, 2, 1]
    for a, b in zip(alone[:4], batched[:4]):
        assert b["status"] == "ok"
        assert b["llc_mean"] == pytest.approx(a["llc_mean"], rel=TOLERANCE)
        assert b["nbeta"] == a["nbeta"]
    assert batched[4]["status"] == alone[4]["status"] == "failed" and batched[4]["llc_mean"] is None


def test_full_batch_sampler_batches_seeds_and_gamma(make_cfg) -> None:
    runs = [["sampler=hmc", "sampler.num_steps=30", "sampler.num_warmup=30", f"seed={s}", f"posterior.gamma={g}"] for s, g in [(0, 50), (1, 100)]]
    alone, batched = _alone_and_batched(make_cfg, runs)
    for a, b in zip(alone, batched):
        assert b["llc_mean"] == pytest.approx(a["llc_mean"], rel=TOLERANCE)


def test_structure_groups_only_what_one_program_can_run(make_cfg) -> None:
    def key(*o: str) -> str | None:
        cfg = make_cfg(*SMALL, *o)
        validate(cfg)
        return structure(cfg)

    base = key("sampler.step_size=1e-5")
    assert base is not None
    assert key("sampler.step_size=3e-5", "seed=4", "posterior.gamma=10", "posterior.beta0=2", "sampler.target_mala_accept=0.9") == base
    # without target_seed a built-in target's teacher and data come from seed: another target
    assert key("seed=4", "target_seed=null") != key("seed=5", "target_seed=null")
    assert key("seed=0", "target_seed=null") == base  # the same teacher and data as target_seed=0
    assert key("sampler.num_steps=2000") != base  # another length: another program
    assert key("sampler.target_mala_accept=null") != base  # no tuning: another program
    assert key("sampler=sghmc") != base
    assert key("sampler.max_steps=20000") not in (None, base)  # another work cap: another loop (points stop on their own)
    assert key("sampler=vi") is None


@pytest.mark.parametrize(("points", "fits", "sizes"), [(5, 64, [5]), (5, 2, [2, 2, 1]), (7, 3, [3, 2, 2]), (3, 1, [1, 1, 1])])
def test_sub_batches_are_near_equal_and_within_the_limit(points: int, fits: int, sizes: list[int]) -> None:
    parts = sub_batches(points, per_point=1, max_batch_mb=1e9, max_points=fits)
    assert [len(p) for p in parts] == sizes
    assert list(np.concatenate([list(p) for p in parts])) == list(range(points))
    by_memory = sub_batches(points, per_point=2**20, max_batch_mb=fits, max_points=64)  # 1 MiB a point
    assert [len(p) for p in by_memory] == sizes


def test_api_estimate_grid_batches_what_it_can_and_returns_every_point() -> None:
    import lambda_hat as lh
    from tests import factories

    target = factories.linear(n=2000)
    common = {"sampler.target_mala_accept": None, "sampler.num_steps": 400, "sampler.num_chains": 2}
    points = [{"sampler.step_size": 3e-5, "posterior.gamma": 100.0}, {"sampler.step_size": 10.0}, {"sampler.num_steps": 800, "seed": 3}]
    results = lh.estimate_grid(target, "sgld", points, overrides=common)
    assert [r.metrics["batch_points"] for r in results] == [2, 2, 1]  # another length runs alone
    assert results[1].llc_mean is None and results[1].metrics["status"] == "failed"  # no exception
    alone = lh.estimate(target, "sgld", overrides={**common, **points[0]})
    assert results[0].llc_mean == pytest.approx(alone.llc_mean, rel=TOLERANCE)
    assert results[2].config.seed == 3 and results[2].llc_mean is not None
