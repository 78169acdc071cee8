"""Same config + seed => the same λ̂ bit for bit (same machine, precision and device count):
alone with a cold compilation cache, as the second and third jobs of a basic-launcher multirun
after a float64 job (warm cache), and in this (test) process after whatever ran before, with
progress logging on (the sampling loop then runs in chunks).

The fast test does it in this process (the basic launcher runs its jobs the same way, one after
another in one process); the slow one through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lambda_hat.composition import compose_config
from tests.conftest import run_cli

CONFIG = [
    "model.widths=[3,4,3]",
    "model.true_rank=1",
    "data.n=2000",
    "sampler.batch_size=100",
    "sampler.num_steps=400",
    "sampler.target_mala_accept=null",
    "sampler.mala_every=0",
    "sampler.num_chains=4",
    "cpu_devices=2",
    "seed=3",
    "plots=false",
    "progress=false",
    "mlflow.enabled=false",
]


def _cli(args: list[str], cwd: Path) -> None:
    proc = run_cli(args, cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _result(folder: Path) -> tuple[float, list[float], np.ndarray]:
    m = json.loads((folder / "metrics.json").read_text())
    return m["llc_mean"], m["llc_per_chain"], pd.read_parquet(folder / "trace.parquet")["loss"].to_numpy()


def test_same_llc_in_one_process_after_a_float64_run_with_a_cold_or_warm_cache(tmp_path: Path) -> None:
    from lambda_hat.runner import run

    xla = f"compilation_cache_dir={tmp_path / 'xla'}"
    run(compose_config([*CONFIG, xla]), tmp_path / "cold", tmp_path)  # nothing compiled for it yet
    run(compose_config([*CONFIG, xla, "sampler.dtype=float64"]), tmp_path / "f64", tmp_path)
    run(compose_config([*CONFIG, xla, "progress=true"]), tmp_path / "warm", tmp_path)
    cold, f64, warm = (_result(tmp_path / name) for name in ("cold", "f64", "warm"))
    assert f64[0] != cold[0]  # another computation, run in between
    assert warm[0] == cold[0] and warm[1] == cold[1]
    np.testing.assert_array_equal(warm[2], cold[2])


@pytest.mark.slow
def test_same_config_and_seed_give_the_same_llc_bit_for_bit(tmp_path: Path) -> None:
    xla = f"compilation_cache_dir={tmp_path / 'xla'}"  # cold for the first run, warm after
    _cli([*CONFIG, xla, f"hydra.run.dir={tmp_path / 'alone'}"], tmp_path)
    alone = _result(tmp_path / "alone")
    assert alone[0] is not None and np.isfinite(alone[2]).all()
    # one process, three jobs: float64 first (x64 must not leak), then the same config twice
    _cli(["--multirun", *CONFIG, "sampler.dtype=float64,float32,float32", xla, f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    f64 = _result(tmp_path / "sweep" / "0")
    assert f64[0] != alone[0]  # float64 is another computation (and it did run first)
    for job in ("1", "2"):
        llc, per_chain, loss = _result(tmp_path / "sweep" / job)
        assert llc == alone[0] and per_chain == alone[1], job
        np.testing.assert_array_equal(loss, alone[2])

    from lambda_hat.runner import run

    cfg = compose_config([*CONFIG, xla, "progress=true"])  # progress: the scan is cut into chunks
    run(cfg, tmp_path / "in_process", tmp_path)  # this test process: other tests' JAX state, warm cache
    llc, per_chain, loss = _result(tmp_path / "in_process")
    assert llc == alone[0] and per_chain == alone[1]
    np.testing.assert_array_equal(loss, alone[2])
