"""Faults injected into real sweeps: Ctrl-C keeps finished jobs and resume=true runs only the
rest; a bad value or diverging chains fail their job alone, as a failed row saying why."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
# job 0 fine, job 1 an invalid step (passes the up-front check, which reads the first value only),
# job 2 a step that makes both chains diverge, job 3 fine. The SIGINT is sent once job 3's folder
# exists, and each job samples for a few seconds, so it lands while job 3 runs.
SWEEP = [
    "--multirun",
    "sampler.step_size=1e-6,-1,1,2e-6",
    "sampler.target_mala_accept=null",
    "model.widths=[3,4,3]",
    "model.true_rank=1",
    "data.n=2000",
    "sampler.batch_size=100",
    "sampler.num_steps=300000",
    "sampler.mala_every=0",
    "sampler.num_chains=2",
    "cpu_devices=1",
    "plots=false",
    "progress=false",
    "mlflow.enabled=false",
]


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "lambda_hat", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# slow (~60 s): it passed 4 times of 5 with this trigger; the one failure, at load ~4, was not
# diagnosed, so it stays out of the default run.
@pytest.mark.slow
def test_ctrl_c_keeps_finished_jobs_and_resume_runs_only_the_rest(tmp_path: Path) -> None:
    first = _start(SWEEP, tmp_path)
    deadline = time.time() + 240
    # Not on job 0's metrics.json: jobs 1 and 2 fail at once and job 3 could end before the signal.
    while not list(tmp_path.glob("multirun/*/*/3")):
        assert first.poll() is None and time.time() < deadline, first.communicate()[1][-3000:]
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 130 and "Traceback" not in err, err[-3000:]
    (sweep,) = tmp_path.glob("multirun/*/*")
    job0 = sweep / "0" / "metrics.json"
    kept = job0.stat().st_mtime_ns
    assert json.loads(job0.read_text())["status"] == "ok"
    if "resume=true" in err:  # Ctrl-C was handled in Python (not in a long native call: see signals.py)
        table = pd.read_parquet(sweep / "llc_runs.parquet")  # the table so far
        assert table["status"].iloc[0] == "ok" and list(table["job_num"])[0] == 0

    time.sleep(1.1)  # a new timestamped folder would differ: resume must find this one
    second = _start([*SWEEP, "resume=true"], tmp_path)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 1, err[-3000:]  # jobs 1 and 2 failed
    assert f"continuing the sweep in {sweep}" in err, err[-3000:]
    assert len(list(tmp_path.glob("multirun/*/*"))) == 1
    assert job0.stat().st_mtime_ns == kept  # job 0 was not run again
    assert f"resume: {sweep / '0'} is complete (status ok); its results are reused" in out + err, (out + err)[-3000:]

    table = pd.read_parquet(sweep / "llc_runs.parquet").set_index("job_num")
    assert list(table["status"]) == ["ok", "failed", "failed", "ok"], table[["status", "error"]]
    assert "sampler.step_size=-1.0 is invalid: must be > 0" in table.loc[1, "error"]  # a bad value: its row alone
    assert "all 2 chains produced NaN/inf" in table.loc[2, "error"] and table.loc[2, "chains_ok"] == 0  # diverged
    assert table.loc[0, "llc_mean"] > 0 and table.loc[3, "llc_mean"] > 0
    assert "2 job(s) of the sweep failed" in err
