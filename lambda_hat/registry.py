"""Every estimator in one place: name -> config schema, builder (imported lazily) and family.

Validating a command line reads only this table and the schemas, so it never imports JAX; the
builder module is imported when a run needs the kernel. A new estimator is one entry here, a
schema in ``config.py`` and a preset in ``conf/sampler/``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

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
            "adjusted_mclmc", C.AdjustedMCLMCConfig, "lambda_hat.samplers.mclmc:build_adjusted", "full_batch",
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
