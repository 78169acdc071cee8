"""Samplers: each module builds a :class:`~lambda_hat.samplers.base.Kernel` from its config.

Which module builds which sampler is recorded once, in :mod:`lambda_hat.registry`.
"""

from __future__ import annotations

from typing import Any

from lambda_hat import registry
from lambda_hat.samplers.base import Kernel


def build_kernel(cfg: Any, n: int) -> Kernel:
    """The kernel named by cfg.name, for a data set of size n."""
    return registry.get(cfg.name).build(cfg, n)
