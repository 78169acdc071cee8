"""A resumable Optuna sweeper: ``hydra.sweeper.n_trials`` is the study's total, not this run's.

Why not the stock hydra-optuna-sweeper (1.3): its ``n_trials`` counts the trials *one invocation*
runs, so re-running an interrupted study (same ``storage`` and ``study_name``) runs n_trials more
instead of finishing it; a trial interrupted by Ctrl-C or kill stays RUNNING in the storage for
ever; the trial table is not written; and with no completed trial it crashes on ``best_trial``.
This subclass of the plugin's ``OptunaSweeperImpl`` reuses its search-space parsing and trial
configuration and replaces only the loop:

- each batch asks ``n_trials`` minus the study's finished trials (complete, pruned, failed; a
  trial running in another live process counts too), so a re-run resumes and a finished study
  runs nothing (it only rewrites the results);
- a trial interrupted here (KeyboardInterrupt / SystemExit from SIGINT/SIGTERM) is told FAIL,
  listed in the study's user attribute ``lambda_hat_interrupted`` (not counted) and its
  parameters are enqueued, so the re-run starts with them; a RUNNING trial left by a process
  killed outright (same host, pid gone) is treated the same at the next start;
- a job that fails (diverged, invalid config, no reference) is a FAIL trial; the sweep stops only
  when a batch's failure rate exceeds ``max_failure_rate`` (our presets: 1.0, never);
- job folders are numbered by trial number (a re-run into the same sweep dir never overwrites),
  and each trial records its job folder (user attribute ``job_dir``);
- at the end (and on interruption) ``<sweep dir>/trials.parquet`` holds the whole study
  (``study.trials_dataframe()``) and ``optimization_results.yaml`` the best parameters (or the
  Pareto front for two objectives), as the plugin writes it, plus counts;
- ``objective.with_work=true`` with one direction adds a second ``minimize`` (the run's FGE).

Hydra only instantiates plugins from the ``hydra_plugins`` package: hydra_plugins/lambda_hat_optuna
subclasses :class:`ResumableOptunaSweeper` there (the ``_target_`` of
``conf/hydra/sweeper/lambda_hat_optuna.yaml``), and Hydra's plugin scan finds it.

One module of about 400 lines, on purpose: most of it is one class, the loop above, which must be
defined inside a function (it subclasses the plugin's class, imported only on first use), so it
cannot be cut into modules; the rest (the SGLD family's search space, the trial table) is small.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import warnings
from pathlib import Path
from typing import Any, Sequence

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from lambda_hat.files import atomic_path

log = logging.getLogger("lambda_hat")

INTERRUPTED_ATTR = "lambda_hat_interrupted"  # study user attribute: numbers of interrupted trials
FIXED_ATTR = "lambda_hat_fixed_params"  # study user attribute: the fixed overrides it was started with
TRIALS_FILE = "trials.parquet"
RESULTS_FILE = "optimization_results.yaml"


class ResumableOptunaSweeper(Sweeper):
    """Hydra's face of the sweeper (the same arguments as the plugin's OptunaSweeper)."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: Any | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        search_space: DictConfig | None,
        custom_search_space: str | None,
        params: DictConfig | None,
    ) -> None:
        self.sweeper = _impl_class()(
            sampler,
            direction,
            storage,
            study_name,
            n_trials,
            n_jobs,
            max_failure_rate,
            search_space,
            custom_search_space,
            params,
        )

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        # The plugin builds its TPE sampler and distributions with arguments Optuna 4/5 deprecate:
        # one FutureWarning per trial says nothing about the user's search.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"optuna(\.|$)")
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from lambda_hat.sweeps import outcome

        outcome.current().search_ran = True  # its failed trials are FAIL trials of the study
        return self.sweeper.sweep(arguments)


# ---------------------------------------------------------------- the SGLD family's extra knobs


def sgld_family_space(config: DictConfig, trial: Any) -> None:
    """``custom_search_space`` of conf/hparams_search/sgld.yaml: the preconditioner's constants of
    the chosen sampler (RMSprop: decay, eps; Adam: beta2, eps; plain SGLD: none), so one preset
    serves the whole family. A key already in ``hydra.sweeper.params`` (or fixed) is left alone.
    Adam's beta1 stays at its preset value (0: a lagged first moment biases λ̂ upward)."""
    sampler = config.sampler
    taken = set(trial.params) | set(trial.user_attrs)

    def suggest(key: str, low: float, high: float, log: bool) -> None:
        name = f"sampler.{key}"
        if key in sampler and name not in taken:
            trial.suggest_float(name, low, high, log=log)

    suggest("decay", 0.9, 0.999, False)  # RMSprop
    suggest("beta2", 0.9, 0.9999, False)  # Adam
    suggest("eps", 1e-3, 1.0, True)  # both: bounds the preconditioner by 1/eps


# ---------------------------------------------------------------- the implementation


_IMPL: type | None = None


def _impl_class() -> type:
    """ResumableOptunaSweeperImpl, defined on first use (imports Optuna and the plugin)."""
    global _IMPL
    if _IMPL is None:
        _IMPL = _define_impl()
    return _IMPL


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _define_impl() -> type:
    import functools

    import optuna
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
    from optuna.trial import TrialState

    class ResumableOptunaSweeperImpl(OptunaSweeperImpl):
        """OptunaSweeperImpl whose n_trials is the study's total (see the module docstring)."""

        # ---- the study

        def _directions(self) -> list[str]:
            directions = self._get_directions()
            with_work = bool(OmegaConf.select(self.config, "objective.with_work", default=False))
            if with_work and len(directions) == 1:
                log.info("objective.with_work=true: second objective, the run's total FGE (minimize)")
                directions = [directions[0], "minimize"]
            elif not with_work and len(directions) == 2 and OmegaConf.select(self.config, "objective.enabled", default=False):
                raise ValueError(
                    "hydra.sweeper.direction has two objectives but objective.with_work=false "
                    "(a job returns one value); set objective.with_work=true or one direction"
                )
            return directions

        def _open_study(self, directions: list[str]) -> optuna.Study:
            if self.study_name is None:
                log.warning("hydra.sweeper.study_name is not set: this study cannot be resumed by name")
            if isinstance(self.storage, str) and self.storage.startswith("sqlite:///"):
                Path(self.storage.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
            study = optuna.create_study(
                study_name=self.study_name,
                storage=self.storage,
                sampler=self.sampler,
                directions=directions,
                load_if_exists=True,
            )
            stored = [d.name.lower() for d in study.directions]
            if stored != [d.lower() for d in directions]:
                raise ValueError(
                    f"study {study.study_name!r} in {self.storage} has directions {stored}, this sweep asks "
                    f"for {directions}; use another hydra.sweeper.study_name"
                )
            return study

        def _check_fixed(self, study: optuna.Study, fixed: dict[str, Any]) -> None:
            fixed_now = {k: str(v) for k, v in sorted(fixed.items())}
            before = study.user_attrs.get(FIXED_ATTR)
            if before is None:
                study.set_user_attr(FIXED_ATTR, fixed_now)
            elif before != fixed_now:
                diff = sorted(set(before.items()) ^ set(fixed_now.items()))
                log.warning(
                    "study %r was started with other fixed overrides (%s): its earlier trials may not be "
                    "comparable; use another hydra.sweeper.study_name for a new search",
                    study.study_name,
                    ", ".join(f"{k}={v}" for k, v in diff),
                )

        @staticmethod
        def _interrupted(study: optuna.Study) -> set[int]:
            return set(study.user_attrs.get(INTERRUPTED_ATTR, []))

        def _abandon(self, study: optuna.Study, trials: Sequence[Any], why: str) -> None:
            """Tell FAIL, mark interrupted (not counted) and enqueue the same parameters first."""
            if not trials:
                return
            numbers = self._interrupted(study)
            for t in trials:
                try:
                    _tell_safely(study, t.number, state=TrialState.FAIL)
                except Exception as e:  # already finished (e.g. told by its own process)
                    log.debug("trial %d: %s", t.number, e)
                    continue
                numbers.add(t.number)
                study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number}, skip_if_exists=False)
                log.warning("trial %d %s: marked FAIL; its parameters run first when the study resumes", t.number, why)
            study.set_user_attr(INTERRUPTED_ATTR, sorted(numbers))

        def _recover_stale(self, study: optuna.Study) -> None:
            host = socket.gethostname()
            stale = [
                t
                for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if t.user_attrs.get("host") == host
                and isinstance(t.user_attrs.get("pid"), int)
                and t.user_attrs["pid"] != os.getpid()
                and not _pid_alive(t.user_attrs["pid"])
            ]
            self._abandon(study, stale, "was left running by a sweep process that is gone")

        def _counted(self, study: optuna.Study) -> int:
            """Trials that count toward n_trials: finished (not interrupted) or running elsewhere."""
            interrupted = self._interrupted(study)
            states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
            return sum(1 for t in study.get_trials(deepcopy=False, states=states) if t.number not in interrupted)

        # ---- one batch

        def _launch(self, trials: list[Any], overrides: Sequence[Sequence[str]]) -> list[Any]:
            numbers = [t.number for t in trials]
            if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
                return list(self.launcher.launch(overrides, initial_job_idx=numbers[0]))
            # not consecutive (another process shares the study): one launch each, folder = trial number
            returns: list[Any] = []
            for n, ov in zip(numbers, overrides):
                returns += list(self.launcher.launch([ov], initial_job_idx=n))
            return returns

        def _tell(self, study: optuna.Study, trial: Any, ret: Any, n_objectives: int) -> Exception | None:
            try:
                out_dir = ret.hydra_cfg.hydra.runtime.output_dir
                trial.set_user_attr("job_dir", str(out_dir))
            except Exception:
                pass
            try:
                value = ret.return_value  # re-raises the job's exception
                if value is None:
                    raise ValueError("the job returned None (failed run; see its failure.json / objective.json)")
                values = [float(value)] if n_objectives == 1 else [float(v) for v in value]
                if len(values) != n_objectives:
                    raise ValueError(f"the job returned {len(values)} values for {n_objectives} objectives")
            except Exception as e:
                trial.set_user_attr("fail_reason", f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
                _tell_safely(study, trial, state=TrialState.FAIL)
                log.warning("trial %d failed: %s", trial.number, e)
                return e
            _tell_safely(study, trial, values=values, state=TrialState.COMPLETE)
            return None

        # ---- the sweep

        def sweep(self, arguments: list[str]) -> None:
            assert self.config is not None and self.launcher is not None
            self._process_searchspace_config()
            params_conf = self._parse_sweeper_params_config()
            params_conf.extend(arguments)
            is_grid = isinstance(self.sampler, functools.partial) and self.sampler.func == optuna.samplers.GridSampler
            distributions, fixed = create_params_from_overrides(params_conf)
            space = dict(self.search_space_distributions or {})
            space.update(distributions)
            for name in fixed:  # a value fixed on the command line leaves the search (before the grid)
                space.pop(name, None)
            total = int(self.n_trials)
            if is_grid:
                grid = {name: self._to_grid_sampler_choices(d) for name, d in space.items()}
                self.sampler = self.sampler(grid)
                size = 1
                for v in grid.values():
                    size *= len(v)
                total = min(total, size)

            directions = self._directions()
            study = self._open_study(directions)
            self._check_fixed(study, fixed)
            self._recover_stale(study)
            done = self._counted(study)
            if done and hasattr(self.sampler, "reseed_rng"):
                self.sampler.reseed_rng()  # a seeded sampler would otherwise repeat its first draws
            log.info(
                "Study %r (%s): %d of %d trials done, %d to run; sampler %s, directions %s",
                study.study_name,
                self.storage,
                done,
                total,
                max(0, total - done),
                type(self.sampler).__name__,
                directions,
            )

            host, pid = socket.gethostname(), os.getpid()
            running: list[Any] = []
            try:
                while (to_go := total - self._counted(study)) > 0:
                    running = [study.ask() for _ in range(min(int(self.n_jobs), to_go))]
                    for t in running:
                        t.set_user_attr("host", host)
                        t.set_user_attr("pid", pid)
                    overrides = self._configure_trials(running, space, fixed)
                    returns = self._launch(running, overrides)
                    failures = [e for t, r in zip(running, returns) if (e := self._tell(study, t, r, len(directions)))]
                    running = []
                    if failures and len(failures) / len(returns) > self.max_failure_rate:
                        log.error("%d of %d trials failed (max_failure_rate=%s): stopping", len(failures), len(returns), self.max_failure_rate)
                        self._write_results(study, directions, total)
                        raise failures[0]
            except (KeyboardInterrupt, SystemExit):
                self._abandon(study, [t for t in running if _is_running(study, t.number)], "was interrupted")
                self._write_results(study, directions, total)
                raise
            self._write_results(study, directions, total)

        # ---- the outputs

        def _write_results(self, study: optuna.Study, directions: list[str], total: int) -> None:
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            trials = study.get_trials(deepcopy=False)
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            counts = {s.name.lower(): sum(1 for t in trials if t.state == s) for s in TrialState}
            results: dict[str, Any] = {
                "name": "optuna",
                "study_name": study.study_name,
                "storage": None if self.storage is None else str(self.storage),
                "n_trials": total,
                "trials": {k: v for k, v in counts.items() if v},
                "interrupted": sorted(self._interrupted(study)),
            }
            if len(directions) < 2:
                if complete:
                    best = study.best_trial
                    results.update(
                        best_params=dict(best.params),
                        best_value=best.value,
                        best_trial=best.number,
                        best_job_dir=best.user_attrs.get("job_dir"),
                    )
                    log.info("Best parameters: %s", best.params)
                    log.info("Best value: %s (trial %d)", best.value, best.number)
                else:
                    results.update(best_params=None, best_value=None)
                    log.warning("no trial of study %r completed: no best parameters", study.study_name)
            else:
                front = study.best_trials
                results["solutions"] = [
                    {"params": dict(t.params), "values": list(t.values), "trial": t.number, "job_dir": t.user_attrs.get("job_dir")} for t in front
                ]
                log.info("Number of Pareto solutions: %d", len(front))
                for t in front:
                    log.info("    Values: %s, Params: %s", t.values, t.params)
            with atomic_path(sweep_dir / RESULTS_FILE) as tmp:
                OmegaConf.save(OmegaConf.create(json.loads(json.dumps(results, default=str))), tmp)
            try:
                path = write_trials_table(study, sweep_dir / TRIALS_FILE)
                log.info("trial table: %s (%d trials)", path, len(trials))
            except Exception as e:  # the study is in its storage; the table can be rebuilt from it
                log.warning("trial table not written (%s: %s)", type(e).__name__, e)

    def _tell_safely(study: optuna.Study, trial: Any, **kwargs: Any) -> None:
        try:
            study.tell(trial, **kwargs)
        except RuntimeError as e:
            # GridSampler calls study.stop() once the grid is done, which outside optimize()
            # raises after the trial was stored (the plugin ignores it too)
            if "Study.stop" not in str(e):
                raise

    def _is_running(study: optuna.Study, number: int) -> bool:
        return study.get_trials(deepcopy=False)[number].state == TrialState.RUNNING

    return ResumableOptunaSweeperImpl


def write_trials_table(study: Any, path: Path) -> Path:
    """study.trials_dataframe() as parquet (columns of mixed types become strings), atomically."""
    df = study.trials_dataframe()
    for col in df.columns:
        if df[col].dtype == object:
            kinds = {type(v) for v in df[col] if v is not None and v == v}
            if len(kinds) > 1 or (kinds and not kinds <= {str, bool, int, float}):
                df[col] = [None if v is None or v != v else (v if isinstance(v, str) else json.dumps(v, default=str)) for v in df[col]]
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return path
