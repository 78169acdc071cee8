"""Eight `python -m lambda_hat` processes started together on one fresh output root, target cache,
reference cache and SQLite MLflow store: no corruption, one build of the target and of the
reference, eight MLflow runs, a complete table. Slow (8 JAX processes on 2 cores)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JOBS = 8
# A trained MLP target (no analytic λ): each job needs the same target and the same reference run.
CONFIG = [
    "model=mlp",
    "model.widths=[2,3,1]",
    "data.n=500",
    "training.max_steps=200",
    "sampler=sgld",
    "sampler.batch_size=50",
    "sampler.num_steps=400",
    "sampler.until_converged=false",
    "sampler.num_tune=100",
    "sampler.num_chains=2",
    "cpu_devices=1",
    "target_seed=0",
    "objective.enabled=true",
    "objective.reference.sampler=hmc",
    "objective.reference.num_chains=2",
    "objective.reference.num_warmup=100",
    "objective.reference.num_steps=200",
    "plots=false",
    "progress=false",
]


def _communicate_all(procs: list[subprocess.Popen], timeout: float) -> list[str]:
    """Every process's output; on a timeout (or any error) the processes are killed, not left behind."""
    try:
        return [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_eight_simultaneous_jobs_share_caches_and_store_safely(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    shared = [f"cache_dir={tmp_path / 'cache'}", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "lambda_hat", *CONFIG, *shared, f"seed={i}", f"hydra.run.dir={tmp_path / 'runs' / str(i)}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(JOBS)
    ]
    logs = _communicate_all(procs, timeout=1500)
    assert [p.returncode for p in procs] == [0] * JOBS, "\n\n".join(log[-2000:] for log in logs)
    text = "\n".join(logs)
    # one target build; every other job (and the reference run) loads it
    assert text.count("(mlp) built") == 1 and text.count("(mlp) loaded from cache") >= JOBS - 1
    assert text.count(": building (hmc") == 1  # one reference run; the others waited, then reused it
    assert text.count("reused") >= JOBS - 1

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("lambda_hat").experiment_id])
    assert len(runs) == JOBS and {r.info.status for r in runs} == {"FINISHED"}

    agg = subprocess.run(
        [sys.executable, "-m", "lambda_hat.aggregate", str(tmp_path / "runs")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert agg.returncode == 0, agg.stderr
    assert agg.stdout.startswith(f"{JOBS} jobs: {JOBS} ok, 0 failed, 0 killed")
    import pandas as pd

    table = pd.read_parquet(tmp_path / "runs" / "llc_runs.parquet")
    assert sorted(table["seed"]) == list(range(JOBS)) and table["llc_mean"].notna().all()
    assert table["target_id"].nunique() == 1
    leftovers = [p for p in tmp_path.rglob(".*") if p.name.endswith(".tmp") or (p.is_dir() and p.name != ".hydra")]
    assert not leftovers, leftovers


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_two_searches_on_one_optuna_study_share_its_trials(tmp_path: Path) -> None:
    """Two people resume the same study at once: together they run its n_trials, none twice."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    tiny = [
        "model.widths=[3,4,3]",
        "model.true_rank=1",
        "data.n=2000",
        "sampler.num_steps=400",
        "sampler.num_chains=2",
        "cpu_devices=1",
        "posterior.gamma=1.0",
        "sampler.batch_size=choice(100,200)",
        "sampler.step_size=tag(log,interval(1e-5,1e-4))",
        "plots=false",
        "progress=false",
        "mlflow.enabled=false",
    ]
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lambda_hat",
                "--multirun",
                "+hparams_search=sgld",
                *tiny,
                f"hydra.sweeper.storage={storage}",
                "hydra.sweeper.study_name=shared",
                "hydra.sweeper.n_trials=4",
                f"hydra.sweep.dir={tmp_path / f'sweep{i}'}",
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = _communicate_all(procs, timeout=1500)
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(log[-2000:] for log in logs)
    import optuna

    study = optuna.load_study(study_name="shared", storage=storage)
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    assert states.count("COMPLETE") == 4 and "RUNNING" not in states, states
