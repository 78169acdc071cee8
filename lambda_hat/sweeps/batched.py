"""``hydra/launcher=batched``: a sweep's jobs that share one program run as one batch.

Hydra's basic launcher runs the jobs one after another in this process. This one first reads
every job's config and groups the jobs that differ only in numbers a grid may vary (seeds,
``posterior.beta0``/``gamma``, the estimator's ``grid_keys``: lambda_hat.grid.structure); each
group of two or more is estimated at once (lambda_hat.grid.estimate_grid, sub-batches within
``max_batch_mb``). Then every job runs through Hydra's ``run_job`` as usual (its folder, its
``.hydra/``, callbacks, the app's error handling, its files and MLflow child run), taking its
estimate from the batch instead of sampling (runs until converged batch too: each point stops
where it would have alone, the batch runs on until its last point stops); the other jobs (another target, another sampler,
a config error, VI) simply sample as ordinary jobs. With ``resume=true`` a
job that is already complete is left out of the batch (the app reuses its results). If a whole
batch fails (e.g. compiling it runs out of memory) its jobs fall back to running one by one.

A batched job's metrics.json says ``batch_points`` (how many points shared its program); its
times are its share of the batch's. The batch's own progress lines are in the sweep's log.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict, read_write

log = logging.getLogger("lambda_hat")


@dataclass
class _Job:
    idx: int
    overrides: list[str]
    config: DictConfig  # Hydra's sweep config of the job (hydra node included)
    out_dir: Path
    task: DictConfig | None = None  # the config the app will run, when it can be batched


class BatchedLauncher(Launcher):
    def __init__(self, max_points: int = 64, max_batch_mb: float | None = None) -> None:
        super().__init__()
        self.max_points = int(max_points)
        self.max_batch_mb = None if max_batch_mb is None else float(max_batch_mb)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _job(self, overrides: Sequence[str], idx: int) -> _Job:
        assert self.hydra_context is not None and self.config is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = idx
            cfg.hydra.job.num = idx
        return _Job(idx, list(overrides), cfg, Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir))

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs = [self._job(o, initial_job_idx + i) for i, o in enumerate(job_overrides)]
        groups = self._groups(jobs)
        batched = sum(len(g) for g in groups)
        log.info("Launching %d jobs: %d in %d batched group(s), %d alone", len(jobs), batched, len(groups), len(jobs) - batched)
        group_of = {id(job): g for g in groups for job in g}
        estimated: set[int] = set()
        returns: list[JobReturn] = []
        for job in jobs:
            group = group_of.get(id(job))
            if group is not None and id(group) not in estimated:
                estimated.add(id(group))
                self._estimate(group)
            log.info("\t#%d : %s", job.idx, " ".join(filter_overrides(job.overrides)))
            returns.append(
                run_job(
                    hydra_context=self.hydra_context,
                    task_function=self.task_function,
                    config=job.config,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            )
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return returns

    def _groups(self, jobs: list[_Job]) -> list[list[_Job]]:
        """Jobs that one program can run, two or more to a group, in job order."""
        assert self.config is not None
        from lambda_hat.devices import configure_cpu_devices

        configure_cpu_devices(self.config.cpu_devices)  # before JAX starts (lambda_hat.grid's imports)
        # as the app does: JAX's backend probe would log "Unable to initialize backend 'tpu'"
        logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
        from lambda_hat import grid

        by_key: dict[str, list[_Job]] = {}
        for job in jobs:
            key = self._structure(job, grid)
            if key is not None:
                by_key.setdefault(key, []).append(job)
        return [g for g in by_key.values() if len(g) > 1]

    def _structure(self, job: _Job, grid: Any) -> str | None:
        """The job's lambda_hat.grid.structure, None when it must run alone (or has run: resume)."""
        from lambda_hat import registry
        from lambda_hat.budget import apply_budget
        from lambda_hat.config import ConfigError

        cfg = _task_config(job.config)
        try:
            apply_budget(cfg, overrides=list(job.config.hydra.overrides.task))
            registry.validate(cfg)
            key = grid.structure(cfg)
        except ConfigError:
            return None  # the job itself reports it, in one line
        except Exception as e:  # e.g. an interpolation only Hydra's job context resolves
            log.info("job #%d runs alone: %s: %s", job.idx, type(e).__name__, " ".join(str(e).split())[:200])
            return None
        if cfg.resume:
            from lambda_hat.sweeps.resume import completed

            if completed(job.out_dir, cfg) is not None:
                return None
        job.task = cfg
        return key

    def _estimate(self, group: list[_Job]) -> None:
        """Estimate the group at once and hand each job its estimate (lambda_hat.runner)."""
        from lambda_hat import signals
        from lambda_hat.grid import estimate_grid
        from lambda_hat.runner import provide_estimate

        log.info("Batched: jobs %s as one grid", ", ".join(f"#{j.idx}" for j in group))
        try:
            with signals.terminate_on_signals():
                results = estimate_grid([j.task for j in group if j.task is not None], max_batch_mb=self.max_batch_mb, max_points=self.max_points)
        except Exception as e:
            log.warning("batched grid of %d jobs failed (%s: %s); they run one by one", len(group), type(e).__name__, " ".join(str(e).split())[:300])
            return
        for job, result in zip(group, results):
            provide_estimate(job.out_dir, *result)


def _task_config(config: DictConfig) -> DictConfig:
    """The job's config as the task function gets it (Hydra's run_job drops the hydra node), with
    the app's sweep default for plots (lambda_hat.app: off in sweeps)."""
    cfg = copy.deepcopy(config)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    if cfg.plots is None:
        cfg.plots = False
    return cfg
