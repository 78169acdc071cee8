"""Samplers: each module builds a :class:`~lambda_hat.samplers.base.Kernel` from its config."""

from __future__ import annotations

from typing import Any

from lambda_hat.samplers import hmc, mclmc, sgmcmc
from lambda_hat.samplers.base import Kernel



def build_kernel(cfg: Any, n: int) -> Kernel:
    """The kernel named by cfg.name, for a data set of size n."""
    if cfg.name in sgmcmc.NAMES:
        return sgmcmc.build(cfg, n)
    if cfg.name in hmc.NAMES:
        return hmc.build(cfg, n)
    if cfg.name == "mclmc":
        return mclmc.build(cfg, n)
    if cfg.name == "adjusted_mclmc":
        return mclmc.build_adjusted(cfg, n)
    raise ValueError(f"unknown sampler {cfg.name!r}")
