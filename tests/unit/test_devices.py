"""Chains split over XLA CPU devices draw the same random numbers as all chains on one device."""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import numpy as np
import pytest

from lambda_hat.devices import chain_mesh, configure_cpu_devices
from lambda_hat.posterior import make_posterior
from lambda_hat.samplers import build_kernel
from lambda_hat.samplers.driver import run_chains
from lambda_hat.targets import build_target
from tests.conftest import TINY


def test_conftest_gave_two_cpu_devices() -> None:
    assert jax.device_count() == 2  # otherwise the tests below would not split anything


def test_chain_mesh_uses_devices_that_divide_the_chains() -> None:
    assert chain_mesh(4).devices.size == 2
    assert chain_mesh(3) is None  # 3 chains do not split evenly over 2 devices
    assert chain_mesh(1) is None


def test_cpu_device_count_is_fixed_once_jax_runs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert configure_cpu_devices(5) == 2
    assert "cpu_devices=5" in caplog.text


@pytest.mark.parametrize(
    "sampler,dtype,extra",
    [("sgld_lau", "float32", []), ("hmc", "float64", ["sampler.num_warmup=60", "sampler.num_integration_steps=4"])],
)
def test_split_chains_match_one_device(make_cfg, tmp_path: Path, sampler: str, dtype: str, extra: list[str]) -> None:
    target_args = [a for a in TINY if a.startswith(("model.", "data."))]
    cfg = make_cfg(*target_args, f"sampler={sampler}", *extra)
    target = build_target(cfg, tmp_path)
    with jax.enable_x64(dtype == "float64"):
        post = make_posterior(target, 1.0, 1.0, dtype)
        kernel = build_kernel(cfg.sampler, post.n)
        traces = [
            run_chains(
                kernel,
                post,
                jax.random.key(3, impl="threefry2x32"),
                num_chains=4,
                num_steps=200,
                num_burnin=100,
                progress=False,
                split_chains=split,
            )
            for split in (True, False)
        ]
    split, single = traces
    assert np.all(np.isfinite(split.loss))
    if sampler == "sgld_lau":  # no adaptation (fixed step): the same draws up to float rounding
        # atol: near w* the loss is at float32 rounding (~1e-13), where the two programs round apart
        np.testing.assert_allclose(split.loss, single.loss, rtol=1e-5, atol=1e-10)
    else:
        # Same random draws, but full-batch float sums may round differently in the last bit for
        # another number of chains per device; step-size adaptation amplifies that (measured:
        # adapted step sizes equal to 1e-6 on most chains, 1% apart on one), so compare statistics.
        assert split.loss.mean() == pytest.approx(single.loss.mean(), rel=0.1)
        # (the split program is also compiled without YNN fusions, devices.cpu_compiler_options: 12% apart measured)
        assert np.median(split.warmup["step_size"]) == pytest.approx(np.median(single.warmup["step_size"]), rel=0.25)
    assert split.n_fge == pytest.approx(single.n_fge)
