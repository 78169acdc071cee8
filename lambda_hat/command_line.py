"""The command line checked before Hydra runs anything: Hydra's flags split from the overrides, each
override parsed, launcher options, every value of a swept group, a multirun's first job in the
order Hydra's sweeper builds it, VI options without sampler=vi, then the composed config validated
(lambda_hat.registry.validate) and Hydra's node checked (lambda_hat.preflight). Each problem is
one line naming the key (:func:`check_overrides`); lambda_hat.app prints it and exits 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lambda_hat.composition import CONF_DIR, compose_config, describe_error
from lambda_hat.config import ConfigError
from lambda_hat.registry import validate

VALUE_FLAGS = {
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
PASS_THROUGH = {"--hydra-help", "--shell-completion", "-sc", "--version", "--experimental-rerun"}
# Hydra's mutually exclusive modes, by flag spelling.
MODE_FLAGS = {"--run": "run", "-r": "run", "--multirun": "multirun", "-m": "multirun", "--cfg": "cfg", "-c": "cfg", "--info": "info", "-i": "info"}


def split_argv(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Hydra's flags (with their values) and the overrides of a command line."""
    flags: dict[str, str] = {}
    overrides: list[str] = []
    it = iter(argv)
    for a in it:
        if a.startswith("-"):
            name, eq, value = a.partition("=")
            if name in VALUE_FLAGS and not eq:
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
    flags, overrides = split_argv(argv)
    if any(f in PASS_THROUGH for f in flags):
        return None
    modes = [f for f in flags if f in MODE_FLAGS]
    if len({MODE_FLAGS[f] for f in modes}) > 1:  # Hydra's own answer is a ValueError traceback
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
        from lambda_hat.tracking.store import TrackingError, check_store, resolve_tracking_uri

        try:
            check_store(resolve_tracking_uri(cfg.mlflow.tracking_uri, Path.cwd()))
        except TrackingError as e:
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
    interpolate another swept key (an entry like `defaults: [/x@_global_: ${level}/y]` reads a
    `+level=...` swept after it), so the first job composes as Hydra will compose it."""
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
