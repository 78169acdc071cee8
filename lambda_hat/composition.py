"""Composing the app's config outside the command line (scripts, tests, notebooks, the Python API,
the sweeps' reference runs) and describing a composition error in one line.

Apart from the CLI module (lambda_hat.app) so that library code composing a config never imports
the CLI. Importing it registers the schemas (lambda_hat.registry.register_configs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from lambda_hat.budget import apply_budget
from lambda_hat.config import RENAMED_KEYS, ConfigError
from lambda_hat.registry import register_configs

_PKG_CONF = Path(__file__).resolve().parent / "conf"  # inside an installed wheel
CONF_DIR = _PKG_CONF if _PKG_CONF.is_dir() else Path(__file__).resolve().parent.parent / "conf"

register_configs()


def compose_config(
    overrides: Sequence[str] = (),
    config_dir: Path | str | None = None,
    config_name: str = "config",
    return_hydra_config: bool = False,
) -> DictConfig:
    """The config the CLI would compose for these overrides (for scripts, tests and notebooks),
    sized for its budget as a run sizes it (lambda_hat.budget.apply_budget: ConfigError for an
    override that sets a key the budget sets)."""
    with initialize_config_dir(str(Path(config_dir or CONF_DIR).resolve()), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)
    return apply_budget(cfg, overrides=overrides)


def describe_error(exc: BaseException) -> str:
    """One line naming the offending key and what is allowed."""
    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(exc, MissingConfigException) and exc.options is not None:
        group, _, name = (exc.missing_cfg_file or "").rpartition("/")
        missing = f"{group}={name}" if group else (name or "option")
        return f"{missing}: no such option; available: {', '.join(sorted(exc.options))}"
    cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else exc
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None) or "?"
        msg = str(getattr(cause, "msg", "") or cause).splitlines()[0]
        if str(key).startswith("model.args.") and "not in struct" in msg:  # a factory's keyword argument
            return f"{key}: a new factory argument; add it with a '+': +{key}=VALUE"
        obj = getattr(cause, "object_type", None)
        if "not in" in msg and obj is not None and dataclasses.is_dataclass(obj):
            leaf = str(key).rsplit(".", 1)[-1]
            name = getattr(obj, "name", None)
            new = RENAMED_KEYS.get((name if isinstance(name, str) else "", leaf))
            if new is not None:
                return f"{key}: renamed; use {str(key).rsplit('.', 1)[0]}.{new}"
            allowed = ", ".join(f.name for f in dataclasses.fields(obj))
            return f"{key}: unknown key; allowed keys here: {allowed}"
        return f"{key}: {msg}"
    return " ".join(str(exc).split())
