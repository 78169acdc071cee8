"""Chunks sized by time (lambda_hat.samplers.driver): how a run is cut into compiled calls changes
no draw, long runs get short calls (progress, convergence checks and signals get a turn every few
seconds), and the progress log stays at about one line per tenth."""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import numpy as np
import pytest

from lambda_hat.posterior import make_posterior
from lambda_hat.samplers import build_kernel, driver
from lambda_hat.samplers.driver import ChunkSizer, run_chains
from lambda_hat.targets import build_target
from tests.conftest import TINY


def test_the_first_chunk_is_small_then_chunks_take_about_the_target_time() -> None:
    sizer = ChunkSizer(1600, seconds=2.0)
    assert sizer.next(10_000) == 100  # before any timing: 1/16 of the longest
    sizer.ran(100, 10.0)  # 0.1 s a step: 20 steps make 2 s
    assert sizer.next(10_000) == 20
    assert sizer.next(7) == 7  # never past what is left
    fast = ChunkSizer(1600, seconds=2.0)
    fast.ran(100, 0.001)
    assert fast.next(10_000) == 1600  # never past the buffers
    slow = ChunkSizer(1600, seconds=2.0)
    slow.ran(1, 60.0)
    assert slow.next(10_000) == 1  # at least one step


def _run(tmp_path: Path, make_cfg, sampler: str, **kw):
    cfg = make_cfg(*[a for a in TINY if a.startswith(("model.", "data."))], f"sampler={sampler}", "sampler.num_tune=200")
    post = make_posterior(build_target(cfg, tmp_path), 1.0, 1.0, "float32")
    kernel = build_kernel(cfg.sampler, post.n)
    return run_chains(kernel, post, jax.random.key(5, impl="threefry2x32"), num_chains=2, num_steps=600, num_burnin=300, **kw)


def test_the_draws_do_not_depend_on_how_the_run_is_cut_into_chunks(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = _run(tmp_path, make_cfg, "sgld", progress=False, max_chunks=1)  # warm-up and sampling: few long calls
    calls = []
    real = ChunkSizer.ran
    monkeypatch.setattr(ChunkSizer, "ran", lambda self, steps, seconds: (calls.append(steps), real(self, steps, seconds)))
    monkeypatch.setattr(driver, "CHUNK_SECONDS", 1e-9)  # every call after the first runs one step
    cut = _run(tmp_path, make_cfg, "sgld", progress=True)
    assert calls.count(1) > 500  # the tuning's 200 steps and the 600 draws, one by one after the first call
    np.testing.assert_array_equal(cut.loss, whole.loss)  # bit for bit
    np.testing.assert_array_equal(cut.warmup["step_size"], whole.warmup["step_size"])
    for name in whole.extras:
        np.testing.assert_array_equal(cut.extras[name], whole.extras[name])
    assert cut.n_fge == pytest.approx(whole.n_fge)


def test_progress_stays_at_about_a_line_per_tenth_however_short_the_chunks(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(driver, "CHUNK_SECONDS", 1e-9)
    with caplog.at_level(logging.INFO, logger="lambda_hat.samplers.driver"):
        _run(tmp_path, make_cfg, "sgld", progress=True)
    sampling = [r for r in caplog.records if "] step " in r.getMessage()]
    warmup = [r for r in caplog.records if "warm-up step" in r.getMessage()]
    assert 5 <= len(sampling) <= 11 and 5 <= len(warmup) <= 11, (len(sampling), len(warmup))


def test_past_the_first_stretch_progress_gives_the_work_cap_as_an_upper_bound(caplog: pytest.LogCaptureFixture) -> None:
    report = driver._Reporter("run", "step", 1000, enabled=True)
    with caplog.at_level(logging.INFO, logger="lambda_hat.samplers.driver"):
        report(500, 5.0)  # within num_steps: the total is known
        report(2000, 20.0, cap=4000)  # sampling on until converged: the cap is only the most it may run
    first, second = (r.getMessage() for r in caplog.records)
    assert "step 500/1000 (50%)" in first and "~5.0s left" in first
    assert "step 2000/at most 4000 (50%)" in second and "at most 20.0s left" in second
