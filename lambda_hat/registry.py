"""Every estimator and every target in one place: name -> config schema and builder (imported
lazily), and an estimator's family.

Validating a command line reads only these tables and the schemas, so it never imports JAX; the
builder module is imported when a run needs the kernel or the target. A new estimator is one entry
in ESTIMATORS, a schema in ``config.py`` and a preset in ``conf/sampler/``; a new target one entry
in TARGETS, a schema and a preset in ``conf/model/``. The ConfigStore's sampler, vi and model
schemas are generated from these tables (register_configs, below).

Targets: a builder is called as ``build(cfg, cache_dir) -> Target`` and ``build_target``
dispatches on ``cfg.model.name``. The built-in synthetic targets share one builder
(lambda_hat.targets.build_builtin, content-cached); ``dln_random`` is a DLN drawn by the random
generator (its model.name is "dln"); ``user`` imports the factory the config names
(lambda_hat.targets.user).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hydra.core.config_store import ConfigStore

from lambda_hat import config as C

Family = Literal["minibatch", "full_batch", "variational"]


@dataclass(frozen=True)
class EstimatorSpec:
    name: str
    schema: type
    # "module:function", called as builder(cfg, n) -> Kernel; for the variational family the fit
    # driver, called by the runner with the VI algorithm of the `vi` group (VI_ALGORITHMS)
    builder: str
    family: Family
    # "module:function", gradients_per_chain(cfg) -> (expected, upper bound): full-data gradients
    # one chain spends, warm-up included; the run says the cost up front from it.
    cost: str | None = None

    def build(self, cfg: Any, n: int) -> Any:
        """The estimator's kernel for this config and a data set of n rows."""
        return _load(self.builder)(cfg, n)

    def gradients_per_chain(self, cfg: Any) -> tuple[float, float] | None:
        return None if self.cost is None else _load(self.cost)(cfg)


def _load(path: str) -> Any:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


_SG = "lambda_hat.samplers.sgmcmc:build"
ESTIMATORS: dict[str, EstimatorSpec] = {
    e.name: e
    for e in (
        EstimatorSpec("sgld", C.SGLDConfig, _SG, "minibatch"),
        EstimatorSpec("rmsprop_sgld", C.RMSPropSGLDConfig, _SG, "minibatch"),
        EstimatorSpec("adam_sgld", C.AdamSGLDConfig, _SG, "minibatch"),
        EstimatorSpec("sghmc", C.SGHMCConfig, _SG, "minibatch"),
        EstimatorSpec("sgnht", C.SGNHTConfig, _SG, "minibatch"),
        EstimatorSpec("hmc", C.HMCConfig, "lambda_hat.samplers.hmc:build", "full_batch", "lambda_hat.samplers.hmc:gradients_per_chain"),
        EstimatorSpec("nuts", C.NUTSConfig, "lambda_hat.samplers.hmc:build", "full_batch", "lambda_hat.samplers.hmc:gradients_per_chain"),
        EstimatorSpec("mclmc", C.MCLMCConfig, "lambda_hat.samplers.mclmc:build", "full_batch", "lambda_hat.samplers.mclmc:gradients_per_chain"),
        EstimatorSpec(
            "adjusted_mclmc",
            C.AdjustedMCLMCConfig,
            "lambda_hat.samplers.mclmc:build_adjusted",
            "full_batch",
            "lambda_hat.samplers.mclmc:gradients_per_chain_adjusted",
        ),
        EstimatorSpec("vi", C.VIConfig, "lambda_hat.vi.fit:run_fits", "variational"),
    )
}


@dataclass(frozen=True)
class VIAlgorithmSpec:
    """A variational family of the ``vi`` group: builder(vi_cfg, d) -> lambda_hat.vi.base.VIFamily."""

    name: str
    schema: type
    builder: str  # "module:function"
    extra: str | None = None  # the optional extra (pyproject) its module needs, if any

    def build(self, vi_cfg: Any, d: int) -> Any:
        return _load(self.builder)(vi_cfg, d)


VI_ALGORITHMS: dict[str, VIAlgorithmSpec] = {
    a.name: a
    for a in (
        VIAlgorithmSpec("mfa", C.MFAConfig, "lambda_hat.vi.mfa:build"),
        VIAlgorithmSpec("flow", C.FlowVIConfig, "lambda_hat.vi.flow:build", extra="vi"),
    )
}


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


@dataclass(frozen=True)
class TargetSpec:
    name: str
    schema: type
    builder: str  # "module:function", called as builder(cfg, cache_dir) -> Target

    def build(self, cfg: Any, cache_dir: Path | None = None) -> Any:
        return _load(self.builder)(cfg, cache_dir)


_BUILTIN = "lambda_hat.targets:build_builtin"
TARGETS: dict[str, TargetSpec] = {
    t.name: t
    for t in (
        TargetSpec("dln", C.DLNModelConfig, _BUILTIN),
        TargetSpec("dln_random", C.RandomDLNModelConfig, _BUILTIN),
        TargetSpec("mlp", C.MLPModelConfig, _BUILTIN),
        TargetSpec("polynomial", C.PolynomialModelConfig, _BUILTIN),
        TargetSpec("user", C.UserModelConfig, "lambda_hat.targets.user:build"),
    )
}


def get_target(name: str) -> TargetSpec:
    """The target registered under name (KeyError lists the known names)."""
    try:
        return TARGETS[name]
    except KeyError:
        raise KeyError(f"unknown target {name!r}; known: {', '.join(TARGETS)}") from None


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
    """lambda_hat.config.validate plus the checks that need the estimator table (ConfigError)."""
    C.validate(cfg)
    allowed = tuple(names("full_batch"))
    value = cfg.objective.reference.sampler
    if value not in allowed:
        raise C.ConfigError("objective.reference.sampler", value, f"must be one of {', '.join(allowed)}")
