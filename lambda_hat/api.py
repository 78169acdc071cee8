"""``lambda_hat.estimate``: λ̂ of a Target in a notebook or script, by the CLI's own pipeline.

The config is composed exactly as the command line composes it (same presets, same schemas,
same validation and one-line errors), with ``model=user`` and the target passed in; then
lambda_hat.runner.estimate_target runs it. Nothing is written unless ``out_dir`` is given (then
the run's files go there, as a CLI run's do) and MLflow is off unless ``mlflow=True``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from lambda_hat.config import ConfigError
from lambda_hat.targets.base import Target


@dataclass(frozen=True)
class Result:
    """One estimate.

    Attributes:
        llc_mean: λ̂, pooled over the healthy chains (None if every chain diverged).
        llc_sem: its Monte Carlo standard error.
        llc_ci95: a 95% interval for λ, [low, high]: Monte Carlo error, the step's predicted bias and
            under-mixing (lambda_hat.llc.interval95); None without an estimate.
        metrics: everything a CLI run writes to metrics.json (diagnostics, work, timings).
        trace: one row per (chain, draw): loss, per-draw λ̂, burn-in flag, sampler diagnostics.
        warnings: health warnings, each naming what to change (empty when healthy).
        config: the composed config that ran.
    """

    llc_mean: float | None
    llc_sem: float | None
    metrics: dict[str, Any]
    trace: pd.DataFrame
    warnings: list[str]
    config: DictConfig

    @property
    def llc_ci95(self) -> list[float] | None:
        return self.metrics.get("llc_ci95")

    def __str__(self) -> str:
        from lambda_hat.runner import summary_line

        return summary_line(self.metrics)


_told_devices = False


def _tell_devices(have: int, want: int) -> None:
    """Once per process: JAX started before lambda_hat could ask for one CPU device per core."""
    global _told_devices
    _told_devices = True
    import warnings

    warnings.warn(
        f"JAX runs with {have} CPU device(s), so the chains are not split over the {want} cores: import "
        "lambda_hat and use lh.* before any other JAX operation, or call "
        f"jax.config.update('jax_num_cpu_devices', {want}) first",
        stacklevel=3,
    )


def _hydra_value(value: Any) -> str:
    """A Python value as a Hydra override value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (str, os.PathLike)):  # quoted; Hydra unescapes \\ only before a quote
        return "'" + str(value).replace("'", "\\'").replace("${", "\\${") + "'"
    return repr(value) if isinstance(value, float) else str(value)


def _as_overrides(overrides: Mapping[str, Any] | Sequence[str]) -> list[str]:
    """Hydra override strings from {key: Python value} or ["key=value", ...] (kept as given)."""
    if isinstance(overrides, Mapping):
        return [f"{k}={_hydra_value(v)}" for k, v in overrides.items()]
    return list(overrides)


def compose(
    sampler: str = "sgld",
    overrides: Mapping[str, Any] | Sequence[str] = (),
    *,
    model: str | None = None,
) -> DictConfig:
    """The validated config the CLI would compose for these overrides (ConfigError: one line).

    Args:
        sampler: the sampler preset (sgld, hmc, ...).
        overrides: {"sampler.step_size": 1e-6, ...} (the CLI's keys) or ["sampler.step_size=1e-6", ...].
        model: a model preset (dln, mlp, ...); None = model=user (the target is given in Python).
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from lambda_hat.composition import compose_config, describe_error
    from lambda_hat.registry import validate

    first = [f"sampler={sampler}", f"model={model or 'user'}"]
    try:
        cfg = compose_config(first + _as_overrides(overrides))
        validate(cfg)
    except (HydraException, OmegaConfBaseException, ConfigError) as e:
        raise ConfigError("overrides", message=describe_error(e)) from None
    return cfg


def estimate(
    target: Target,
    sampler: str = "sgld",
    *,
    seed: int = 0,
    overrides: Mapping[str, Any] | Sequence[str] = (),
    out_dir: str | Path | None = None,
    mlflow: bool = False,
    progress: bool = False,
    **more_overrides: Any,
) -> Result:
    """Estimate the LLC of target with a sampler preset and the CLI's keys as overrides.

    Args:
        target: a lambda_hat.Target (``Target.from_loss``, ``from_flax``, ``from_equinox``,
            ``from_torch``).
        sampler: the estimator (sgld, rmsprop_sgld, adam_sgld, sghmc, sgnht, hmc, nuts, mclmc,
            adjusted_mclmc, vi).
        seed: the sampler's seed (the same seed gives the same λ̂).
        overrides: the CLI's keys, e.g. ``{"sampler.step_size": 1e-6, "posterior.gamma": 100.0}``.
        out_dir: write the run's files there (metrics.json, trace.parquet, plots, config).
        mlflow: log the run to MLflow (``mlflow.tracking_uri`` etc. as overrides); needs out_dir.
        progress: log progress lines.
        **more_overrides: more overrides as keywords, e.g. ``**{"sampler.num_steps": 2000}``.

    Returns:
        The Result (λ̂, its standard error, metrics, trace, warnings).

    Raises:
        ConfigError: a bad key or value, or a bad target (TargetError), in one line.

    Example:
        >>> import lambda_hat as lh
        >>> r = lh.estimate(target, "sgld", overrides={"sampler.num_steps": 2000})  # doctest: +SKIP
        >>> print(r.llc_mean, r.llc_sem, r.warnings)  # doctest: +SKIP
    """
    if not isinstance(target, Target):
        raise ConfigError("target", message=f"target: expected a lambda_hat.Target, got {type(target).__name__}")
    given = _as_overrides(overrides) + _as_overrides(more_overrides)
    keys = {o.split("=", 1)[0].lstrip("+~") for o in given}
    defaults = {"seed": seed, "progress": progress, "mlflow.enabled": bool(mlflow), "plots": out_dir is not None}
    cfg = compose(sampler, _as_overrides({k: v for k, v in defaults.items() if k not in keys}) + given)
    from lambda_hat import runner
    from lambda_hat.devices import configure_cpu_devices, usable_cores

    have = configure_cpu_devices(cfg.cpu_devices)
    want = usable_cores() if cfg.cpu_devices is None else int(cfg.cpu_devices)
    if have < want and not _told_devices:
        _tell_devices(have, want)
    if out_dir is not None or mlflow:
        if out_dir is None:
            raise ConfigError("out_dir", message="out_dir: mlflow=True needs an out_dir for the run's files")
        metrics = runner.run(cfg, Path(out_dir), Path.cwd(), target=target)
        trace = pd.read_parquet(Path(out_dir) / "trace.parquet")
    else:
        metrics, _, trace = runner.estimate_target(cfg, target)
    if metrics["status"] == "failed":
        raise runner.RunFailed(f"all {cfg.sampler.num_chains} chains produced NaN/inf (lower the step size)")
    return Result(metrics["llc_mean"], metrics["llc_sem"], metrics, trace, list(metrics["warnings"]), cfg)
