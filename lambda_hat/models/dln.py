"""Deep linear networks (teacher-student, no biases): the ``model=dln`` preset, and ``dln_random``,
a net drawn by Lau et al.'s random DLN generator (lambda_hat.random_dln). Built by
lambda_hat.targets (lambda_hat.targets.dln and .fiber: the teacher's place in its fiber and λ).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig

from lambda_hat.config import one_of, require
from lambda_hat.models import BUILTIN, TargetSpec, check_widths

TEACHERS = ("top", "first_layer", "truncate_layers")


@dataclass
class DLNModelConfig:
    """Deep linear network: widths [H1, ..., H_{L+1}], input first, output last, no biases."""

    name: str = "dln"
    widths: list[int] = field(default_factory=lambda: [10, 20, 20, 10])
    true_rank: Optional[int] = None  # rank of the teacher product W_1...W_L; None = full; 0 = zero map
    # Where a reduced-rank teacher sits in the fiber of its product: "top" (a generic point of a
    # top-dimensional component: local λ = Aoyagi's λ), "first_layer" (rank imposed on the first
    # layer, the other layers generic) or "truncate_layers" (every layer truncated to rank r, as
    # in Lau et al.'s experiments). llc_true is the local λ where a Hessian-rank check proves it.
    teacher: str = "top"


@dataclass
class RandomDLNModelConfig(DLNModelConfig):
    """Net number ``index`` of a size class of Lau et al.'s random DLN generator
    (lambda_hat/random_dln.py): widths, true_rank and the teacher's seed are drawn from
    (size_class, index, generator_seed), so a sweep over index is the accuracy benchmark."""

    size_class: str = "1k"  # 1k | 10k
    index: int = 0
    generator_seed: int = 0
    widths: Any = "${random_dln:widths}"
    true_rank: Any = "${random_dln:true_rank}"
    teacher_seed: Any = "${random_dln:seed}"  # seed of the teacher and its data (not target_seed)


def check(cfg: DictConfig) -> None:
    model = cfg.model
    widths = check_widths(cfg)
    if model.true_rank is not None:
        require(
            0 <= model.true_rank <= min(widths),
            "model.true_rank",
            model.true_rank,
            f"must be in [0, {min(widths)}] (0 = the zero map; {min(widths)} = the narrowest width of {widths})",
        )
    one_of(cfg, "model.teacher", TEACHERS)


def check_random(cfg: DictConfig) -> None:
    """A random DLN is named by (size_class, index, generator_seed); what they draw is not set by hand."""
    from lambda_hat.random_dln import CLASSES, draw

    model = cfg.model
    one_of(cfg, "model.size_class", tuple(CLASSES))
    require(model.index >= 0, "model.index", model.index, "must be >= 0 (the net's number in its class)")
    net = draw(model.size_class, model.index, model.generator_seed)
    drawn = {"widths": net.widths, "true_rank": net.true_rank, "teacher_seed": net.seed}
    for key, value in drawn.items():
        given = model[key]
        given = list(given) if key == "widths" else given
        require(
            given == value,
            f"model.{key}",
            given,
            f"is drawn by model.size_class/index/generator_seed (here {value}); use model=dln to set it",
        )
    require(
        cfg.target_seed is None,
        "target_seed",
        cfg.target_seed,
        "must be null with model=dln_random (the teacher's seed is drawn with the net: model.teacher_seed)",
    )
    check(cfg)


TARGETS = (
    TargetSpec("dln", DLNModelConfig, BUILTIN, check),
    TargetSpec("dln_random", RandomDLNModelConfig, BUILTIN, check_random),
)
