"""Targets as config: one module per ``model`` preset, each holding its schema, range checks and
the name of its builder.

A module here defines ``TARGETS``, a tuple of :class:`TargetSpec`; lambda_hat.registry finds every
module of this package and generates the ConfigStore's ``schema/model/<name>`` entries from them,
so adding a target touches its module here, its builder, its preset in ``conf/model/`` and its
tests. Like :mod:`lambda_hat.estimators`, these modules are JAX-free when imported (validating a
command line must not start JAX); the builders, in :mod:`lambda_hat.targets`, are imported when a
run builds the target.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lambda_hat.config import require


@dataclass(frozen=True)
class TargetSpec:
    """One registered target: ``builder`` ("module:function") is called as builder(cfg, cache_dir)
    -> Target; ``check(cfg)`` raises ConfigError for a model.* value out of range."""

    name: str
    schema: type
    builder: str
    check: Callable[[DictConfig], None] | None = None

    def build(self, cfg: Any, cache_dir: Path | None = None) -> Any:
        module, name = self.builder.split(":")
        return getattr(importlib.import_module(module), name)(cfg, cache_dir)


BUILTIN = "lambda_hat.targets:build_builtin"  # the synthetic targets' shared, content-cached builder


def check_widths(cfg: DictConfig) -> list[int]:
    """model.widths: input first, output last, every width >= 1; returns them as a list."""
    widths = list(cfg.model.widths)
    require(len(widths) >= 2, "model.widths", widths, "needs at least an input and an output width")
    require(all(w >= 1 for w in widths), "model.widths", widths, "all widths must be >= 1")
    return widths
