"""Jobs that start together on a fresh SQLite store must all get their MLflow run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[2]

JOB = """
import sys
from pathlib import Path
from omegaconf import OmegaConf
from lambda_hat.tracking.tracked import TrackedRun
cfg = OmegaConf.create({"mlflow": {"tracking_uri": sys.argv[1], "experiment": "race"}, "seed": int(sys.argv[2])})
run = TrackedRun(cfg, Path("."), f"job{sys.argv[2]}")
run.end("FINISHED")
"""


def test_simultaneous_jobs_on_a_fresh_sqlite_store_all_log(tmp_path: Path) -> None:
    # Without prepare_sqlite_store, 0-1 of 6 such jobs got a run (MLflow's migrations race).
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", JOB, uri, str(i)], cwd=ROOT, stderr=subprocess.PIPE, text=True) for i in range(6)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, "\n".join(errors)
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"job{i}" for i in range(6)]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert not list(tmp_path.glob(".mlflow.db.*.tmp"))  # no temporary store left behind
