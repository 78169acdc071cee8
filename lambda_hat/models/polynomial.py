"""A one-input polynomial model with a known λ (``model=polynomial``), built by
lambda_hat.targets.polynomial."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from lambda_hat.config import require
from lambda_hat.models import BUILTIN, TargetSpec


@dataclass
class PolynomialModelConfig:
    """f(x) = x · ∏ w_i^{p_i} at w* = 0: λ = 1 / (2 max p_i) (targets/polynomial.py)."""

    name: str = "polynomial"
    exponents: list[int] = field(default_factory=lambda: [1, 2])


def check(cfg: DictConfig) -> None:
    exps = list(cfg.model.exponents)
    require(len(exps) >= 1 and all(p >= 1 for p in exps), "model.exponents", exps, "needs one or more integers >= 1")


TARGETS = (TargetSpec("polynomial", PolynomialModelConfig, BUILTIN, check),)
