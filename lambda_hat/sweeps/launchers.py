"""Hydra launchers for clean local processes and SLURM (hydra-submitit-launcher + submitit).

``hydra/launcher=local_parallel|slurm_cpu|slurm_gpu`` (conf/hydra/launcher/) select these classes.
On top of hydra-submitit-launcher they

* give each job its share of the machine: with k jobs at once on c cores a local job gets about
  c/k CPU devices and threads (``LAMBDA_HAT_CPUS``), a SLURM job ``SLURM_CPUS_PER_TASK`` (read by
  ``lambda_hat.devices.usable_cores``); JAX's GPU memory is not preallocated (``jax_env``), and
  a local job asking for GPUs gets GPUs no other running job has;
* never pass a parent's ``MLFLOW_RUN_ID`` to a job;
* keep the sweep going when a job dies outside Python (SIGKILL, ``scancel``, time limit, node
  failure): submitit's ``results()`` raises for such a job and Hydra would stop before the
  sweep's table. The job becomes a row (status ``cancelled``, ``timeout`` or ``killed``, the
  scheduler's state in ``error``), found within ``poll_s`` seconds (submitit itself backs off to
  minutes between ``sacct`` calls);
* with ``tracking: launcher`` (the SLURM presets' ``auto`` with a SQLite store) jobs write their
  MLflow run into their folder and this process, the store's only writer, logs each one as it
  ends (SQLite's locking is unreliable over NFS); with a tracking server jobs log live.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf, open_dict

log = logging.getLogger("lambda_hat")

# Keys of the presets that are ours, not submitit's.
OWN_KEYS = ("max_parallel", "gpus_per_job", "poll_s", "result_grace_s", "tracking", "jax_env")
# Scheduler states (sacct, submitit local) -> the sweep table's status of a job without a result.
_STATUS = {"CANCELLED": "cancelled", "TIMEOUT": "timeout", "PREEMPTED": "cancelled", "DEADLINE": "timeout"}


def job_status(state: str) -> str:
    """The table status of a job the scheduler ended in `state` (e.g. "CANCELLED by 0")."""
    return _STATUS.get(state.split()[0].upper() if state else "", "killed")


# Pending reasons a job never leaves by itself: the request exceeds what the partition, QOS or
# association allows (squeue's %r; SLURM's "Resources" and "Priority" are waits, not these).
_NEVER = ("PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints", "InvalidQOS", "InvalidAccount")
_NEVER_PREFIXES = ("QOSMax", "AssocMax", "QOSMin")


def unschedulable(reason: str) -> bool:
    """Whether a pending job's reason (squeue %r) says it can never start as requested."""
    return reason in _NEVER or (reason.startswith(_NEVER_PREFIXES) and "PerJob" in reason)


def _pending_reasons(array_id: str) -> dict[str, str]:
    """Task id -> squeue's reason, for the array's tasks that are PENDING ({} if squeue cannot tell)."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-j", array_id, "-t", "PD", "-o", "%i %r"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {}
    pairs = (line.split(None, 1) for line in out.stdout.splitlines() if line.strip())
    return {p[0]: p[1].strip() for p in pairs if len(p) == 2} if out.returncode == 0 else {}


def _squeue(array_id: str) -> set[str] | None:
    """Task ids ("A_i") of the array still queued or running; None if squeue cannot tell."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-j", array_id, "-o", "%i"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:  # e.g. "Invalid job id" once the whole array has left the queue
        return set() if "Invalid job id" in out.stderr else None
    return set(out.stdout.split())


def _visible_gpus() -> list[int]:
    """GPU indices on this machine (nvidia-smi), or the ones CUDA_VISIBLE_DEVICES allows."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [int(x) for x in visible.split(",") if x.strip().isdigit()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return list(range(sum(1 for line in out.splitlines() if line.startswith("GPU "))))


class _Launcher(BaseSubmititLauncher):
    """Shared by the local and SLURM launchers: job environment, submission, tolerant collection."""

    def __init__(
        self,
        max_parallel: int | None = None,
        gpus_per_job: int = 0,
        poll_s: float = 1.0,
        result_grace_s: float = 15.0,
        tracking: str = "jobs",
        jax_env: dict[str, Any] | None = None,
        **params: Any,
    ) -> None:
        super().__init__(**params)
        if tracking not in ("auto", "jobs", "launcher"):
            raise ValueError(f"hydra.launcher.tracking={tracking}: allowed: auto, jobs, launcher")
        self.max_parallel = max_parallel
        self.gpus_per_job = int(gpus_per_job or 0)
        self.poll_s = float(poll_s)
        self.result_grace_s = float(result_grace_s)
        self.tracking = tracking
        self.jax_env = {k: str(v) for k, v in (OmegaConf.to_container(jax_env) if OmegaConf.is_config(jax_env) else jax_env or {}).items()}
        self.job_env: dict[str, str] = {}  # set by launch(), applied in each job by __call__
        self._deferred = False

    # ------------------------------------------------------------------ in the job's process
    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        """The job: its environment first (before JAX starts in this process), then Hydra's run_job."""
        os.environ.pop("MLFLOW_RUN_ID", None)  # else parallel jobs write into one run
        for key, value in self.jax_env.items():
            os.environ.setdefault(key, value)
        os.environ.update(self.job_env)
        return super().__call__(*args, **kwargs)

    # ------------------------------------------------------------ in the launching process
    def _executor(self) -> Any:
        """submitit's executor with the preset's submitit parameters (as the base class builds it)."""
        import submitit

        params = {k: v for k, v in self.params.items() if k not in OWN_KEYS}
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
        return executor

    def _job_config(self, overrides: Sequence[str], idx: int) -> Any:
        assert self.hydra_context is not None and self.config is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = idx
        return cfg

    def _job_dir(self, cfg: Any) -> Path:
        return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)

    def _uses_file_store(self) -> bool:
        assert self.config is not None
        if not self.config.mlflow.enabled:
            return False
        from lambda_hat.tracking.store import resolve_tracking_uri

        uri = resolve_tracking_uri(self.config.mlflow.tracking_uri, Path(str(self.config.hydra.runtime.cwd)))
        return not uri.startswith(("http://", "https://", "databricks"))

    def _prepare(self, num_jobs: int) -> None:
        """Decide the tracking mode and the jobs' environment (subclasses add their CPU share)."""
        os.environ.pop("MLFLOW_RUN_ID", None)  # sbatch and local subprocesses copy this environment
        self._deferred = self.tracking == "launcher" or (self.tracking == "auto" and self._uses_file_store())
        if self._deferred:
            from lambda_hat.tracking.deferred import DEFERRED_ENV

            self.job_env[DEFERRED_ENV] = "1"
        if self.gpus_per_job > 0:
            from lambda_hat.devices import EXPECT_GPU_ENV

            self.job_env[EXPECT_GPU_ENV] = "1"

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and len(job_overrides) > 0
        self._prepare(len(job_overrides))
        executor = self._executor()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("Submitit '%s' sweep output dir : %s", self._EXECUTOR, sweep_dir)
        jobs = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            jobs.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        return self._run(executor, jobs)

    def _run(self, executor: Any, jobs: list[tuple[Any, ...]]) -> list[JobReturn]:
        raise NotImplementedError

    def _collect(self, job: Any, args: tuple[Any, ...], dead_since: dict[str, float]) -> JobReturn | None:
        """The job's JobReturn once it has ended, else None. A job that ended without a result
        (killed, cancelled) is written down as a row and returns a completed, empty JobReturn, as
        the app does for a failed job, so that the sweep goes on to its table."""
        if job.paths.result_pickle.exists():
            try:
                ret = job.results()[0]
            except Exception as e:  # the worker raised outside the task function
                return self._ended_without_result(job, args, f"submitit: {' '.join(str(e).split())[:300]}", "failed")
            self._log_deferred(args)
            return ret
        if not job.done():
            return None
        # Finished without a result file: give a network filesystem a moment to show it.
        first = dead_since.setdefault(job.job_id, time.monotonic())
        if self._EXECUTOR != "local" and time.monotonic() - first < self.result_grace_s:
            return None
        state = str(job.state)
        return self._ended_without_result(job, args, f"{self._EXECUTOR} job {job.job_id}: {state}", job_status(state))

    def _ended_without_result(self, job: Any, args: tuple[Any, ...], reason: str, status: str) -> JobReturn:
        from lambda_hat.outputs import write_failure
        from lambda_hat.sweeps.aggregate import read_json

        overrides, idx = args[0], args[2]
        cfg = self._job_config(overrides, idx)
        out_dir = self._job_dir(cfg)
        if not (out_dir / ".hydra" / "config.yaml").is_file():  # never started: give it a folder
            self._write_job_folder(cfg, out_dir, overrides)
        if not (out_dir / "metrics.json").exists():
            # Keep what the job wrote of its own end (e.g. "interrupted (SystemExit 143)") and add
            # the scheduler's word; a cancellation or time limit names the status better than "killed".
            own = read_json(out_dir / "failure.json") or {}
            if status == "killed" and own.get("status"):
                status = str(own["status"])
            write_failure(out_dir, status, "; ".join(str(x) for x in (own.get("error"), reason) if x))
        log.error("job %d %s (%s)", idx, status, reason)
        self._log_deferred(args, cfg=cfg, status=status)
        ret = JobReturn(overrides=overrides, cfg=cfg, working_dir=str(out_dir), task_name=str(cfg.hydra.job.name))
        ret.status = JobStatus.COMPLETED
        ret.return_value = None
        return ret

    @staticmethod
    def _write_job_folder(cfg: Any, out_dir: Path, overrides: list[str]) -> None:
        """.hydra/ as Hydra writes it for a job, so the table has a row for a job that never ran."""
        from lambda_hat.files import write_text

        hydra_dir = out_dir / ".hydra"
        hydra_dir.mkdir(parents=True, exist_ok=True)
        task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        write_text(hydra_dir / "config.yaml", OmegaConf.to_yaml(task))
        hydra = OmegaConf.create({"hydra": {"mode": "MULTIRUN", "job": {"num": int(cfg.hydra.job.num), "name": str(cfg.hydra.job.name)}}})
        write_text(hydra_dir / "hydra.yaml", OmegaConf.to_yaml(hydra))
        write_text(hydra_dir / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides))))

    def _log_deferred(self, args: tuple[Any, ...], cfg: Any = None, status: str | None = None) -> None:
        """Log the job's MLflow run from this process (tracking: launcher). Never raises."""
        if not self._deferred:
            return
        overrides, idx = args[0], args[2]
        try:
            from lambda_hat.sweeps import parent
            from lambda_hat.tracking import deferred, store, values

            cfg = cfg if cfg is not None else self._job_config(overrides, idx)
            out_dir = self._job_dir(cfg)
            launch_dir = Path(str(self.config.hydra.runtime.cwd))
            tags = {"lambda_hat.job_num": str(idx), "lambda_hat.overrides": " ".join(filter_overrides(overrides))}
            parent_id = parent.find(Path(str(cfg.hydra.sweep.dir)))
            if parent_id is not None:
                tags["mlflow.parentRunId"] = parent_id
            task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
            params, _ = values.split_long(values.flatten_config(task))
            fallback = {
                "tracking_uri": store.resolve_tracking_uri(cfg.mlflow.tracking_uri, launch_dir),
                "experiment": str(cfg.mlflow.experiment),
                "run_name": f"{cfg.sampler.name}-{cfg.model.name}-seed{cfg.seed}",
                "params": params,
                "tags": {**tags, "lambda_hat.output_dir": str(out_dir.resolve())},
            }
            extra = {"status": status} if status else {}
            unfinished = "KILLED" if status in ("cancelled", "killed", "timeout", None) else "FAILED"
            run_id = deferred.log_deferred_run(out_dir, fallback, unfinished, extra)
            if run_id:
                log.info("MLflow run %s logged for job %d", run_id, idx)
        except Exception as e:  # the job's files are on disk; the table still has its row
            log.warning("MLflow run of job %d not logged (%s: %s)", idx, type(e).__name__, " ".join(str(e).split())[:300])


class LocalParallelLauncher(_Launcher):
    """One clean process per job, at most max_parallel at once (default: one per usable core)."""

    _EXECUTOR = "local"

    def _prepare(self, num_jobs: int) -> None:
        from lambda_hat.devices import CPU_SHARE_ENV, usable_cores

        super()._prepare(num_jobs)
        cores = usable_cores()
        self._gpus = _visible_gpus() if self.gpus_per_job > 0 else []
        limit = self.max_parallel or cores
        if self.gpus_per_job > 0:
            if len(self._gpus) < self.gpus_per_job:
                raise ValueError(f"hydra.launcher.gpus_per_job={self.gpus_per_job}: only {len(self._gpus)} GPU(s) visible here")
            limit = min(limit, len(self._gpus) // self.gpus_per_job)
        self._parallel = max(1, min(int(limit), num_jobs))
        share = max(1, cores // self._parallel)
        # JAX: one CPU device per core of the share; numpy/BLAS threads likewise.
        self.job_env.update({CPU_SHARE_ENV: str(share), "OMP_NUM_THREADS": str(share), "OPENBLAS_NUM_THREADS": str(share), "MKL_NUM_THREADS": str(share)})
        log.info("local_parallel: %d job(s), %d at once, %d CPU core(s) each", num_jobs, self._parallel, share)

    def _run(self, executor: Any, jobs: list[tuple[Any, ...]]) -> list[JobReturn]:
        # submitit's local executor starts every job at once; a window keeps k running.
        waiting = list(range(len(jobs)))
        running: dict[int, tuple[Any, list[int]]] = {}
        free = list(self._gpus)
        results: list[JobReturn | None] = [None] * len(jobs)
        dead_since: dict[str, float] = {}
        while waiting or running:
            while waiting and len(running) < self._parallel:
                i = waiting.pop(0)
                gpus = [free.pop(0) for _ in range(self.gpus_per_job)]
                # submitit hides GPUs unless asked, then gives every job the first ones, so each
                # job names its own (AutoExecutor does not pass visible_gpus through).
                executor._executor.parameters.update(gpus_per_node=len(gpus), visible_gpus=tuple(gpus))
                running[i] = (executor.submit(self, *jobs[i]), gpus)
            for i, (job, gpus) in list(running.items()):
                ret = self._collect(job, jobs[i], dead_since)
                if ret is not None:
                    results[i] = ret
                    free.extend(gpus)
                    del running[i]
            if running:
                time.sleep(min(self.poll_s, 0.5))
        return [r for r in results if r is not None]


class SlurmLauncher(_Launcher):
    """A SLURM job array; each job's CPU share is its SLURM_CPUS_PER_TASK (see the module docstring)."""

    _EXECUTOR = "slurm"

    def _executor(self) -> Any:
        executor = super()._executor()
        if self.jax_env:  # in the sbatch script, where `sbatch` users look for it
            exports = [f"export {k}={shlex.quote(v)}" for k, v in self.jax_env.items()]
            setup = list(executor.parameters.get("setup") or [])
            executor.update_parameters(slurm_setup=exports + setup)
        return executor

    def _run(self, executor: Any, jobs: list[tuple[Any, ...]]) -> list[JobReturn]:
        submitted = executor.map_array(self, *zip(*jobs))
        log.info("SLURM job(s) %s submitted", ", ".join(j.job_id for j in submitted))
        results: list[JobReturn | None] = [None] * len(jobs)
        dead_since: dict[str, float] = {}
        gone_since: dict[str, float] = {}
        never_seen: dict[str, int] = {}  # task id -> polls it was seen pending for a reason that never resolves
        last_poll = 0.0
        while any(r is None for r in results):
            queued: set[str] | None = None
            pending: dict[str, str] = {}
            if time.monotonic() - last_poll >= self.poll_s:
                # One sacct call for every job, at a fixed pace (submitit backs off to minutes).
                submitted[0].watcher.update()
                queued = _squeue(submitted[0].job_id.split("_")[0])
                pending = _pending_reasons(submitted[0].job_id.split("_")[0])
                last_poll = time.monotonic()
            for i, job in enumerate(submitted):
                if results[i] is not None:
                    continue
                reason = pending.get(job.job_id, "")
                if unschedulable(reason):
                    # Seen twice (a poll apart): the scheduler's verdict, not a transient state. It
                    # would wait forever; cancel it and say what to change.
                    never_seen[job.job_id] = never_seen.get(job.job_id, 0) + 1
                    if never_seen[job.job_id] >= 2:
                        subprocess.run(["scancel", job.job_id], capture_output=True, timeout=30)
                        why = (
                            f"slurm job {job.job_id}: PENDING ({reason}), which SLURM never starts: the request exceeds what "
                            f"the partition allows; lower hydra.launcher.cpus_per_task (now {self.params.get('cpus_per_task')}), "
                            f"hydra.launcher.mem_gb (now {self.params.get('mem_gb')}), the GPUs or timeout_min, or choose "
                            "another hydra.launcher.partition (sinfo lists them)"
                        )
                        results[i] = self._ended_without_result(job, jobs[i], why, "cancelled")
                        continue
                results[i] = self._collect(job, jobs[i], dead_since)
                # An array task cancelled while pending can leave no sacct record (slurm 22.05):
                # submitit would wait for it forever. Gone from squeue and unknown to sacct = ended.
                if results[i] is None and queued is not None and job.job_id not in queued and job.state == "UNKNOWN":
                    first = gone_since.setdefault(job.job_id, time.monotonic())
                    if time.monotonic() - first >= self.result_grace_s:
                        reason = f"slurm job {job.job_id}: CANCELLED (left the queue with no accounting record)"
                        results[i] = self._ended_without_result(job, jobs[i], reason, "cancelled")
            if any(r is None for r in results):
                time.sleep(0.5)
        return [r for r in results if r is not None]
