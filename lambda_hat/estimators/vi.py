"""Variational inference as an estimator (``sampler=vi``) and its ``vi`` group: the schemas, range
checks and registrations of the VI algorithms (MFA, normalizing flows). The fit itself is
lambda_hat.vi (``fit`` the shared driver, ``mfa`` and ``flow`` the families), imported when a run
starts.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from fractions import Fraction
from typing import Any, Optional

from omegaconf import DictConfig

from lambda_hat.config import DTYPES, OPTIMIZERS, one_of, positive, require, require_extra
from lambda_hat.estimators import EstimatorSpec, minibatch_fge, too_small

MFA_PARAMETERIZATIONS = ("covariance", "precision")
VI_SCHEDULES = ("constant", "cosine", "linear")
FLOWS = ("affine", "maf", "rqs")
FLOW_SUBSPACES = ("random",)
VI_STEP_ROUNDING = 100  # a budgeted VI fit runs whole hundreds of steps


@dataclass
class VIConfig:
    """Variational estimators (``sampler=vi``; the algorithm is the ``vi`` group: mfa, flow).

    Each "chain" is an independent fit of q to the localized tempered posterior (vmapped, split
    over devices like sampler chains); λ̂ = nβ (E_q[L_n] − L_n(w*)) from num_draws draws of each
    fitted q on the full data. The fit works in whitened coordinates z, w = w* + s ⊙ z: s from
    gradient second moments near w* (whitening, its minibatch gradients counted as work) or,
    without it, s = 1/sqrt(nβ + γ) for every coordinate.
    """

    name: str = "vi"
    num_chains: int = 4  # independent fits
    num_steps: int = 2000  # optimiser steps per fit
    batch_size: int = 500
    num_samples: int = 4  # draws of q per step (MFA: per component) for the ELBO gradient
    num_draws: int = 256  # draws of q per fit for the final E_q[L_n] on the full data
    learning_rate: float = 1e-2  # peak learning rate
    optimizer: str = "adam"  # adam | adamw | sgd (optax)
    schedule: str = "cosine"  # constant | cosine | linear (decay to end_lr_fraction x peak)
    warmup_steps: int = 0  # linear warm-up from 0, before the schedule
    end_lr_fraction: float = 0.0  # final / peak learning rate (cosine, linear)
    clip_norm: Optional[float] = 100.0  # global-norm gradient clipping; null = off
    whitening: bool = True
    whitening_batches: int = 20  # minibatch gradients of the whitening pre-pass (per fit)
    dtype: str = "float32"


@dataclass
class MFAConfig:
    """Mixture of factor analysers: q(z) = Σ_m π_m N(z; μ_m, D_m + K_m K_mᵀ), π = softmax(logits).

    D_m is diagonal and per component (each component its own axis scales; the cost is the same
    O(M d) as a shared one). Weights get a Dirichlet(concentration) prior: (α − 1) Σ log π_m is
    added to the ELBO (α = 1: none; α > 1 keeps components from collapsing).
    """

    name: str = "mfa"
    # covariance: Σ_m = D_m + K_m K_mᵀ; precision: Σ_m⁻¹ = D_m⁻¹ + K_m K_mᵀ (a singular posterior's
    # precision γI + nβH is diagonal + low rank: few stiff directions, many flat ones)
    parameterization: str = "precision"
    components: int = 4
    rank: int = 16  # rank of every K_m; precision form: >= the stiff directions (rank of the Hessian at w*)
    ranks: Optional[list[int]] = None  # per-component ranks (length components); overrides rank
    dirichlet_concentration: float = 1.0
    init_scale: float = 0.5  # initial sqrt(D_m) in whitened units
    init_spread: float = 0.1  # initial means μ_m ~ N(0, init_spread²) (whitened units)


@dataclass
class FlowVIConfig:
    """Normalizing flow (flowjax) on a latent_dim-dimensional subspace of z, and a diagonal
    Gaussian on its complement (lambda_hat/vi/flow.py)."""

    name: str = "flow"
    flow: str = "rqs"  # affine (coupling) | maf | rqs (rational-quadratic spline coupling)
    latent_dim: int = 8
    layers: int = 4
    nn_width: int = 32
    nn_depth: int = 1  # hidden layers of each conditioner network
    knots: int = 8  # rqs only
    interval: float = 4.0  # rqs: the spline acts on [-interval, interval]
    subspace: str = "random"  # how the latent subspace of z is chosen (flow.py documents the options)
    learn_subspace: bool = True  # false: the k Householder reflections stay where init put them
    init_scale: float = 0.5  # initial scale of q in every direction (whitened units)


@dataclass(frozen=True)
class VIAlgorithmSpec:
    """A variational family of the ``vi`` group: builder(vi_cfg, d) -> lambda_hat.vi.base.VIFamily."""

    name: str
    schema: type
    builder: str  # "module:function", imported when a run builds it (JAX)
    extra: str | None = None  # the optional extra (pyproject) its module needs, if any

    def build(self, vi_cfg: Any, d: int) -> Any:
        import importlib

        module, name = self.builder.split(":")
        return getattr(importlib.import_module(module), name)(vi_cfg, d)


VI_ALGORITHMS: dict[str, VIAlgorithmSpec] = {
    a.name: a
    for a in (
        VIAlgorithmSpec("mfa", MFAConfig, "lambda_hat.vi.mfa:build"),
        VIAlgorithmSpec("flow", FlowVIConfig, "lambda_hat.vi.flow:build", extra="vi"),
    )
}


def check(cfg: DictConfig) -> None:
    """sampler=vi's keys and the VI algorithm's (vi.*)."""
    s, vi = cfg.sampler, cfg.vi
    for key in ("num_chains", "num_steps", "batch_size", "num_samples", "num_draws", "whitening_batches"):
        positive(cfg, f"sampler.{key}", integer=True)
    require(s.num_draws >= 2, "sampler.num_draws", s.num_draws, "must be >= 2 (the Monte Carlo error needs a spread)")
    if cfg.model.name != "user":
        require(s.batch_size <= cfg.data.n, "sampler.batch_size", s.batch_size, f"must be <= data.n={cfg.data.n}")
    one_of(cfg, "sampler.dtype", DTYPES)
    one_of(cfg, "sampler.optimizer", OPTIMIZERS)
    one_of(cfg, "sampler.schedule", VI_SCHEDULES)
    positive(cfg, "sampler.learning_rate")
    require(0 <= s.warmup_steps < s.num_steps, "sampler.warmup_steps", s.warmup_steps, f"must be in [0, sampler.num_steps={s.num_steps})")
    require(0 <= s.end_lr_fraction <= 1, "sampler.end_lr_fraction", s.end_lr_fraction, "must be in [0, 1]")
    if s.clip_norm is not None:
        positive(cfg, "sampler.clip_norm")
    require(vi is not None, "vi", vi, "sampler=vi needs a VI algorithm: vi=mfa or vi=flow")
    if vi.name == "mfa":
        one_of(cfg, "vi.parameterization", MFA_PARAMETERIZATIONS)
        positive(cfg, "vi.components", integer=True)
        positive(cfg, "vi.rank", integer=True)
        if vi.ranks is not None:
            ranks = list(vi.ranks)
            require(
                len(ranks) == vi.components and all(r >= 1 for r in ranks),
                "vi.ranks",
                ranks,
                f"must list vi.components={vi.components} ranks >= 1, or be null (vi.rank for all)",
            )
        positive(cfg, "vi.dirichlet_concentration")
        positive(cfg, "vi.init_scale")
        require(vi.init_spread >= 0, "vi.init_spread", vi.init_spread, "must be >= 0")
    if vi.name == "flow":
        require_extra("vi=flow", "vi")
        one_of(cfg, "vi.flow", FLOWS)
        for key in ("layers", "nn_width", "nn_depth", "knots"):
            positive(cfg, f"vi.{key}", integer=True)
        require(vi.latent_dim >= 2, "vi.latent_dim", vi.latent_dim, "must be >= 2 (and <= the number of parameters)")
        one_of(cfg, "vi.subspace", FLOW_SUBSPACES)
        positive(cfg, "vi.interval")
        positive(cfg, "vi.init_scale")


def build(cfg: Any, n: int) -> Any:
    """The fit driver (lambda_hat.vi.fit.run_fits); the runner calls it with the vi group's family."""
    del cfg, n
    from lambda_hat.vi.fit import run_fits

    return run_fits


def size_vi(s: Any, n: int, fge: Fraction, vi: Any = None) -> dict[str, Any]:
    """VI, per fit: the whitening pass (whitening_batches minibatch gradients) + num_steps x
    num_samples draws (x vi.components for a mixture) x a minibatch gradient + num_draws full-data
    evaluations (1 FGE each), num_steps in whole hundreds (530 FGE, 2 draws, 128 final draws:
    1 + 4000 x 2 x 0.05 + 128 = 529)."""
    step = minibatch_fge(s, n)
    fixed = (int(s.whitening_batches) * step if s.whitening else 0) + int(s.num_draws)
    draws = int(s.num_samples) * int((vi.get("components") if vi is not None else None) or 1)
    steps = math.floor((fge - fixed) / (draws * step)) // VI_STEP_ROUNDING * VI_STEP_ROUNDING
    if steps <= 0:
        raise too_small("vi", float(fge), f"{float(fixed):g} FGE of whitening and final draws, then {VI_STEP_ROUNDING} steps")
    return {"num_steps": steps}


ESTIMATORS = (EstimatorSpec("vi", VIConfig, "variational", build, check=check, size=size_vi),)
