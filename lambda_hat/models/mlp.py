"""Teacher-student MLP (``model=mlp``), built by lambda_hat.targets.mlp."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import DictConfig

from lambda_hat.config import one_of, require
from lambda_hat.models import BUILTIN, TargetSpec, check_widths

ACTIVATIONS = ("tanh", "relu", "gelu", "sigmoid", "identity")


@dataclass
class MLPModelConfig:
    """Teacher-student MLP. The teacher defaults to the student's architecture where unset."""

    name: str = "mlp"
    widths: list[int] = field(default_factory=lambda: [4, 16, 16, 1])
    activation: str = "tanh"
    bias: bool = True
    teacher_widths: Optional[list[int]] = None
    teacher_activation: Optional[str] = None
    teacher_bias: Optional[bool] = None


def check(cfg: DictConfig) -> None:
    model = cfg.model
    widths = check_widths(cfg)
    one_of(cfg, "model.activation", ACTIVATIONS)
    if model.teacher_activation is not None:
        one_of(cfg, "model.teacher_activation", ACTIVATIONS)
    if model.teacher_widths is not None:
        tw = list(model.teacher_widths)
        require(
            len(tw) >= 2 and tw[0] == widths[0] and tw[-1] == widths[-1] and min(tw) >= 1,
            "model.teacher_widths",
            tw,
            f"must start with {widths[0]} and end with {widths[-1]} (the student's input/output)",
        )


TARGETS = (TargetSpec("mlp", MLPModelConfig, BUILTIN, check),)
