"""The sampling engine every MCMC estimator runs on (JAX).

``base`` holds the kernel interface (:class:`~lambda_hat.samplers.base.Kernel`), ``driver`` runs
chains (vmapped, chunked, scanned; convergence, progress, signals), ``sgmcmc`` is the minibatch
SG-Langevin engine (tuning, MALA, bias cap) and ``window_adaptation`` Stan's warm-up. The
estimators themselves (schema, checks, cost, builder) are the modules of
:mod:`lambda_hat.estimators`; :func:`build_kernel` builds the one a config names.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lambda_hat import registry
from lambda_hat.samplers.base import Kernel


def build_kernel(cfg: Any, n: int) -> Kernel:
    """The kernel named by cfg.name, for a data set of size n.

    The same Kernel object for equal settings (a sweep's jobs differ mostly in seeds): the driver
    keys its compiled programs on the kernel's functions, so later jobs reuse them instead of
    tracing and compiling again.
    """
    settings = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return _build(json.dumps(settings, sort_keys=True), n)


@lru_cache(maxsize=32)
def _build(settings: str, n: int) -> Kernel:
    # Built from the settings (not the caller's config object), so the kernel depends on nothing
    # outside the cache key.
    cfg = OmegaConf.create(json.loads(settings))
    OmegaConf.set_struct(cfg, True)
    return registry.get(cfg.name).build(cfg, n)
