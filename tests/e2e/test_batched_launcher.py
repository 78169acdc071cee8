"""hydra/launcher=batched: the jobs that share a program run as one batch, the others alone, and
the sweep's outputs are those of any sweep (one folder, row and MLflow child run per job)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_cli

SWEEP = [
    "--multirun",
    "hydra/launcher=batched",
    "hydra.launcher.max_points=2",  # 3 batchable points: programs of 2 and 1
    "model.widths=[4,6,4]",
    "model.true_rank=2",
    "data.n=2000",
    "sampler=sgld_lau",  # a fixed step
    "sampler.num_burnin=null,1000",  # 1000 >= num_steps: config errors, which cannot be batched, run alone
    "sampler.num_chains=2",
    "sampler.num_steps=400",
    "posterior.gamma=1e9,100,300",  # γ = 1e9 makes SGLD's fixed step diverge
]


def test_batched_sweep_with_diverging_point_fallback_sub_batches_and_resume(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli([*SWEEP, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    # the diverged job and the invalid ones failed, the sweep went on and says so
    assert proc.returncode == 1 and "4 job(s) of the sweep failed" in proc.stderr, proc.stderr[-3000:]
    assert "3 in 1 batched group(s), 3 alone" in proc.stdout + proc.stderr
    df = pd.read_parquet(sweep / "llc_runs.parquet").sort_values("job_num")
    assert len(df) == 6
    batched, alone = df[df["job_num"] < 3], df[df["job_num"] >= 3]
    assert batched["batch_points"].tolist() == [2, 2, 1]
    assert batched["status"].tolist() == ["failed", "ok", "ok"]  # the diverged point alone failed
    assert alone["status"].tolist() == ["failed"] * 3
    assert all("sampler.num_burnin=1000" in str(e) for e in alone["error"])
    for job in df["job_num"]:
        folder = sweep / str(job)
        assert (folder / ".hydra" / "overrides.yaml").exists() and (folder / "failure.json").exists() == (job in (0, 3, 4, 5))
        # an invalid config is neither resolved nor run: its failure.json says why
        assert (folder / "config_resolved.yaml").exists() == (folder / "metrics.json").exists() == (job < 3)
    assert batched["mlflow_run_id"].notna().all() and batched["mlflow_run_id"].nunique() == 3  # one child run each

    # An interrupted batched sweep: job 1's results are gone; resume runs it alone, reuses the rest.
    kept = {j: (sweep / str(j) / "metrics.json").stat().st_mtime_ns for j in (0, 2)}
    first = json.loads((sweep / "1" / "metrics.json").read_text())
    (sweep / "1" / "metrics.json").unlink()
    proc = run_cli([*SWEEP, f"hydra.sweep.dir={sweep}", "resume=true"], cwd=tmp_path)
    assert "4 job(s) of the sweep failed" in proc.stderr, proc.stderr[-3000:]
    assert {j: (sweep / str(j) / "metrics.json").stat().st_mtime_ns for j in kept} == kept
    again = json.loads((sweep / "1" / "metrics.json").read_text())
    # the same job and draws, now run alone: equal up to float32 rounding (tests/unit/test_grid.py)
    assert again["batch_points"] == 1 and first["batch_points"] == 2
    assert again["llc_mean"] == pytest.approx(first["llc_mean"], rel=1e-5)
    assert len(pd.read_parquet(sweep / "llc_runs.parquet")) == 6


def test_optuna_trials_of_one_batch_run_as_one_program(tmp_path: Path) -> None:
    """The Optuna sweeper hands the launcher n_jobs trials at a time: with the batch size fixed
    they differ only in step size and γ, so each batch of trials is one grid."""
    sweep = tmp_path / "sweep"
    args = ["--multirun", "+hparams_search=sgld", "hydra/launcher=batched", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2"]
    args += ["sampler.batch_size=100", "model.widths=[4,6,4]", "model.true_rank=2", "data.n=2000", "sampler.num_steps=400", "sampler.num_chains=2"]
    proc = run_cli([*args, "mlflow.enabled=false", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count("2 in 1 batched group(s), 0 alone") == 2
    df = pd.read_parquet(sweep / "llc_runs.parquet")
    assert len(df) == 4 and set(df["batch_points"]) == {2} and (df["status"] == "ok").all()
    assert (sweep / "optimization_results.yaml").exists()
