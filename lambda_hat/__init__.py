"""lambda_hat: estimate the local learning coefficient (LLC, λ̂) of a neural network.

    import lambda_hat as lh
    target = lh.Target.from_loss(loss_fn, params, data)      # or lh.from_flax / from_equinox / from_torch
    result = lh.estimate(target, "sgld", overrides={"posterior.gamma": 100.0})
    print(result.llc_mean, result.llc_sem, result.warnings)

The same engine runs behind ``python -m lambda_hat`` (``model=user model.factory=PKG.MODULE:FUNCTION``).
Heavy modules (JAX, the samplers) are imported on first use of a name, so the CLI starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ConfigError",
    "Result",
    "Target",
    "TargetError",
    "compose",
    "estimate",
    "estimate_grid",
    "from_apply",
    "from_equinox",
    "from_flax",
    "from_torch",
    "load_checkpoint",
    "losses",
    "save_npz",
]

_WHERE = {
    "ConfigError": "lambda_hat.config",
    "Result": "lambda_hat.api",
    "Target": "lambda_hat.targets.base",
    "TargetError": "lambda_hat.targets.base",
    "compose": "lambda_hat.api",
    "estimate": "lambda_hat.api",
    "estimate_grid": "lambda_hat.api",
    "from_apply": "lambda_hat.adapters",
    "from_equinox": "lambda_hat.adapters",
    "from_flax": "lambda_hat.adapters",
    "from_torch": "lambda_hat.adapters",
    "load_checkpoint": ("lambda_hat.targets.checkpoints", "load"),
    "save_npz": "lambda_hat.targets.checkpoints",
}


_devices_asked = False


def _ask_for_cpu_devices() -> None:
    """One XLA CPU device per usable core, as the CLI has (lambda_hat.devices: chains are split
    over them, ~2x the chain-steps/s on 2 cores). JAX fixes the count when its backends start, so
    this is asked on the first use of the API, before the user's first JAX operation if possible;
    lambda_hat.estimate says when it came too late."""
    global _devices_asked
    if not _devices_asked:
        _devices_asked = True
        from lambda_hat.devices import configure_cpu_devices

        configure_cpu_devices(None)


def __getattr__(name: str) -> Any:  # PEP 562: lazy re-exports
    if name == "losses":
        return importlib.import_module("lambda_hat.losses")
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'lambda_hat' has no attribute {name!r}")
    _ask_for_cpu_devices()
    module, attr = where if isinstance(where, tuple) else (where, name)
    return getattr(importlib.import_module(module), attr)


def __dir__() -> list[str]:
    return sorted(__all__)
