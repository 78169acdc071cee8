"""The command line: Hydra app, fast one-line config errors, and the final summary line.

This is the only module that touches Hydra's runtime (output folder, launch directory).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lambda_hat.composition import CONF_DIR, compose_config, describe_error
from lambda_hat.config import ConfigError
from lambda_hat.registry import validate
from lambda_hat.sweeps import outcome  # what the sweep came to, for the exit status

log = logging.getLogger("lambda_hat")

_VALUE_FLAGS = {
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--info",
    "-i",
}
_PASS_THROUGH = {"--hydra-help", "--shell-completion", "-sc", "--version", "--experimental-rerun"}
# Hydra's mutually exclusive modes, by flag spelling.
_MODE_FLAGS = {"--run": "run", "-r": "run", "--multirun": "multirun", "-m": "multirun", "--cfg": "cfg", "-c": "cfg", "--info": "info", "-i": "info"}


def _split_argv(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Hydra's flags (with their values) and the overrides of a command line."""
    flags: dict[str, str] = {}
    overrides: list[str] = []
    it = iter(argv)
    for a in it:
        if a.startswith("-"):
            name, eq, value = a.partition("=")
            if name in _VALUE_FLAGS and not eq:
                value = next(it, "")
                if name in ("--info", "-i") and "=" in value:  # --info takes an optional value
                    overrides.append(value)
                    value = ""
            flags[name] = value
        else:
            overrides.append(a)
    return flags, overrides


def _parse_one(override: str) -> str | None:
    """One line naming the key of an override Hydra's grammar rejects, or None if it parses."""
    try:
        OverridesParser.create().parse_overrides([override])
    except HydraException as e:
        key = override.split("=", 1)[0] if "=" in override else override
        reason = " ".join(str(e).split())
        reason = reason.split(" See https://")[0].removeprefix(f"Error parsing override '{override}' ")
        return f"{key}: cannot parse {override!r} ({reason}); lists are [a,b], quote values with spaces or brackets, e.g. 'model.widths=[10,20,20,10]'"
    return None


# The exception behind the last error line of check_overrides (HYDRA_FULL_ERROR=1 prints its traceback).
last_error: BaseException | None = None


LAUNCHER_TRACKING = ("auto", "jobs", "launcher")  # hydra.launcher.tracking (lambda_hat/sweeps/launchers.py)


def check_launcher(overrides: list[str], config_dir: str | None, config_name: str) -> str | None:
    """One line for a bad launcher override (hydra/launcher=..., hydra.launcher.KEY=...), else None."""
    mine = [o for o in overrides if o.lstrip("+~").startswith(("hydra/launcher=", "hydra.launcher."))]
    if not mine:
        return None
    group = [o for o in mine if o.startswith("hydra/launcher=")]

    def launcher(ovs: list[str]) -> DictConfig:
        with initialize_config_dir(str(Path(config_dir or CONF_DIR).resolve()), version_base="1.3"):
            return compose(config_name, overrides=ovs, return_hydra_config=True).hydra.launcher

    try:
        node = launcher(mine)
    except (HydraException, OmegaConfBaseException) as e:
        line = describe_error(e).replace("hydra=launcher/", "hydra/launcher=", 1)
        if line.startswith("hydra.launcher.") and not line.startswith("hydra.launcher: "):
            try:
                keys = sorted(k for k in launcher(group) if k != "_target_")
                line = f"{line.split(':', 1)[0]}: unknown key; allowed keys here: {', '.join(keys)}"
            except (HydraException, OmegaConfBaseException):
                pass
        return line
    tracking = node.get("tracking")
    if tracking is not None and tracking not in LAUNCHER_TRACKING:
        return f"hydra.launcher.tracking: {tracking!r} is not one of {', '.join(LAUNCHER_TRACKING)}"
    return None


def check_overrides(argv: list[str]) -> str | None:
    """Compose the config the command line asks for and validate it; return an error line or None.

    Runs before Hydra launches anything, so typos fail fast with one line. For sweeps the first
    value of each discrete sweep is checked (the sweeper and each job still validate every value:
    a bad later value fails that job alone); every sweep and search range must be non-empty.
    Hydra's node is checked too (lambda_hat.preflight): the code it names, the output folder and
    caches. A config named with -cp/-cd/-cn is composed and checked the same way.
    """
    global last_error
    last_error = None
    flags, overrides = _split_argv(argv)
    if any(f in _PASS_THROUGH for f in flags):
        return None
    modes = [f for f in flags if f in _MODE_FLAGS]
    if len({_MODE_FLAGS[f] for f in modes}) > 1:  # Hydra's own answer is a ValueError traceback
        return (
            f"{' and '.join(modes)}: Hydra runs one of --run, --multirun, --cfg and --info at a time; "
            "to see a sweep job's config, give that job's single values with --cfg job (no --multirun)"
        )
    for ov in overrides:
        error = _parse_one(ov)
        if error is not None:
            return error
    from lambda_hat import preflight

    multirun = any(f in ("-m", "--multirun") for f in flags)
    error = check_launcher(
        overrides,
        flags.get("--config-dir") or flags.get("-cd") or flags.get("--config-path") or flags.get("-cp"),
        flags.get("--config-name") or flags.get("-cn") or "config",
    )
    if error is not None:
        return error
    parsed = OverridesParser.create().parse_overrides(overrides)
    config_dir = flags.get("--config-dir") or flags.get("-cd") or flags.get("--config-path") or flags.get("-cp")
    config_name = flags.get("--config-name") or flags.get("-cn") or "config"
    try:
        first_values: dict[str, str] = {}  # key -> its override with the first value of a sweep
        for ov in parsed:
            key = ov.get_key_element()
            if ov.is_sweep_override():
                preflight.check_sweep(key, ov.value())
                if key.startswith("hydra"):
                    continue
                first = _first_value(ov)
                if first is not None:
                    first_values[key] = f"{key}={first}"
            else:
                first_values[key] = ov.input_line
        error = _check_group_sweeps(parsed, config_dir)
        if error is not None:
            return error
        single = list(first_values.values())
        if multirun:
            single = _first_job(parsed, first_values, config_dir, config_name)
        error = _check_vi_options(single, config_dir, config_name)
        if error is not None:
            return error
        cfg = compose_config(single, config_dir=config_dir, config_name=config_name, return_hydra_config=True)
        validate(cfg)
        preflight.check_hydra(cfg, multirun)
        if cfg.model.name == "user":  # the user's factory, checkpoint, data and loss, in one line
            from lambda_hat.devices import configure_cpu_devices

            configure_cpu_devices(cfg.cpu_devices)  # before the runner's imports start JAX
            from lambda_hat.runner import check_user_target

            check_user_target(cfg)
    except (HydraException, OmegaConfBaseException, ConfigError) as e:
        last_error = e
        return describe_error(e)
    if cfg.mlflow.enabled:
        from lambda_hat import tracking

        try:
            tracking.check_store(tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri, Path.cwd()))
        except tracking.TrackingError as e:
            last_error = e
            return str(e)
    return None


def _check_group_sweeps(parsed: list[Any], config_dir: str | None) -> str | None:
    """An error line for the first value of a swept config group that names no option
    (`sampler=sgld,sgdl`): checked for every value before anything is launched, so a typo in a
    later value is one line too, and no sweep (nor its MLflow parent run) starts."""
    from hydra.core.global_hydra import GlobalHydra

    swept = [ov for ov in parsed if ov.is_sweep_override() and "." not in ov.get_key_element().lstrip("+~") and not ov.get_key_element().startswith("hydra")]
    if not swept:
        return None
    with initialize_config_dir(str(Path(config_dir or CONF_DIR).resolve()), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        for ov in swept:
            group = ov.get_key_element().lstrip("+~").split("@", 1)[0]
            if not loader.get_group_options(group):  # a plain key without a dot (seed=0,1)
                continue
            try:
                values = list(ov.sweep_string_iterator())
            except Exception:  # an interval: not a group's options
                continue
            for value in values:
                sub, _, name = f"{group}/{value}".rpartition("/")
                options = loader.get_group_options(sub)
                if name not in options:
                    return f"{group}={value}: no such option; available: {', '.join(sorted(options))}"
    return None


def _first_value(ov: Any) -> str | None:
    """The first value of a discrete sweep override; None for an interval (Optuna) sweep."""
    try:
        return next(iter(ov.sweep_string_iterator()))
    except Exception:  # interval sweeps have no discrete values
        return None


def _first_job(parsed: list[Any], first_values: dict[str, str], config_dir: str | None, config_name: str) -> list[str]:
    """The overrides of a multirun's first job, in the order Hydra's sweeper gives them: the
    config's hydra.sweeper.params first (a command-line value replacing the config's in its
    place), then the rest of the command line. The order matters where a preset's defaults
    interpolate another swept key (the leaderboard's sampler entries read its budget), so
    `'+experiment@_global_=choice(leaderboard/hmc)'` with the preset's budget sweep is valid."""
    # As Hydra composes a multirun: without the sweeps; and only the choices of configs (plus
    # hydra.*), so that a typo in a value is reported by the full check, in its own words.
    choices = [ov.input_line for ov in parsed if not ov.is_sweep_override() and ("." not in ov.get_key_element() or ov.get_key_element().startswith("hydra."))]
    try:
        base = compose_config(choices, config_dir=config_dir, config_name=config_name, return_hydra_config=True)
        params = OmegaConf.select(base, "hydra.sweeper.params") or {}
    except (HydraException, OmegaConfBaseException, ConfigError):
        return list(first_values.values())  # the full check reports what is wrong
    rest, ordered = dict(first_values), []
    for key, value in params.items():
        if key in rest:
            ordered.append(rest.pop(key))
            continue
        try:
            (ov,) = OverridesParser.create().parse_overrides([f"{key}={value}"])
        except HydraException:
            continue  # the sweeper reports its own params
        if str(key).startswith("hydra"):
            continue
        if not ov.is_sweep_override():
            ordered.append(f"{key}={value}")
        elif (first := _first_value(ov)) is not None:
            ordered.append(f"{key}={first}")
    return ordered + list(rest.values())


def _check_vi_options(overrides: list[str], config_dir: str | None, config_name: str) -> str | None:
    """An error line when a vi.* option (or vi=...) is given without sampler=vi: the `vi` group
    exists only under sampler=vi, and Hydra's own message would not say so."""
    keys = [ov.split("=", 1)[0] for ov in overrides]
    vi_keys = [k for k in keys if k.lstrip("+~") == "vi" or k.lstrip("+~").startswith("vi.")]
    if not vi_keys:
        return None
    others = [ov for ov, k in zip(overrides, keys) if k not in vi_keys]
    try:
        sampler = compose_config(others, config_dir=config_dir, config_name=config_name).sampler.name
    except (HydraException, OmegaConfBaseException):
        return None  # the full check reports what is wrong
    if sampler == "vi":
        return None
    return f"{vi_keys[0]}: a VI option, applies only with sampler=vi (here sampler={sampler}); add sampler=vi"


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
        from lambda_hat.runner import run, summary_line  # after Hydra set up logging
        from lambda_hat.tracking import TrackingError

        from lambda_hat.outputs import write_failure

        out_dir = Path(HydraConfig.get().runtime.output_dir)
        launch_dir = Path(hydra.utils.get_original_cwd())
        # Hydra catches only Exception from a job, and its sweeper re-raises the first one after the
        # batch: on_multirun_end (the sweep table) never runs, nor do later batches. So in a sweep a
        # failed job is written down and returns; main() exits non-zero after the sweep.
        sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
        if cfg.plots is None:  # plots: on for a single run, off in sweeps (config.py says why)
            cfg.plots = not sweeping
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
        if cfg.resume:
            from lambda_hat.sweeps.resume import completed

            earlier = completed(out_dir, cfg)
            if earlier is None:
                (out_dir / "failure.json").unlink(missing_ok=True)  # an earlier attempt's
        try:
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
    flags, overrides = _split_argv(argv)
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
            from lambda_hat.sweeps import aggregate

            df = aggregate.finalize_orphan_runs(aggregate.collect_rows(sweep))
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

    flags, _ = _split_argv(argv)
    argv, error = expand_argv(argv, any(f in ("-m", "--multirun") for f in flags))  # a folder/glob of checkpoints
    sys.argv[1:] = argv  # Hydra reads its command line from sys.argv
    if error is None:
        error = check_overrides(argv)
    if error is not None:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" and last_error is not None:
            traceback.print_exception(last_error)  # asked for: the whole story, then the line
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
