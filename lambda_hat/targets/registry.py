"""Every target in one place: model name -> config schema and builder (imported lazily).

A builder is called as ``build(cfg, cache_dir) -> Target``. The built-in synthetic targets share
one builder (lambda_hat.targets.build_builtin, content-cached); ``user`` imports the factory the
config names (lambda_hat.targets.user). A new target is one entry here, its schema and a preset.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lambda_hat import config as C


@dataclass(frozen=True)
class TargetSpec:
    name: str
    schema: type
    builder: str  # "module:function", called as builder(cfg, cache_dir) -> Target

    def build(self, cfg: Any, cache_dir: Path | None = None) -> Any:
        module, name = self.builder.split(":")
        return getattr(importlib.import_module(module), name)(cfg, cache_dir)


_BUILTIN = "lambda_hat.targets:build_builtin"
TARGETS: dict[str, TargetSpec] = {
    t.name: t
    for t in (
        TargetSpec("dln", C.DLNModelConfig, _BUILTIN),
        TargetSpec("mlp", C.MLPModelConfig, _BUILTIN),
        TargetSpec("polynomial", C.PolynomialModelConfig, _BUILTIN),
        TargetSpec("user", C.UserModelConfig, "lambda_hat.targets.user:build"),
    )
}


def get(name: str) -> TargetSpec:
    """The target registered under name (KeyError lists the known names)."""
    try:
        return TARGETS[name]
    except KeyError:
        raise KeyError(f"unknown target {name!r}; known: {', '.join(TARGETS)}") from None
