"""Samplers: each module builds a :class:`~lambda_hat.samplers.base.Kernel` from its config."""

from __future__ import annotations

from typing import Any

from lambda_hat.samplers import sgmcmc
from lambda_hat.samplers.base import Kernel

MINIBATCH_SAMPLERS = ("sgld", "rmsprop_sgld", "adam_sgld")


def build_kernel(cfg: Any, n: int) -> Kernel:
    """The kernel named by cfg.name, for a data set of size n."""
    if cfg.name in MINIBATCH_SAMPLERS:
        return sgmcmc.build(cfg, n)
    raise ValueError(f"unknown sampler {cfg.name!r}")
