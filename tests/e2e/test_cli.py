"""The command line as a user runs it (subprocess, fresh working directory)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_module_cli_prints_summary_last_and_writes_run_folder(tmp_path: Path) -> None:
    proc = _run(
        [
            sys.executable,
            "-m",
            "lambda_hat",
            "model.widths=[4,6,4]",
            "model.true_rank=2",
            "data.n=10000",
            "sampler.batch_size=100",
            "sampler.num_steps=2000",
            "sampler.num_burnin=1000",
            "sampler.step_size=2e-6",
            "sampler.target_mala_accept=null",
            "cpu_devices=2",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("λ̂ = ") and "true λ = 8" in last and "status ok" in last
    runs = list((tmp_path / "outputs").glob("*/*"))
    assert len(runs) == 1
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert f"{metrics['llc_mean']:.3f}" in last
    assert metrics["chain_devices"] == 2  # the 4 chains were split over two XLA CPU devices
    assert (runs[0] / ".hydra" / "config.yaml").exists()
    # MLflow 3's default location: the launch directory
    assert (tmp_path / "mlflow.db").exists() and (tmp_path / "mlruns").is_dir()


def test_console_script_is_the_same_app(tmp_path: Path) -> None:
    exe = shutil.which("lambda-hat", path=str(Path(sys.executable).parent))
    assert exe is not None, "console script lambda-hat not installed"
    proc = _run([exe, "sampler.nm_chains=2"], tmp_path)
    assert proc.returncode == 2 and "sampler.nm_chains" in proc.stderr
