"""SIGTERM ends a job within seconds, as KILLED in MLflow, whoever launched it and whatever it runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "LAMBDA_HAT_CACHE": str(tmp_path / "cache")}


def _wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not (log.exists() and text in log.read_text()):
        assert proc.poll() is None, f"the job ended before {text!r}"
        assert time.monotonic() < deadline, f"no {text!r} in {log}"
        time.sleep(0.2)


def _mlflow_statuses(db: Path) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return [r.info.status for r in runs]


def test_a_signal_whose_exception_python_swallowed_still_ends_the_job() -> None:
    """A SIGINT that lands while Python runs a callback (seen in CI: jax's gc callback) raises there,
    and Python ignores the exception; the block raises it when it ends instead of running on."""
    from lambda_hat import signals

    class Deleted:
        def __del__(self) -> None:  # the handler runs here: its KeyboardInterrupt is "ignored"
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)

    ran_on = []
    with pytest.raises(KeyboardInterrupt):
        with signals.terminate_on_signals(grace_s=60.0):
            Deleted()  # freed at once
            ran_on.append(True)  # the swallowed exception did not stop the block
    assert ran_on == [True]
    with signals.terminate_on_signals(grace_s=60.0):  # the next block starts clean
        pass


def test_watchdog_ends_a_job_whose_main_thread_is_stuck_in_native_code(tmp_path: Path) -> None:
    """The main thread never returns to Python (SIGTERM blocked there, asleep in C): the watchdog
    still runs the clean-ups and exits with 128 + SIGTERM after the grace period."""
    marker = tmp_path / "cleaned"
    script = textwrap.dedent(f"""
        import signal, time
        from lambda_hat import signals
        signals.on_forced_exit(lambda: open({str(marker)!r}, "w").write("killed"))
        with signals.terminate_on_signals(grace_s=1.0):
            signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGTERM}})  # only the watchdog can take it
            print("ready", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=_env(tmp_path), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        assert time.monotonic() - start < 20
    finally:
        proc.kill()
    assert marker.read_text() == "killed"


def test_sigterm_during_nuts_warmup_ends_the_job_and_its_mlflow_run(tmp_path: Path) -> None:
    """The issue's command (NUTS warm-up on rows, d = 152, n = 2e4) ignored SIGTERM for > 60 s."""
    run_dir = tmp_path / "run"
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
            "plots=false",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(run_dir / "app.log", "warm-up/adaptation of", proc)
        time.sleep(2.0)  # inside the warm-up's first chunk (10,000 NUTS steps: many minutes)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        assert time.monotonic() - start < 30
    finally:
        proc.kill()
    assert _mlflow_statuses(tmp_path / "mlflow.db") == ["KILLED"]


@pytest.mark.slow  # 19 s on CI; SIGTERM through submitit's worker: the SLURM test in test_launchers.py
def test_sigterm_is_honoured_when_a_launcher_calls_the_task_function_directly(tmp_path: Path) -> None:
    """submitit's worker calls the Hydra task function (not main()) after installing its own
    handlers, which ignore SIGTERM; the job must still end as KILLED."""
    run_dir = tmp_path / "run"
    script = textwrap.dedent(f"""
        import signal, sys
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as submitit's bypass does
        sys.argv = ["lambda_hat", "sampler=hmc", "model.widths=[4,6,4]", "data.n=100000",
                    "posterior.gram_loss=false", "sampler.num_warmup=1000000", "plots=false",
                    "hydra.run.dir={run_dir}"]
        from lambda_hat.app import hydra_app
        hydra_app()
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(run_dir / "app.log", "warm-up/adaptation of", proc)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    assert _mlflow_statuses(tmp_path / "mlflow.db") == ["KILLED"]
