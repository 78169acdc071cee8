"""Engine defects found by trying it as a user: honest timings, full-batch practicality, stores."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from lambda_hat import runner
from lambda_hat.posterior import make_posterior
from lambda_hat.targets import build_target
from lambda_hat.tracking import store, tracked
from tests.conftest import TINY, run_cli


def test_tracking_setup_ends_before_the_estimators_timed_phases(make_cfg, tmp_path: Path, monkeypatch) -> None:
    """MLflow's set-up thread shared the cores with sampling (tracking on: half the chain-steps/s).
    It must be finished before the first timed phase (here: SGLD step tuning) starts."""
    setup_done: list[float] = []
    original = tracked.TrackedRun._start

    def slow_start(self) -> None:
        original(self)
        time.sleep(1.5)  # a slow import / store
        setup_done.append(time.monotonic())

    timed_started: list[float] = []
    original_run_chains = runner.run_chains

    def spy(*args, before_timed, **kwargs):
        def hook() -> None:
            before_timed()
            timed_started.append(time.monotonic())

        return original_run_chains(*args, before_timed=hook, **kwargs)

    monkeypatch.setattr(tracked.TrackedRun, "_start", slow_start)
    monkeypatch.setattr(runner, "run_chains", spy)
    m = runner.run(make_cfg(*TINY, "sampler.num_tune=200", mlflow=True), tmp_path / "out", tmp_path)
    assert len(setup_done) == 1 and len(timed_started) == 1
    assert timed_started[0] >= setup_done[0]
    assert m["warmup_time_s"] < 1.5  # the hook's wait is not in the estimator's time
    assert "sampling_time_s" in m["timing_notes"] and "wall_time_s" not in m


def test_full_batch_run_says_its_cost_up_front_and_reports_warmup_steps(make_cfg, tmp_path: Path, caplog) -> None:
    cfg = make_cfg(*TINY[:3], "sampler=hmc", "sampler.num_warmup=200", "sampler.num_steps=100", "plots=false")
    with caplog.at_level(logging.INFO):
        m = runner.run(cfg, tmp_path / "out", tmp_path)
    text = caplog.text
    cost = next(line for line in text.splitlines() if "cost estimate" in line)
    assert "1 full-data gradient = " in cost and "4 chains x 4,800 gradients" in cost and "sampler.num_warmup" in cost
    progress = [line for line in text.splitlines() if "warm-up step" in line]
    assert len(progress) >= 5 and "/200 " in progress[0]  # in steps, not only a heartbeat
    assert m["num_warmup_steps"] == 200 and m["n_fge_warmup"] == pytest.approx(4 * 200 * 16)
    assert m["seconds_per_gradient"] > 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gram_loss_equals_the_row_loss(make_cfg, dtype: str) -> None:
    """The DLN's full-data loss from the Gram matrix is the loss over the rows, noise included."""
    cfg = make_cfg(*TINY[:3], "data.noise_std=0.5")
    target = build_target(cfg)
    with jax.enable_x64(dtype == "float64"):
        gram = make_posterior(target, 1.0, 1.0, dtype, gram_loss=True)
        rows = make_posterior(target, 1.0, 1.0, dtype, gram_loss=False)
        assert gram.gram is not None and rows.gram is None
        rng = np.random.default_rng(0)
        for scale in (0.0, 1e-3, 0.3):
            w = gram.w_star + scale * rng.normal(size=gram.d).astype(dtype)
            a, b = float(gram.full_loss(w)), float(rows.full_loss(w))
            assert a == pytest.approx(b, rel=1e-4 if dtype == "float32" else 1e-10)
            ga, gb = jax.grad(gram.logdensity)(w), jax.grad(rows.logdensity)(w)
            np.testing.assert_allclose(ga, gb, rtol=2e-3 if dtype == "float32" else 1e-8, atol=1e-3 if dtype == "float32" else 1e-9)


def test_unusable_tracking_store_is_refused_before_anything_runs(tmp_path: Path) -> None:
    proc = run_cli(["mlflow.tracking_uri=sqlite:////proc/no/such/dir/mlflow.db"], tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "mlflow.tracking_uri=sqlite:////proc/no/such/dir/mlflow.db" in lines[0]
    assert not (tmp_path / "outputs").exists()
    proc = run_cli(["mlflow.tracking_uri=http://127.0.0.1:9"], tmp_path)  # nothing listens on port 9
    assert proc.returncode == 2 and "no tracking server answers" in proc.stderr


def test_tracking_failure_after_the_run_keeps_the_results_and_says_so_in_one_line(make_cfg, tmp_path: Path, monkeypatch) -> None:
    from mlflow import MlflowClient

    def broken(self, *args, **kwargs):
        raise RuntimeError("disk I/O error")

    monkeypatch.setattr(MlflowClient, "log_artifact", broken)  # the store breaks after set-up
    out = tmp_path / "out"
    with pytest.raises(store.TrackingError, match="mlflow.tracking_uri=.*disk I/O error"):
        runner.run(make_cfg(*TINY, "sampler.num_tune=100", mlflow=True), out, tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["llc_mean"] is not None and (out / "trace.parquet").exists()
