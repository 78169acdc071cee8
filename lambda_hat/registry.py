"""Every estimator and every target in one place: name -> config schema, checks and builder.

Estimators and targets are found, not listed: every module of :mod:`lambda_hat.estimators`
declares its own ``ESTIMATORS`` (schema, family, builder, cost, range checks), every module of
:mod:`lambda_hat.models` its ``TARGETS`` (schema, range checks, builder), so adding one touches its
module, its preset in ``conf/`` and its tests only. Those modules are JAX-free when imported, so
validating a command line never starts JAX; a builder imports the JAX code when a run calls it.
The ConfigStore's sampler, vi and model schemas are generated from these tables
(register_configs, below).

Targets: a builder is called as ``build(cfg, cache_dir) -> Target`` and ``build_target``
dispatches on ``cfg.model.name``. The built-in synthetic targets share one builder
(lambda_hat.targets.build_builtin, content-cached); ``dln_random`` is a DLN drawn by the random
generator (its model.name is "dln"); ``user`` imports the factory the config names
(lambda_hat.targets.user).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from hydra.core.config_store import ConfigStore

from lambda_hat import config as C
from lambda_hat import estimators, models
from lambda_hat.estimators import EstimatorSpec, Family
from lambda_hat.models import TargetSpec
from lambda_hat.estimators.vi import VI_ALGORITHMS, VIAlgorithmSpec

__all__ = ["ESTIMATORS", "TARGETS", "VI_ALGORITHMS", "EstimatorSpec", "TargetSpec", "VIAlgorithmSpec", "get", "get_target", "get_vi", "names", "validate"]


def _discover(package: Any, table: str) -> dict[str, Any]:
    """name -> spec over every module of package (by module name), from each module's table."""
    found: dict[str, Any] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = f"{package.__name__}.{info.name}"
        for spec in getattr(importlib.import_module(module), table):
            if spec.name in found:
                raise RuntimeError(f"{spec.name!r} is declared twice ({module})")
            found[spec.name] = spec
    return found


ESTIMATORS: dict[str, EstimatorSpec] = _discover(estimators, "ESTIMATORS")


def get_vi(name: str) -> VIAlgorithmSpec:
    """The VI algorithm registered under name (KeyError lists the known names)."""
    try:
        return VI_ALGORITHMS[name]
    except KeyError:
        raise KeyError(f"unknown VI algorithm {name!r}; known: {', '.join(VI_ALGORITHMS)}") from None


def get(name: str) -> EstimatorSpec:
    """The estimator registered under name (KeyError lists the known names)."""
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise KeyError(f"unknown estimator {name!r}; known: {', '.join(ESTIMATORS)}") from None


def names(family: Family | None = None) -> list[str]:
    return [n for n, e in ESTIMATORS.items() if family is None or e.family == family]


TARGETS: dict[str, TargetSpec] = _discover(models, "TARGETS")


def get_target(name: str) -> TargetSpec:
    """The target registered under name (KeyError lists the known names)."""
    try:
        return TARGETS[name]
    except KeyError:
        raise KeyError(f"unknown target {name!r}; known: {', '.join(TARGETS)}") from None


def _target_key(model: Any) -> str:
    # model=dln_random composes a node whose name is "dln" (it is a DLN) with the generator's keys
    return "dln_random" if model.name == "dln" and "size_class" in model else str(model.name)


def register_configs() -> None:
    """Register the root schema and every group schema (under ``schema/<group>``)."""
    C.register_resolvers()
    cs = ConfigStore.instance()
    cs.store(name="lambda_hat_schema", node=C.Config)
    groups = {
        **C.SCHEMAS,
        "model": {name: t.schema for name, t in TARGETS.items()},
        "sampler": {name: e.schema for name, e in ESTIMATORS.items()},
        "vi": {name: a.schema for name, a in VI_ALGORITHMS.items()},
    }
    for group, schemas in groups.items():
        for name, node in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=node)


def validate(cfg: Any) -> None:
    """lambda_hat.config.validate (the root keys and cross-field checks), then the estimator's own
    range checks (its module's ``check``), then the checks that need the estimator table
    (ConfigError, one line naming the key)."""
    C.validate(cfg)
    for spec in (get_target(_target_key(cfg.model)), get(cfg.sampler.name)):
        if spec.check is not None:
            spec.check(cfg)
    allowed = tuple(names("full_batch"))
    value = cfg.objective.reference.sampler
    if value not in allowed:
        raise C.ConfigError("objective.reference.sampler", value, f"must be one of {', '.join(allowed)}")
