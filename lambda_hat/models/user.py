"""Your own network (``model=user``): a factory function returning a lambda_hat.Target, and an
optional checkpoint for w*; imported and loaded by lambda_hat.targets.user."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig

from lambda_hat.config import one_of, require
from lambda_hat.models import TargetSpec

FACTORY_PATTERN = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$"  # pkg.module:function
CHECKPOINT_FORMATS = ("auto", "npz", "safetensors", "orbax", "equinox", "torch")


@dataclass
class UserModelConfig:
    """Your own network (lambda_hat.targets.user): ``factory`` names a function "pkg.module:function"
    returning a lambda_hat.Target; it is called with ``args`` as keyword arguments. ``checkpoint``
    loads other weights into the factory's parameters (same structure, shapes and dtypes)."""

    name: str = "user"
    factory: Optional[str] = None  # "pkg.module:function"; only that module is imported
    args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the factory
    checkpoint: Optional[str] = None  # a file or folder of weights for w*
    checkpoint_format: str = "auto"  # auto (from the file) | npz | safetensors | orbax | equinox | torch


def check(cfg: DictConfig) -> None:
    """model=user: the factory's form (it is imported when the target is built) and the checkpoint format."""
    factory = cfg.model.factory
    if factory is not None:  # None: lambda_hat.estimate passes the target itself
        require(
            re.match(FACTORY_PATTERN, str(factory)) is not None,
            "model.factory",
            factory,
            "must name a function as PKG.MODULE:FUNCTION (e.g. mypkg.nets:make_target)",
        )
    one_of(cfg, "model.checkpoint_format", CHECKPOINT_FORMATS)


TARGETS = (TargetSpec("user", UserModelConfig, "lambda_hat.targets.user:build", check),)
