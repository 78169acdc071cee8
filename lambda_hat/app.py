"""The command line: Hydra app, fast one-line config errors, and the final summary line.

This is the only module that touches Hydra's runtime (output folder, launch directory).
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from lambda_hat.config import ConfigError, register_configs, validate

log = logging.getLogger("lambda_hat")

_PKG_CONF = Path(__file__).resolve().parent / "conf"  # inside an installed wheel
CONF_DIR = _PKG_CONF if _PKG_CONF.is_dir() else Path(__file__).resolve().parent.parent / "conf"

register_configs()


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The config the CLI would compose for these overrides (for scripts, tests and notebooks)."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def describe_error(exc: BaseException) -> str:
    """One line naming the offending key and what is allowed."""
    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(exc, MissingConfigException) and exc.options is not None:
        missing = (exc.missing_cfg_file or "").replace("/", "=", 1) if exc.missing_cfg_file else "option"
        return f"{missing}: no such option; available: {', '.join(sorted(exc.options))}"
    cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else exc
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None) or "?"
        msg = str(getattr(cause, "msg", "") or cause).splitlines()[0]
        obj = getattr(cause, "object_type", None)
        if "not in" in msg and obj is not None and dataclasses.is_dataclass(obj):
            allowed = ", ".join(f.name for f in dataclasses.fields(obj))
            return f"{key}: unknown key; allowed keys here: {allowed}"
        return f"{key}: {msg}"
    return " ".join(str(exc).split())


_VALUE_FLAGS = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}
_PASS_THROUGH = {"--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc", "--version"}


def check_overrides(argv: list[str]) -> str | None:
    """Compose the config the command line asks for and validate it; return an error line or None.

    Runs before Hydra launches anything, so typos fail fast with one line. For sweeps the first
    value of each discrete sweep is checked; the sweeper and each job still validate every value.
    """
    if any(a in _PASS_THROUGH or a.split("=")[0] in _VALUE_FLAGS for a in argv):
        return None
    overrides = [a for a in argv if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        return describe_error(e)
    single: list[str] = []
    for ov in parsed:
        if ov.get_key_element().startswith("hydra"):
            continue
        if ov.is_sweep_override():
            try:
                first = next(iter(ov.sweep_string_iterator()))
            except Exception:  # interval sweeps (Optuna) have no discrete values
                continue
            single.append(f"{ov.get_key_element()}={first}")
        else:
            single.append(ov.input_line)
    try:
        validate(compose_config(single))
    except (HydraException, OmegaConfBaseException, ConfigError) as e:
        return describe_error(e)
    return None


def _terminate(signum: int, frame: Any) -> None:
    # Turn SIGTERM (scancel, kill, a launcher's timeout) into SystemExit, so that the MLflow run
    # is closed as KILLED and temporary files are cleaned up instead of the process just vanishing.
    # JAX's wait for a running computation (a minutes-long warm-up) checks for signals, so this
    # also works mid-warm-up (tested); an XLA compilation does not, and defers it to its end.
    raise SystemExit(128 + signum)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def hydra_app(cfg: DictConfig) -> float | None:
    from lambda_hat.devices import configure_cpu_devices

    # Before the runner's imports: importing blackjax starts JAX, which fixes the device count.
    configure_cpu_devices(cfg.cpu_devices)
    # Hydra logs at INFO; JAX's backend probe would print "Unable to initialize backend 'tpu'".
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    from lambda_hat.runner import run, summary_line  # after Hydra set up logging

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    launch_dir = Path(hydra.utils.get_original_cwd())
    metrics = run(cfg, out_dir, launch_dir)
    print(summary_line(metrics), flush=True)
    return metrics["llc_mean"]


def main() -> None:
    """Console entry point (`lambda-hat`, `python -m lambda_hat`)."""
    error = check_overrides(sys.argv[1:])
    if error is not None:
        print(f"lambda_hat: error: {error}", file=sys.stderr)
        sys.exit(2)
    signal.signal(signal.SIGTERM, _terminate)
    hydra_app()
