"""Targets with a known λ: which teacher, which truth, and λ̂ near it (issue: trustworthy truth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lambda_hat.runner import run
from lambda_hat.targets import aoyagi, build_target, dln

FAST = ["progress=false", "plots=false"]


@pytest.mark.parametrize(
    "teacher,hessian_rank,llc_true,layer_ranks",
    [
        ("top", 21, 10.5, [3, 3]),  # a top-dimensional component: local λ = Aoyagi's λ
        ("first_layer", 25, 12.5, [1, 5]),  # a submersion point: Morse–Bott with a larger λ
        ("truncate_layers", None, None, [1, 1]),  # in the closure of the top stratum, not Morse–Bott
    ],
)
def test_555_rank_one_teachers_and_their_truth(make_cfg, teacher, hessian_rank, llc_true, layer_ranks) -> None:
    cfg = make_cfg("model.widths=[5,5,5]", "model.true_rank=1", f"model.teacher={teacher}", "data.n=2000")
    target = build_target(cfg)
    meta = target.meta
    assert meta["rank"] == 1 and meta["layer_ranks"] == layer_ranks
    assert meta["llc_global"] == 10.5  # Aoyagi's λ whatever the teacher
    assert target.llc_true == llc_true
    if hessian_rank is not None:
        assert meta["hessian_check"]["hessian_rank"] == hessian_rank
    else:
        assert meta["hessian_check"]["hessian_rank"] < meta["hessian_check"]["orbit_codim"]


@pytest.mark.parametrize("widths,rank", [([4, 6, 4], 2), ([6, 3, 5, 4], 1), ([3, 7, 2, 6, 3], 1), ([5, 9, 8, 6], 3)])
def test_top_component_teachers_are_certified_by_the_hessian_rank(make_cfg, widths, rank) -> None:
    cfg = make_cfg(f"model.widths=[{','.join(map(str, widths))}]", f"model.true_rank={rank}", "data.n=2000")
    target = build_target(cfg)
    check = target.meta["hessian_check"]
    assert check["top_component"] and check["hessian_rank"] == check["expected_rank"]
    assert target.llc_true == aoyagi.aoyagi_lambda(widths, rank) == target.meta["llc_global"]


def test_zero_map_target(make_cfg) -> None:
    target = build_target(make_cfg("model.widths=[4,6,4]", "model.true_rank=0", "data.n=2000"))
    assert np.allclose(dln.product(target.w_star), 0.0) and target.meta["rank"] == 0
    assert any(np.abs(w).max() > 0.1 for w in target.w_star)  # the layers are not all zero
    assert target.llc_true == aoyagi.aoyagi_lambda([4, 6, 4], 0) == 7.5


@pytest.mark.parametrize(
    "overrides,tol",
    [
        (["model.widths=[5,5,5]", "model.true_rank=1"], 0.15),  # top-component teacher, λ = 10.5
        (["model.widths=[4,6,4]", "model.true_rank=0"], 0.15),  # zero map, λ = 7.5
        (["model=regular"], 0.1),  # λ = d/2 = 16
        (["model=polynomial"], 0.3),  # λ = 1/4; finite n underestimates it (README)
    ],
)
def test_hmc_lands_near_the_known_llc(make_cfg, tmp_path: Path, overrides, tol) -> None:
    m = run(make_cfg(*overrides, "sampler=hmc", *FAST), tmp_path, tmp_path)
    assert m["status"] == "ok" and m["llc_true"] is not None
    assert abs(m["llc_rel_error"]) < tol, m["llc_mean"]
