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

    @property
    def stop_reason(self) -> str | None:
        """Why sampling stopped: "converged", "work cap" (unconverged: a warning says so) or
        "fixed length" (sampler.until_converged=false, a budget, VI)."""
        return self.metrics.get("stop_reason")

    def __str__(self) -> str:
        from lambda_hat.summary import summary_line

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
    cfg = _compose_for(
        target, sampler, _as_overrides(overrides) + _as_overrides(more_overrides), seed=seed, progress=progress, mlflow=mlflow, plots=out_dir is not None
    )
    from lambda_hat import runner

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


def _compose_for(target: Target, sampler: str, given: list[str], **defaults: Any) -> DictConfig:
    """The config of a run on target (the defaults where the overrides do not set them), JAX's CPU
    devices set up for it (or a warning once, when JAX started too early to split the chains)."""
    if not isinstance(target, Target):
        raise ConfigError("target", message=f"target: expected a lambda_hat.Target, got {type(target).__name__}")
    keys = {o.split("=", 1)[0].lstrip("+~") for o in given}
    defaults["mlflow.enabled"] = bool(defaults.pop("mlflow"))
    cfg = compose(sampler, _as_overrides({k: v for k, v in defaults.items() if k not in keys}) + given)
    from lambda_hat.devices import configure_cpu_devices, usable_cores

    have = configure_cpu_devices(cfg.cpu_devices)
    want = usable_cores() if cfg.cpu_devices is None else int(cfg.cpu_devices)
    if have < want and not _told_devices:
        _tell_devices(have, want)
    return cfg


def estimate_grid(
    target: Target,
    sampler: str = "sgld",
    points: Sequence[Mapping[str, Any]] = (),
    *,
    overrides: Mapping[str, Any] | Sequence[str] = (),
    progress: bool = False,
    max_batch_mb: float | None = None,
    max_points: int = 64,
) -> list[Result]:
    """λ̂ at every point of a grid of settings, the points that share one program run as one batch.

    The CLI's ``hydra/launcher=batched`` in Python (lambda_hat.grid): points that differ only in
    ``seed``, ``posterior.beta0``, ``posterior.gamma`` and the sampler's numeric settings (step
    size, friction, the tuning target, RMSprop/Adam constants) run as grid points × chains in one
    compiled program, each with the draws it would get alone; the others run one by one.

    Args:
        target: a lambda_hat.Target.
        sampler: the estimator preset, as in :func:`estimate`.
        points: one mapping of the CLI's keys per grid point, e.g.
            ``{"sampler.step_size": 1e-6, "posterior.gamma": 100.0, "seed": 1}``.
        overrides: the CLI's keys every point shares.
        progress: log progress lines.
        max_batch_mb: estimated memory of one program; larger grids are split (None: ~8 MB per
            CPU device, where larger batches outgrow the caches, or 2 GiB on a GPU).
        max_points: grid points in one program at most.

    Returns:
        One Result per point, in order; a point whose chains all diverged has ``llc_mean`` None
        and ``metrics["status"] == "failed"`` (the others are unaffected).

    Example:
        >>> import lambda_hat as lh
        >>> grid = [{"sampler.step_size": e, "posterior.gamma": g} for e in (1e-6, 1e-5) for g in (10.0, 100.0)]
        >>> results = lh.estimate_grid(target, "sgld", grid, overrides={"sampler.target_mala_accept": None})  # doctest: +SKIP
        >>> [r.llc_mean for r in results]  # doctest: +SKIP
    """
    from lambda_hat import grid, runner

    common = _as_overrides(overrides)
    cfgs = [_compose_for(target, sampler, common + _as_overrides(p), seed=0, progress=progress, mlflow=False, plots=False) for p in points]
    groups: dict[str | None, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        key = grid.structure(cfg)
        groups.setdefault(key if key is not None else f"alone {i}", []).append(i)
    estimates: dict[int, tuple[dict[str, Any], Any]] = {}
    for members in groups.values():
        if len(members) == 1:
            metrics, _, frame = runner.estimate_target(cfgs[members[0]], target)
            estimates[members[0]] = (metrics, frame)
            continue
        batch = grid.estimate_grid([cfgs[i] for i in members], target, max_batch_mb=max_batch_mb, max_points=max_points)
        for i, (metrics, _, frame, _) in zip(members, batch):
            estimates[i] = (metrics, frame)
    return [Result(m["llc_mean"], m["llc_sem"], m, frame, list(m["warnings"]), cfg) for cfg, (m, frame) in ((cfgs[i], estimates[i]) for i in range(len(cfgs)))]
