"""The MLP teacher-student target: w* is trained, the estimate runs, llc_true is null."""

from __future__ import annotations

from pathlib import Path

from lambda_hat.runner import run
from lambda_hat.targets import build_target


def test_mlp_target_trains_to_noise_floor_and_samples(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(
        "model=mlp",
        "model.widths=[2,8,1]",
        "data.n=2000",
        "data.noise_std=0.1",
        "sampler.batch_size=100",
        "sampler.num_steps=1000",
        "sampler.num_burnin=500",
        "sampler.step_size=1e-5",
        "training.max_steps=3000",
        "plots=false",
        "progress=false",
    )
    target = build_target(cfg, tmp_path / "cache")
    assert target.llc_true is None and target.kind == "mlp"
    assert target.d == 2 * 8 + 8 + 8 * 1 + 1
    # trained to (about) the label-noise floor: mse ≈ noise_std² = 0.01
    assert target.meta["train_final_loss"] < 0.02 < target.meta["train_initial_loss"]
    m = run(cfg, tmp_path / "out", tmp_path)
    assert m["status"] == "ok" and m["llc_true"] is None and m["llc_rel_error"] is None
    assert 0 < m["llc_mean"] < target.d  # a singular model: λ well below d/2 in practice
