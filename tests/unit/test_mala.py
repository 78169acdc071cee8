"""Full-batch MALA (lambda_hat.estimators.mala), added as one module, one preset and this file."""

from __future__ import annotations

from pathlib import Path

import pytest

from lambda_hat import budget, registry
from lambda_hat.command_line import check_overrides
from lambda_hat.runner import run

SMALL = ["model.widths=[4,6,4]", "model.true_rank=2", "data.n=2000", "progress=false", "plots=false"]


def test_mala_is_registered_from_its_module_alone() -> None:
    spec = registry.get("mala")
    assert spec.family == "full_batch" and "mala" in registry.names("full_batch")
    assert check_overrides(["sampler=mala"]) is None
    assert check_overrides(["sampler=mala", "sampler.target_accept=1.5"]) == "sampler.target_accept=1.5 is invalid: must be in (0, 1)"
    assert check_overrides(["sampler=mala", "sampler.friction=3"]).startswith("sampler.friction: unknown key")


def test_mala_lands_near_the_true_llc_with_its_step_tuned(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(*SMALL, "sampler=mala", "sampler.num_warmup=300", "sampler.num_steps=1200")
    m = run(cfg, tmp_path, tmp_path)
    assert m["status"] == "ok" and m["sampler"] == "mala" and m["dtype"] == "float64"
    assert abs(m["llc_rel_error"]) < 0.15, m
    assert 0.45 < m["acceptance_rate"] < 0.7  # tuned to 0.574
    assert len(m["step_size_per_chain"]) == 4 and m["step_size"] > 0
    assert m["n_fge_warmup"] == pytest.approx(4 * 300) and m["n_fge"] == pytest.approx(4 * 1200)
    assert m["llc_ci95_bias"] == 0.0  # Metropolis-adjusted: no step bias in the interval


def test_a_budget_sizes_mala(make_cfg) -> None:
    cfg = make_cfg("sampler=mala")
    assert budget.sizes("mala", cfg.sampler, 10_000, 1000) == {"num_warmup": 250, "num_steps": 750}
