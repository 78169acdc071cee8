"""Checks of a command line before anything runs, beyond the schemas (lambda_hat.config.validate):

- the code Hydra's node names (callbacks, sweeper, launcher, Optuna's sampler, the custom search
  space) is lambda_hat's, Hydra's or a Hydra plugin's: nothing else is imported from a config;
- the launcher and sweeper it names are installed and have their required fields;
- sweeps and search spaces are not empty or inverted (``range(5,1)``, ``interval(1e-4,1e-9)``,
  a log interval from 0, ``n_trials=0``);
- the folders a run writes (output folder, target/reference cache, XLA cache, an Optuna study's
  SQLite file) can be written.

Each failure is a ConfigError whose message is one line naming the key. Imports no JAX.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from lambda_hat.config import ConfigError, default_cache_dir

# Prefixes of the classes/functions a config may name for Hydra to instantiate or call.
ALLOWED_TARGETS = ("lambda_hat.", "hydra.", "hydra_plugins.", "optuna.samplers.")
ALLOWED_FUNCTIONS = ("lambda_hat.",)  # hydra.sweeper.custom_search_space


def check_targets(node: Any, prefix: str = "hydra") -> None:
    """Every `_target_` under Hydra's node starts with one of ALLOWED_TARGETS."""
    if isinstance(node, DictConfig):
        for key in node.keys():
            child = node._get_node(key)
            path = f"{prefix}.{key}"
            if key == "_target_":
                value = OmegaConf.select(node, str(key), default=None)
                if value is not None and not str(value).startswith(ALLOWED_TARGETS):
                    raise ConfigError(
                        path,
                        message=f"{path}={value!r} is not allowed: a config may only name classes under "
                        f"{', '.join(ALLOWED_TARGETS)} (lambda_hat's own, Hydra's and its plugins')",
                    )
            else:
                check_targets(child, path)
    elif isinstance(node, ListConfig):
        for i, child in enumerate(node._iter_ex(resolve=False)):
            check_targets(child, f"{prefix}[{i}]")


def check_sweep(key: str, sweep: Any) -> None:
    """A sweep value (Hydra's override grammar) that enumerates or spans nothing is rejected."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    if isinstance(sweep, IntervalSweep):
        lo, hi = sweep.start, sweep.end
        if not lo < hi:
            raise ConfigError(key, message=f"{key}=interval({lo}, {hi}) is invalid: an interval needs low < high")
        if "log" in sweep.tags and lo <= 0:
            raise ConfigError(key, message=f"{key}=tag(log, interval({lo}, {hi})) is invalid: a log interval needs low > 0")
    elif isinstance(sweep, RangeSweep):
        if next(_range(sweep), None) is None:
            raise ConfigError(key, message=f"{key}=range({sweep.start}, {sweep.stop}, {sweep.step}) is invalid: it has no values")
    elif isinstance(sweep, ChoiceSweep) and not sweep.list:
        raise ConfigError(key, message=f"{key}: an empty choice is invalid")


def _range(sweep: Any) -> Any:
    start, stop, step = sweep.start, sweep.stop, sweep.step
    if step == 0:
        return iter(())
    value = start
    while (step > 0 and value < stop) or (step < 0 and value > stop):
        yield value
        value += step


def check_search_space(hydra: DictConfig) -> None:
    """The Optuna sweeper's params (from a preset or hydra.sweeper.params.*) and n_trials."""
    sweeper = hydra.get("sweeper")
    if not isinstance(sweeper, DictConfig) or "optuna" not in str(sweeper.get("_target_", "")).lower():
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    params = sweeper.get("params") or {}
    for name, value in params.items():
        key = f"hydra.sweeper.params.{name}"
        if not isinstance(value, str):
            continue
        try:
            override = parser.parse_override(f"{name}={value}")
        except Exception as e:
            raise ConfigError(key, message=f"{key}: cannot parse {value!r} ({' '.join(str(e).split())[:200]})") from None
        if override.is_sweep_override():
            check_sweep(key, override.value())
    n_trials = sweeper.get("n_trials")
    if n_trials is not None and int(n_trials) < 1:
        raise ConfigError("hydra.sweeper.n_trials", n_trials, "must be >= 1 (the study's total number of trials)")
    space_fn = sweeper.get("custom_search_space")
    if space_fn is not None and not str(space_fn).startswith(ALLOWED_FUNCTIONS):
        raise ConfigError("hydra.sweeper.custom_search_space", space_fn, f"must be a function under {', '.join(ALLOWED_FUNCTIONS)}")


def writable_dir_error(key: str, path: Path | str) -> str | None:
    """One line if folder `path` cannot be created or written (None when it can)."""
    folder = Path(path).expanduser()
    probe = folder
    while not probe.exists():  # the nearest existing ancestor decides
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"{key}={str(path)!r} is invalid: {probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{key}={str(path)!r} is invalid: {probe} is not writable by this user"
    return None


def _select(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=None)
    except Exception:  # an interpolation that resolves only inside a running job
        return None


def check_folders(cfg: DictConfig, multirun: bool) -> None:
    """The run's (or sweep's) output folder and the caches it writes must be writable."""
    folders = []
    out_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    out = _select(cfg, out_key)
    if out is not None:
        folders.append((out_key, out))
    storage = _select(cfg, "hydra.sweeper.storage")  # an Optuna study in SQLite
    if multirun and isinstance(storage, str) and storage.startswith("sqlite:///"):
        folders.append(("hydra.sweeper.storage", Path(storage.removeprefix("sqlite:///")).parent))
    cache = cfg.cache_dir or default_cache_dir()
    folders.append(("cache_dir", cache))
    folders.append(("compilation_cache_dir", cfg.compilation_cache_dir or Path(cache) / "xla"))
    for key, path in folders:
        error = writable_dir_error(key, path)
        if error is not None:
            raise ConfigError(key, message=error)


def check_plugins(hydra: DictConfig) -> None:
    """The launcher and sweeper a preset names are installed (an optional extra may be missing)
    and have every required field (a `???` left in the preset)."""
    import importlib.util

    for group in ("launcher", "sweeper"):
        node = hydra.get(group)
        if not isinstance(node, DictConfig):
            continue
        target = str(node.get("_target_", ""))
        module = target.rsplit(".", 1)[0]
        if module and module != "hydra_plugins.lambda_hat":  # registered at run time, not a module
            try:
                found = importlib.util.find_spec(module) is not None
            except ImportError:
                found = False
            if not found:
                raise ConfigError(
                    f"hydra.{group}",
                    message=f"hydra.{group}._target_={target!r}: {module} is not installed; install the "
                    "optional extra that provides it (pyproject.toml, [project.optional-dependencies])",
                )
        missing = sorted(OmegaConf.missing_keys(node))  # full dotted keys
        if missing:
            key = missing[0] if missing[0].startswith("hydra.") else f"hydra.{group}.{missing[0]}"
            raise ConfigError(key, message=f"{key}: required, and the preset leaves it unset (???); set {key}=...")


def check_hydra(cfg: DictConfig, multirun: bool) -> None:
    """All of the above for a config composed with Hydra's node (compose(return_hydra_config=True))."""
    hydra = cfg.get("hydra")
    if isinstance(hydra, DictConfig):
        check_targets(hydra)
        check_plugins(hydra)
        check_search_space(hydra)
    check_folders(cfg, multirun)
