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
    builder: str  # "module:function", called as builder(cfg, n) -> Kernel
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
    )
}


def get(name: str) -> EstimatorSpec:
    """The estimator registered under name (KeyError lists the known names)."""
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise KeyError(f"unknown estimator {name!r}; known: {', '.join(ESTIMATORS)}") from None


def names(family: Family | None = None) -> list[str]:
    return [n for n, e in ESTIMATORS.items() if family is None or e.family == family]
