"""The command line: Hydra app, fast one-line config errors, and the final summary line.

This is the only module that touches Hydra's runtime (output folder, launch directory).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lambda_hat.composition import CONF_DIR, describe_error
from lambda_hat import command_line
from lambda_hat.command_line import check_overrides, split_argv
from lambda_hat.sweeps import outcome  # what the sweep came to, for the exit status

log = logging.getLogger("lambda_hat")


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def hydra_app(cfg: DictConfig) -> float | None:
    from lambda_hat import signals
    from lambda_hat.devices import configure_cpu_devices

    # Here, not only in main(): a launcher's worker (submitit) calls this function directly.
    with signals.terminate_on_signals():
        # Before the runner's imports: importing blackjax starts JAX, which fixes the device count.
        configure_cpu_devices(cfg.cpu_devices)
        # Hydra logs at INFO; JAX's backend probe would print "Unable to initialize backend 'tpu'".
        logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
        from lambda_hat.budget import apply_budget
        from lambda_hat.runner import run  # after Hydra set up logging
        from lambda_hat.summary import summary_line
        from lambda_hat.tracking.store import TrackingError

        from lambda_hat.outputs import write_failure

        out_dir = Path(HydraConfig.get().runtime.output_dir)
        launch_dir = Path(hydra.utils.get_original_cwd())
        # Hydra catches only Exception from a job, and its sweeper re-raises the first one after the
        # batch: on_multirun_end (the sweep table) never runs, nor do later batches. So in a sweep a
        # failed job is written down and returns; main() exits non-zero after the sweep.
        sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
        if cfg.plots is None:  # plots: on for a single run, off in sweeps (config.py says why)
            cfg.plots = not sweeping
        # Sized as run() sizes it, before resume compares it; with this job's own overrides, so that a
        # sampler key the budget would replace fails this job in one line (the up-front check sees
        # only a sweep's first job), as any bad value does.
        from lambda_hat.config import ConfigError

        budget_error: ConfigError | None = None
        try:
            apply_budget(cfg, overrides=list(HydraConfig.get().overrides.task))
        except ConfigError as e:
            budget_error = e
        run_tags = {}
        if sweeping:
            from lambda_hat.sweeps import parent

            hc = HydraConfig.get()
            outcome.current().sweep_dirs.add(str(Path(hc.sweep.dir).resolve()))
            run_tags = {"lambda_hat.job_num": str(hc.job.num), "lambda_hat.overrides": " ".join(hc.overrides.task)}
            parent_id = parent.find(Path(hc.sweep.dir))
            if parent_id is not None:
                run_tags["mlflow.parentRunId"] = parent_id
        earlier = None
        if cfg.resume and budget_error is None:
            from lambda_hat.sweeps.resume import completed

            earlier = completed(out_dir, cfg)
            if earlier is None:
                (out_dir / "failure.json").unlink(missing_ok=True)  # an earlier attempt's
        try:
            if budget_error is not None:
                raise budget_error
            if earlier is not None:
                log.info("resume: %s is complete (status %s); its results are reused", out_dir, earlier["status"])
                metrics = earlier
            else:
                metrics = run(cfg, out_dir, launch_dir, run_tags)
        except TrackingError as e:
            # The estimate's files are on disk; say so in one line instead of a traceback.
            log.error("tracking failed: %s", e)
            print(f"lambda_hat: error: {e}; the results are in {out_dir}", file=sys.stderr, flush=True)
            if sweeping:  # SystemExit would end the whole sweep
                write_failure(out_dir, "failed", f"tracking failed: {e}")
                outcome.current().failed_jobs.append(str(out_dir))
                return None
            raise SystemExit(3) from None
        except (KeyboardInterrupt, SystemExit) as e:
            write_failure(out_dir, "killed", f"interrupted ({type(e).__name__} {getattr(e, 'code', '')})".strip())
            raise
        except BaseException as e:
            # A sweep's table shows this job as a failed row with this message.
            message = describe_error(e)
            write_failure(out_dir, "failed", message)
            if sweeping and isinstance(e, Exception):
                log.error("job failed: %s", message)
                print(f"lambda_hat: error: {message} (job {out_dir})", file=sys.stderr, flush=True)
                outcome.current().failed_jobs.append(str(out_dir))
                return None
            if isinstance(e, Exception) and os.environ.get("HYDRA_FULL_ERROR") != "1":
                # One line, not Hydra's traceback; the traceback is one variable away.
                log.error("job failed: %s", message)
                print(
                    f"lambda_hat: error: {message} (job {out_dir}; HYDRA_FULL_ERROR=1 shows the traceback)",
                    file=sys.stderr,
                    flush=True,
                )
                raise SystemExit(1) from None
            raise
        print(summary_line(metrics), flush=True)
        if cfg.objective.enabled:  # what a sweeper (Optuna) minimises
            from lambda_hat.sweeps.objective import objective_value

            return objective_value(cfg, metrics, out_dir)
        return metrics["llc_mean"]


def help_text() -> str:
    """lambda_hat's own --help: groups, presets, the main knobs and examples."""
    from lambda_hat.registry import ESTIMATORS

    def presets(group: str) -> str:
        return ", ".join(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))

    families = {}
    for name, e in ESTIMATORS.items():
        families.setdefault(e.family, []).append(name)
    fam = "; ".join(f"{k}: {', '.join(v)}" for k, v in families.items())
    return f"""lambda_hat: estimate the local learning coefficient (LLC, λ̂) of a neural network.

usage: python -m lambda_hat [KEY=VALUE ...]            one estimate
       python -m lambda_hat --multirun KEY=A,B ...     a sweep (one job per combination)
       python -m lambda_hat --cfg job [KEY=VALUE ...]  print the composed config and exit

config groups (choose a preset with GROUP=PRESET):
  model      {presets("model")}   (model.widths=[in,...,out], model.true_rank;
             your own network: model=user model.factory=PKG.MODULE:FUNCTION [model.checkpoint=PATH])
  data       {presets("data")}   (data.n, data.input_dist, data.noise_std)
  posterior  {presets("posterior")}   (posterior.beta0: β = beta0 / log n, posterior.gamma)
  sampler    {presets("sampler")}
             ({fam})
  training   {presets("training")}   (how w* is found for model=mlp)
  vi         {presets("vi")}   (with sampler=vi only: vi.rank, vi.components, vi.flow, vi.latent_dim)

main knobs: sampler.num_chains, sampler.num_steps, sampler.num_burnin (or burnin_fraction),
  sampler.step_size, sampler.batch_size, sampler.target_mala_accept (SGLD family),
  sampler.num_warmup (hmc, nuts), seed, target_seed, mlflow.enabled, plots, progress,
  resume (a sweep re-run with resume=true runs only its unfinished jobs)

examples:
  python -m lambda_hat sampler=hmc
  python -m lambda_hat model.widths=[10,20,15,10] model.true_rank=4 sampler=rmsprop_sgld seed=3
  python -m lambda_hat --multirun sampler=sgld,hmc seed=0,1,2
  python -m lambda_hat sampler=vi vi=mfa vi.rank=16

Every key with its type and default: python -m lambda_hat --cfg job; Hydra's own options: --hydra-help.
Outputs go to outputs/<date>/<time>/ (metrics.json, trace.parquet, plots); MLflow to ./mlflow.db.
"""


def _resume_in_place(argv: list[str]) -> None:
    """resume=true in a sweep without hydra.sweep.dir: continue the newest earlier sweep of the
    same command line in its folder (lambda_hat.sweeps.resume), by adding hydra.sweep.dir."""
    flags, overrides = split_argv(argv)
    multirun = any(f in ("-m", "--multirun") for f in flags)
    resume = any(o.split("=", 1)[0] == "resume" and o.split("=", 1)[1].lower() == "true" for o in overrides if "=" in o)
    if not (multirun and resume) or any(o.split("=", 1)[0] == "hydra.sweep.dir" for o in overrides):
        return
    from lambda_hat.sweeps.resume import find_sweep

    sweep = find_sweep(Path.cwd(), overrides)
    if sweep is None:
        print("lambda_hat: resume: no earlier sweep of this command line under multirun/; starting one", file=sys.stderr)
        return
    print(f"lambda_hat: resume: continuing the sweep in {sweep}", file=sys.stderr)
    sys.argv.append(f"hydra.sweep.dir={sweep}")  # Hydra reads its command line from sys.argv


def _interrupted() -> None:
    """Ctrl-C: the finished jobs are on disk; write the sweep table so far and say how to go on."""
    for sweep in sorted(outcome.current().sweep_dirs):
        try:
            from lambda_hat.sweeps import aggregate, orphans

            df = orphans.finalize_orphan_runs(aggregate.collect_rows(sweep))
            path = aggregate.write_table(sweep, df)
            print(f"lambda_hat: interrupted; sweep table so far: {aggregate.summary_line(df, path)}", file=sys.stderr)
        except Exception as e:  # the jobs' files are there; python -m lambda_hat.aggregate rebuilds it
            print(f"lambda_hat: interrupted; table not written ({e})", file=sys.stderr)
    if outcome.current().sweep_dirs:
        print("lambda_hat: re-run the same command with resume=true to run only the unfinished jobs", file=sys.stderr)
    else:
        print("lambda_hat: interrupted", file=sys.stderr)


def main() -> None:
    """Console entry point (`lambda-hat`, `python -m lambda_hat`)."""
    argv = sys.argv[1:]
    if any(a in ("--help", "-h") for a in argv):
        print(help_text())
        return
    from lambda_hat.sweeps.checkpoints import expand_argv

    flags, _ = split_argv(argv)
    argv, error = expand_argv(argv, any(f in ("-m", "--multirun") for f in flags))  # a folder/glob of checkpoints
    sys.argv[1:] = argv  # Hydra reads its command line from sys.argv
    if error is None:
        error = check_overrides(argv)
    if error is not None:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" and command_line.last_error is not None:
            traceback.print_exception(command_line.last_error)  # asked for: the whole story, then the line
        print(f"lambda_hat: error: {error}", file=sys.stderr)
        sys.exit(2)
    _resume_in_place(argv)
    try:
        hydra_app()
    except KeyboardInterrupt:
        _interrupted()
        sys.exit(130)
    code, message = outcome.current().exit_status()
    if message:
        print(message, file=sys.stderr)
    if code:
        sys.exit(code)
