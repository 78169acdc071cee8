"""Launcher presets for real: local_parallel (clean processes) and slurm_cpu (a SLURM job array on
the dev cluster, scripts/slurm-dev-cluster.sh), with jobs killed and cancelled mid-sweep; the
slurm_gpu sbatch script as rendered. Timings are not asserted beyond generous bounds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient
from omegaconf import OmegaConf

from lambda_hat.composition import CONF_DIR
from lambda_hat.devices import device_warning, usable_cores

from tests.conftest import ROOT

# A target that compiles and samples in seconds; job "long" runs until it is killed.
SMALL = ["model.widths=[3,4,3]", "data.n=2000", "sampler.batch_size=50", "sampler.num_burnin=200", "sampler.num_chains=2", "plots=false", "progress=false"]
SMALL += ["sampler.until_converged=false"]  # a known length: the long job is still running when it is killed
SHORT, LONG = 400, 20_000_000


def start_multirun(args: list[str], cwd: Path) -> subprocess.Popen:
    """`python -m lambda_hat --multirun ARGS` in cwd, MLflow in cwd/mlflow.db; a stale MLFLOW_RUN_ID
    in its environment must not reach the jobs."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_RUN_ID": "0123456789abcdef0123456789abcdef"}
    return subprocess.Popen(
        [sys.executable, "-m", "lambda_hat", "--multirun", *SMALL, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen) -> None:
    """End a multirun a failed test leaves behind, with its local jobs (one process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for(what: str, check: Any, timeout: float, proc: subprocess.Popen | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the multirun ended while waiting for {what}:\n{proc.stdout.read()[-4000:]}")
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def job_dir(cwd: Path, num: int) -> Path | None:
    found = list(cwd.glob(f"multirun/*/*/{num}/.hydra/config.yaml"))
    return found[0].parent.parent if found else None


def finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the multirun did not end within {timeout:.0f}s of the kills:\n{proc.communicate()[0][-4000:]}")
    return out


def check_table_and_mlflow(cwd: Path, expected: dict[int, tuple[str, str]], ncores: int) -> pd.DataFrame:
    """The sweep table has one row per job with the expected status; the ok job has its metrics
    and ran on its share of the CPU; MLflow has a finished parent with one child per job in the
    expected state (each its own run: MLFLOW_RUN_ID was not inherited)."""
    tables = list(cwd.glob("multirun/*/*/llc_runs.parquet"))
    assert len(tables) == 1
    df = pd.read_parquet(tables[0]).set_index("job_num")
    assert {k: df.at[k, "status"] for k in expected} == {k: v[0] for k, v in expected.items()}, df[["status", "error"]]
    for num, (status, _) in expected.items():
        if status == "ok":
            metrics = json.loads((Path(df.at[num, "output_dir"]) / "metrics.json").read_text())
            assert metrics["llc_mean"] > 0 and metrics["device_platform"] == "cpu"
            assert metrics["device_count"] == ncores
        else:
            assert df.at[num, "error"]
    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("lambda_hat").experiment_id])
    parents = [r for r in runs if r.data.tags.get("lambda_hat.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = {int(r.data.tags["lambda_hat.job_num"]): r for r in runs if r is not parents[0]}
    assert sorted(children) == sorted(expected)
    for num, child in children.items():
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.info.status == expected[num][1], (num, child.info.status)
        assert child.info.run_id == df.at[num, "mlflow_run_id"]
    ok = [children[n] for n, v in expected.items() if v[0] == "ok"]
    assert all(r.data.tags["device_platform"] == "cpu" and r.data.metrics["device_count"] == ncores for r in ok)
    return df


@pytest.mark.slow  # 19 s on CI; a killed job's row and MLflow run: tests/e2e/test_faults.py, test_aggregate.py
@pytest.mark.timeout(1500)
def test_local_parallel_keeps_the_sweep_through_a_sigkill(tmp_path: Path) -> None:
    # (SIGTERM, what scancel sends, is exercised through submitit's worker by the SLURM test.)
    proc = start_multirun(["hydra/launcher=local_parallel", f"sampler.num_steps={SHORT},{LONG}"], tmp_path)
    try:

        def pid_of(num: int) -> int | None:
            d = job_dir(tmp_path, num)
            record = d / "mlflow_run.json" if d else None
            return json.loads(record.read_text())["pid"] if record and record.exists() else None

        killed = wait_for("job 1 to start its run", lambda: pid_of(1), 420, proc)
        assert killed not in (os.getpid(), proc.pid)  # a process of its own
        os.kill(killed, signal.SIGKILL)
        out = finish(proc, 420)
        assert proc.returncode == 1 and "1 job(s) of the sweep ended before finishing (1 killed)" in out, out[-4000:]
        df = check_table_and_mlflow(tmp_path, {0: ("ok", "FINISHED"), 1: ("killed", "KILLED")}, max(1, usable_cores() // 2))
        assert "local job" in df.at[1, "error"]  # the launcher's word on a job that left no result
    finally:
        stop(proc)


def squeue(name: str) -> dict[str, str]:
    """{array job id "N_i": state} of the jobs called name."""
    out = subprocess.run(["squeue", "-h", "-r", "-n", name, "-o", "%i %T"], capture_output=True, text=True).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


@pytest.mark.slurm
@pytest.mark.timeout(1500)
def test_slurm_cpu_sweep_with_a_running_and_a_pending_job_cancelled(tmp_path: Path) -> None:
    name = f"lh_test_{os.getpid()}_{int(time.time())}"
    proc = start_multirun(
        [
            "hydra/launcher=slurm_cpu",
            f"hydra.launcher.name={name}",
            "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1",
            "hydra.launcher.array_parallelism=2",
            "hydra.launcher.poll_s=1",
            "hydra.launcher.result_grace_s=3",
            f"sampler.num_steps={SHORT},{LONG},{SHORT}",
        ],
        tmp_path,
    )
    try:
        jobs = wait_for("the array in squeue", lambda: (lambda q: q if len(q) == 3 else None)(squeue(name)), 420, proc)
        by_index = {int(k.split("_")[1]): k for k in jobs}
        # Job 2 waits behind jobs 0 and 1 (two at once): cancel it before it ever runs.
        subprocess.run(["scancel", by_index[2]], check=True)
        wait_for("job 1 to start", lambda: job_dir(tmp_path, 1), 420, proc)
        subprocess.run(["scancel", by_index[1]], check=True)
        cancelled_at = time.monotonic()
        out = finish(proc, 420)
        assert proc.returncode == 1 and "2 job(s) of the sweep ended before finishing (2 cancelled)" in out, out[-4000:]
        # Bounded: SIGTERM, KillWait (10 s on the dev cluster), sacct polled every second, a 3 s grace.
        # (The first job may still be running: the sweep ends when it does.)
        assert time.monotonic() - cancelled_at < 420
        df = check_table_and_mlflow(tmp_path, {0: ("ok", "FINISHED"), 1: ("cancelled", "KILLED"), 2: ("cancelled", "KILLED")}, 1)
        assert "CANCELLED" in df.at[1, "error"] and "CANCELLED" in df.at[2, "error"]
        assert not (Path(df.at[2, "output_dir"]) / "metrics.json").exists()
    finally:
        stop(proc)
        subprocess.run(["scancel", "--name", name], capture_output=True)


@pytest.mark.slurm
@pytest.mark.timeout(900)
def test_an_unschedulable_slurm_request_ends_the_sweep_with_the_reason(tmp_path: Path) -> None:
    """The dev cluster's one node has 2 CPUs: 64 CPUs per job stays PENDING (PartitionConfig) for
    ever. The sweep says so within a poll or two, with what to change, cancels the jobs and ends
    with their rows marked cancelled."""
    name = f"lh_test_unsched_{os.getpid()}_{int(time.time())}"
    started = time.monotonic()
    proc = start_multirun(
        [
            "hydra/launcher=slurm_cpu",
            f"hydra.launcher.name={name}",
            "hydra.launcher.cpus_per_task=64",
            "hydra.launcher.mem_gb=1",
            "hydra.launcher.poll_s=1",
            "seed=0,1",
        ],
        tmp_path,
    )
    try:
        out = finish(proc, 600)
    finally:
        subprocess.run(["scancel", "--name", name], capture_output=True)
    assert proc.returncode == 1, out[-4000:]
    assert "PENDING (PartitionConfig)" in out and "hydra.launcher.cpus_per_task (now 64)" in out, out[-4000:]
    assert time.monotonic() - started < 600
    (table,) = tmp_path.glob("multirun/*/*/llc_runs.parquet")
    df = pd.read_parquet(table)
    assert list(df["status"]) == ["cancelled", "cancelled"]
    assert df["error"].str.contains("PartitionConfig").all()
    assert not squeue(name)  # nothing left waiting in the queue


def test_unschedulable_reasons() -> None:
    from lambda_hat.sweeps.launchers import unschedulable

    for reason in ("PartitionConfig", "PartitionTimeLimit", "QOSMaxCpuPerJobLimit", "AssocMaxWallDurationPerJobLimit"):
        assert unschedulable(reason), reason
    for reason in ("Resources", "Priority", "ReqNodeNotAvail, UnavailableNodes:n1", "Dependency", "QOSGrpCpuLimit", ""):
        assert not unschedulable(reason), reason


def test_slurm_gpu_sbatch_script_has_gpu_memory_time_and_jax_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra_plugins.lambda_hat_launchers import SlurmLauncher

    # submitit's executor refuses to exist without `srun` on PATH; the script's text needs no
    # cluster, so a stand-in lets this run on any machine (the slurm-marked tests submit for real).
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ.get('PATH', '')}")

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}"],
            return_hydra_config=True,
        )
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params.pop("_target_") == "hydra_plugins.lambda_hat_launchers.SlurmLauncher"
    launcher = SlurmLauncher(**params)
    script = launcher._executor()._executor._make_submission_file_text("python -m lambda_hat", "uid")
    for option in ("--gpus-per-task=1", "--mem=32GB", "--time=720", "--cpus-per-task=4", "--partition=gpu", "--job-name=lambda_hat"):
        assert f"#SBATCH {option}\n" in script, (option, script)
    for line in ("export XLA_PYTHON_CLIENT_PREALLOCATE=false", "export XLA_PYTHON_CLIENT_MEM_FRACTION=0.9", "export LAMBDA_HAT_EXPECT_GPU=1"):
        assert line in script.split("# command")[0]


def test_cpu_share_and_gpu_fallback_come_from_the_launch_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LAMBDA_HAT_CPUS", "SLURM_CPUS_PER_TASK", "LAMBDA_HAT_EXPECT_GPU", "SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS"):
        monkeypatch.delenv(var, raising=False)
    cores = usable_cores()
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert usable_cores() == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", str(cores + 5))
    assert usable_cores() == cores  # never more than the affinity mask allows
    on_cpu = {"device_platform": "cpu", "device_kind": "cpu", "device_count": 1}
    assert device_warning(on_cpu) is None
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "1")
    assert "GPU was requested" in device_warning(on_cpu)
    assert device_warning({**on_cpu, "device_platform": "gpu"}) is None


def test_a_deferred_run_is_logged_once_by_the_launching_process(tmp_path: Path, make_cfg: Any) -> None:
    from lambda_hat.tracking import deferred

    cfg = make_cfg(mlflow=True)
    out = tmp_path / "job"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"llc_mean": 2.5, "status": "ok"}))
    run = deferred.DeferredRun(cfg, tmp_path, "sgld-dln-seed0", record=out / "mlflow_run.json", tags={"lambda_hat.job_num": "3"})
    assert not (tmp_path / "mlflow.db").exists()  # the job never touches the store
    run.log_results({}, [out / "metrics.json"], {"status": "ok"})
    run.end("FINISHED")
    run_id = deferred.log_deferred_run(out)
    assert deferred.log_deferred_run(out) is None  # logged once
    logged = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(run_id)
    assert logged.info.status == "FINISHED" and logged.data.metrics["llc_mean"] == 2.5
    assert logged.data.tags["lambda_hat.job_num"] == "3" and logged.data.params["sampler.name"] == "sgld"
    assert json.loads((out / "mlflow_run.json").read_text())["run_id"] == run_id


def test_a_bad_launcher_override_is_one_line() -> None:
    from lambda_hat.command_line import check_overrides

    assert check_overrides(["--multirun", "hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=2"]) is None
    typo = check_overrides(["hydra/launcher=slurm_cpu", "hydra.launcher.partiton=gpu"])
    assert typo.startswith("hydra.launcher.partiton: unknown key; allowed keys here:") and "partition" in typo
    assert check_overrides(["hydra/launcher=local_parallel", "hydra.launcher.tracking=nfs"]) == (
        "hydra.launcher.tracking: 'nfs' is not one of auto, jobs, launcher"
    )
    assert check_overrides(["hydra/launcher=slurm"]).startswith("hydra/launcher=slurm: no such option; available:")
