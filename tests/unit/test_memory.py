"""A long full-batch warm-up must not grow memory (NUTS on rows reached 9 GB after 14 min)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/<pid>/status")
def test_nuts_warmup_on_rows_keeps_memory_flat(tmp_path: Path) -> None:
    """The issue's command, chains split over 2 CPU devices. jaxlib's YNN fusions kept every
    parallel task alive while two devices ran (+140 MB per 15 s); with them off per program
    (lambda_hat.devices.cpu_compiler_options) RSS stays flat during one long warm-up chunk."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LAMBDA_HAT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lambda_hat",
            "model=dln",
            "model.widths=[6,9,7,5]",
            "model.true_rank=3",
            "data.n=20000",
            "sampler=nuts",
            "sampler.num_warmup=100000",
            "sampler.num_steps=50",
            "seed=1",
            "posterior.gram_loss=false",
            "mlflow.enabled=false",
            "plots=false",
            "cpu_devices=2",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        log = run_dir / "app.log"
        deadline = time.monotonic() + 180
        while not (log.exists() and "warm-up/adaptation of" in log.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "the run did not reach its warm-up"
            time.sleep(0.2)
        time.sleep(6.0)  # compile, then allocator settling at the start of the (10,000-step) first chunk
        first = _rss_mb(proc.pid)
        time.sleep(15.0)
        growth = _rss_mb(proc.pid) - first
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
    assert growth < 40, f"RSS grew {growth:.0f} MB in 15 s of warm-up"  # leaky: ~140 MB
