"""The command line as a user runs it (subprocess, fresh working directory)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_module_cli_prints_summary_last_and_writes_run_folder(tmp_path: Path) -> None:
    proc = _run(
        [sys.executable, "-m", "lambda_hat", "model.widths=[4,6,4]", "model.true_rank=2", "data.n=10000",
         "sampler.batch_size=100", "sampler.num_steps=2000", "sampler.num_burnin=1000", "sampler.step_size=2e-6", "cpu_devices=2"],
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


def test_sigterm_during_a_long_warmup_ends_the_job_and_its_mlflow_run(tmp_path: Path) -> None:
    """kill/scancel must work while the main thread waits on one long compiled call (a warm-up):
    the job exits with 128 + SIGTERM and its MLflow run is KILLED, not left RUNNING."""
    import signal
    import time

    run_dir = tmp_path / "run"
    env = {**os.environ, "LAMBDA_HAT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lambda_hat", "sampler=hmc", "model.widths=[4,6,4]", "data.n=100000",
         "sampler.num_warmup=1000000", f"hydra.run.dir={run_dir}", "plots=false"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        log = run_dir / "app.log"
        while not (log.exists() and "warm-up/adaptation" in log.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "the run did not reach its warm-up"
            time.sleep(0.2)
        time.sleep(1.0)  # inside the compiled warm-up call (a million steps: hours)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM  # without handling: hours
    finally:
        proc.kill()
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["KILLED"]
