"""A sweep in MLflow: one parent run per multirun, every job its child, λ̂ series as steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lambda_hat.tracking import values

ROOT = Path(__file__).resolve().parents[2]


def test_multirun_is_one_parent_with_a_child_per_job(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LAMBDA_HAT_CACHE": str(tmp_path / "cache")}
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lambda_hat",
            "--multirun",
            "model.widths=[3,4,3]",
            "model.true_rank=1",
            "data.n=2000",
            "sampler.batch_size=100",
            "sampler.num_steps=400",
            "sampler.until_converged=false",  # 400 steps: the λ̂ series below has 399 points
            "sampler.num_tune=100",
            "sampler.num_chains=2",
            "seed=0,1",
            "plots=false",
            "progress=false",
            "mlflow.experiment=study_a",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert {e.name for e in client.search_experiments()} - {"Default"} == {"study_a"}  # one per study, not per sweep
    runs = client.search_runs([client.get_experiment_by_name("study_a").experiment_id])
    parents = [r for r in runs if r.data.tags.get("lambda_hat.kind") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_ok"] == 2
    assert "llc_runs.parquet" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    for child in children:
        tags = child.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id and child.info.status == "FINISHED"
        assert tags["lambda_hat.job_num"] in {"0", "1"} and "seed=" in tags["lambda_hat.overrides"]
        assert Path(tags["lambda_hat.output_dir"]).parent == sweep.resolve()
        assert tags["sampler"] == "sgld" and "version.jax" in tags and tags["mlflow.source.name"] == "python -m lambda_hat"
        assert tags["lambda_hat.command"].startswith("python -m lambda_hat --multirun") and "mlflow.source.git.commit" in tags
        history = client.get_metric_history(child.info.run_id, "running_llc/chain_0")
        assert len(history) >= 10 and history[-1].step == 399  # steps are the sampler's steps
        assert child.info.end_time - child.info.start_time > 100  # the job's real duration, not ~50 ms


def test_long_values_are_kept_intact_outside_params() -> None:
    short, long = values.split_long({"a": "x" * 10, "b": "y" * 7000})
    assert short == {"a": "x" * 10} and long == {"b": "y" * 7000}
