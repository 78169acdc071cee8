"""Typed configuration: one dataclass schema per config group (registered in Hydra's ConfigStore by lambda_hat.registry).

Every YAML preset in ``conf/`` names its schema explicitly in its defaults list
(``- /schema/<group>@_here_: <name>``), so no automatic schema matching is relied on (Hydra 1.4
drops it). Range and cross-field checks that a type system cannot express live in :func:`validate`,
which raises :class:`ConfigError` with a one-line message naming the key.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

# ---------------------------------------------------------------- model


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


def _random_dln_field(what: str, *, _parent_: Any) -> Any:
    """OmegaConf resolver: one field of the random DLN the model node names."""
    from lambda_hat.random_dln import draw

    net = draw(str(_parent_.size_class), int(_parent_.index), int(_parent_.generator_seed))
    return {"widths": list(net.widths), "true_rank": net.true_rank, "seed": net.seed}[what]


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


@dataclass
class PolynomialModelConfig:
    """f(x) = x · ∏ w_i^{p_i} at w* = 0: λ = 1 / (2 max p_i) (targets/polynomial.py)."""

    name: str = "polynomial"
    exponents: list[int] = field(default_factory=lambda: [1, 2])


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


ACTIVATIONS = ("tanh", "relu", "gelu", "sigmoid", "identity")
FACTORY_PATTERN = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$"  # pkg.module:function
CHECKPOINT_FORMATS = ("auto", "npz", "safetensors", "orbax", "equinox", "torch")
TEACHERS = ("top", "first_layer", "truncate_layers")

# ---------------------------------------------------------------- data


@dataclass
class DataConfig:
    """Inputs x ~ input_dist, targets y = teacher(x) + noise_std * N(0, 1)."""

    n: int = 100_000
    input_dist: str = "uniform"  # "uniform": U[-input_scale, input_scale]; "normal": N(0, input_scale^2)
    input_scale: float = 10.0
    noise_std: float = 0.0


INPUT_DISTS = ("uniform", "normal")

# ---------------------------------------------------------------- posterior


@dataclass
class PosteriorConfig:
    """Localized tempered posterior: log p(w) = -n beta L_n(w) - gamma/2 |w - w*|^2."""

    beta0: float = 1.0  # beta = beta0 / log n
    gamma: float = 1.0
    # Models linear in x (DLN): full-data losses from the Gram matrix XᵀX/n — the same value, at a
    # cost independent of n. false = sum over the rows, as a nonlinear model must (to time
    # full-batch samplers as they would scale). Minibatch losses always use rows.
    gram_loss: bool = True
    # Full-data losses (L_n(w*), full-batch samplers' gradients, VI's final estimate) are summed
    # over chunks of this many rows, so memory stays bounded whatever n is. 8192: a 1M-parameter
    # MLP (64-1024-896-10) at n = 1e5 peaked at 0.96 GB RSS with it, 4.4 GB with 65,536-row chunks.
    eval_batch_size: int = 8192
    # Which n enters nβ = n·beta0/log n: "n" (the data's size, Watanabe's WBIC temperature, the
    # default) or "batch_size" (devinterp's default: B·beta0/log B with B the minibatch size).
    nbeta_from: str = "n"
    # Check that w* is a local minimum (full-data gradient and one Newton step along it, ~4
    # full-data gradients) and warn when it is not (lambda_hat.health).
    check_minimum: bool = True
    # Minibatch samplers record L_b(w) − L_b(w*) + L_n(w*) per draw (the same rows at w* as a
    # control variate: same mean, far less noise where the loss at w* is not ~0; posterior.py).
    # false = L_b(w) alone (devinterp's estimator).
    control_variate: bool = True
    # A weight-refined LLC: sample only the parameter arrays whose key paths match one of these
    # patterns (fnmatch: "1", "1/*", "params/Dense_0/*", "0.weight"), the rest held at w*; null = all.
    # The work per step is the whole network's (the gradient still runs through every layer).
    restrict: Optional[list[str]] = None
    # A data-refined LLC (Wang et al. 2024): the loss inside λ̂ (L0 and every draw's loss) is
    # measured on this named subset of the target (Target.subsets: one class, one token type), on
    # all its rows per draw; null = the data. sample_on: "data" samples on the target's data (the
    # default), "subset" samples on the subset too (n, nβ and minibatches from it).
    measure_on: Optional[str] = None
    sample_on: str = "data"


NBETA_FROM = ("n", "batch_size")
SAMPLE_ON = ("data", "subset")


# ---------------------------------------------------------------- training (trained targets)


@dataclass
class TrainingConfig:
    """How w* is found for targets without a known minimum (optax Adam, early stopping)."""

    optimizer: str = "adam"
    learning_rate: float = 1e-2
    batch_size: Optional[int] = None  # None = full batch
    max_steps: int = 5000
    eval_every: int = 50  # full-data loss evaluated every this many steps (early-stopping check)
    patience: int = 20  # evaluations without relative improvement > min_rel_improvement
    min_rel_improvement: float = 1e-4


OPTIMIZERS = ("adam", "adamw", "sgd")

# ---------------------------------------------------------------- samplers


@dataclass
class SamplerConfig:
    """Keys every sampler has. num_steps counts steps per chain after warm-up, burn-in included."""

    name: str = MISSING
    num_chains: int = 4
    num_steps: int = 1000
    # First steps discarded from the estimate: num_burnin if set, else burnin_fraction x num_steps
    # (so that changing num_steps alone keeps a valid run).
    num_burnin: Optional[int] = None
    burnin_fraction: float = 0.0
    thinning: int = 1  # keep every k-th step in the trace; must divide num_steps
    dtype: str = "float32"
    # Run until converged: with max_steps set, num_steps is the first stretch and sampling goes on
    # in chunks of a tenth of it until the per-draw λ̂ after burn-in has split R-hat <= converge_rhat
    # and bulk ESS >= converge_ess, or max_steps (the work cap, steps per chain) is reached, which
    # warns. Burn-in is then burnin_fraction x the steps run (num_burnin, if set, stays fixed).
    # null = a fixed length of num_steps (lambda_hat.samplers.driver.Converge).
    max_steps: Optional[int] = None
    converge_rhat: float = 1.01
    converge_ess: float = 400.0


@dataclass
class SGMCMCConfig(SamplerConfig):
    """Minibatch SG-MCMC samplers; there is no separate warm-up, burn-in plays that role."""

    step_size: float = 5e-7  # SGLD family: epsilon in w <- w - eps/2 * grad U + sqrt(eps) * xi
    batch_size: int = 500
    num_steps: int = 10_000
    burnin_fraction: float = 0.9  # Lau et al. keep the last 10%


@dataclass
class LangevinConfig(SGMCMCConfig):
    """The SGLD family. Each chain first spends num_tune steps tuning step_size (starting from
    it) by dual averaging to the MALA acceptance target_mala_accept, capped where the unadjusted
    chain's predicted bias of λ̂ (integrator and minibatch noise) exceeds max_bias, relative;
    warm-up work, not part of num_steps. target_mala_accept null = fixed step (Lau et al.'s
    protocol, preset sgld_lau)."""

    target_mala_accept: Optional[float] = 0.95
    num_tune: int = 1000
    # Half, not Lau et al.'s 90%: the tuning steps already carry the chain away from w* (sampling
    # continues the tuned chain), so the first half suffices as burn-in and the estimate averages
    # 5x the draws. Same 43 ~1k / 20 ~10k nets, same chains: median |λ̂/λ - 1| 2.9% -> 1.7% and
    # 1.8% -> 1.0% (README, Accuracy). sgld_lau keeps 0.9.
    burnin_fraction: float = 0.5
    max_bias: Optional[float] = 0.01  # null: no cap (the MALA target alone)
    mala_every: int = 100  # MALA acceptance diagnostic every k steps (0 = off)


@dataclass
class SGLDConfig(LangevinConfig):
    name: str = "sgld"


@dataclass
class RMSPropSGLDConfig(LangevinConfig):
    """pSGLD (Li et al. 2016) with moments of the loss gradient only (Hitchcock & Hoogland 2025)."""

    name: str = "rmsprop_sgld"
    step_size: float = 5e-8  # the preconditioner scales the step by up to 1/eps
    # Of the squared-gradient average (RMSprop's alpha, optax's decay). 0.999, not RMSprop's usual
    # 0.99: the preconditioner then averages over more steps than the chain's autocorrelation time,
    # so it hardly depends on where the chain is now; a position-dependent preconditioner without
    # its divergence term (dropped, as in pSGLD) biases λ̂. Leaderboard DLNs at 3e3 FGE, seed 0:
    # 0.99 gave +12.6 / +8.0 / +9.5%, 0.999 +3.6 / +0.6 / +3.0%, 0.9999 on [5,8,6,4] -1.2%.
    decay: float = 0.999
    eps: float = 0.1  # added to sqrt(v); bounds the preconditioner by 1/eps


@dataclass
class AdamSGLDConfig(LangevinConfig):
    """Adam-preconditioned SGLD: drift uses the bias-corrected first moment of the loss gradient.

    beta1 defaults to 0 (drift = current gradient): a lagged first moment biases λ̂ upward.
    """

    name: str = "adam_sgld"
    step_size: float = 5e-8
    beta1: float = 0.0
    beta2: float = 0.999
    eps: float = 0.1


@dataclass
class SGHMCConfig(SGMCMCConfig):
    """SGHMC (Chen et al. 2014), blackjax parametrisation: w <- w + h p, friction (blackjax's alpha)."""

    name: str = "sghmc"
    step_size: float = 3e-4  # h (SGLD's epsilon corresponds to about h^2)
    friction: float = 100.0  # (1 - friction h) p per step; large damps minibatch-noise heating


@dataclass
class SGNHTConfig(SGMCMCConfig):
    """SG Nosé-Hoover thermostat (Ding et al. 2014), blackjax parametrisation; xi starts at friction."""

    name: str = "sgnht"
    step_size: float = 3e-4
    friction: float = 100.0  # injected-noise level and the thermostat's initial value


@dataclass
class HMCFamilyConfig(SamplerConfig):
    """Full-batch HMC/NUTS with blackjax window adaptation (per chain)."""

    num_warmup: int = 500  # adaptation steps per chain (step size, inverse mass matrix)
    num_steps: int = 500
    target_accept: float = 0.8
    initial_step_size: float = 1e-3
    diagonal_mass_matrix: bool = True
    dtype: str = "float64"


@dataclass
class HMCConfig(HMCFamilyConfig):
    name: str = "hmc"
    num_integration_steps: int = 16  # leapfrog steps per transition (during warm-up always)
    trajectory_length: Optional[float] = None  # if set, steps = ceil(length / adapted step size)
    max_integration_steps: int = 1024  # cap for trajectory_length


@dataclass
class NUTSConfig(HMCFamilyConfig):
    name: str = "nuts"
    max_tree_depth: int = 10


@dataclass
class MCLMCConfig(SamplerConfig):
    """MCLMC; tuning (mclmc_find_L_and_step_size) spends fractions of num_steps per chain."""

    name: str = "mclmc"
    num_steps: int = 2000
    dtype: str = "float64"
    integrator: str = "isokinetic_mclachlan"
    frac_tune1: float = 0.1  # step-size adaptation
    frac_tune2: float = 0.1  # L (and preconditioner) from the sample variance
    frac_tune3: float = 0.1  # L from the effective sample size
    desired_energy_var: float = 5e-4
    trust_in_estimate: float = 1.5
    num_effective_samples: int = 150
    diagonal_preconditioning: bool = True
    l_factor: float = 0.4


@dataclass
class AdjustedMCLMCConfig(SamplerConfig):
    """Metropolis-adjusted MCLMC; tuned by adjusted_mclmc_find_L_and_step_size per chain."""

    name: str = "adjusted_mclmc"
    num_steps: int = 1000
    dtype: str = "float64"
    integrator: str = "isokinetic_mclachlan"
    target_accept: float = 0.9
    frac_tune1: float = 0.1  # step size (dual averaging)
    frac_tune2: float = 0.1  # L (and preconditioner) from the sample variance
    frac_tune3: float = 0.0  # L from the effective sample size
    diagonal_preconditioning: bool = True
    num_windows: int = 1
    tuning_factor: float = 1.3
    target_num_integration_steps: float = 2.0  # mean integrator steps per MH proposal (> 1.1)
    random_trajectory_length: bool = True


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


VI_OPTIMIZERS = ("adam", "adamw", "sgd")
MFA_PARAMETERIZATIONS = ("covariance", "precision")
VI_SCHEDULES = ("constant", "cosine", "linear")
FLOWS = ("affine", "maf", "rqs")
FLOW_SUBSPACES = ("random",)


MCLMC_INTEGRATORS = (
    "isokinetic_velocity_verlet",
    "isokinetic_mclachlan",
    "isokinetic_yoshida",
    "isokinetic_omelyan",
)
DTYPES = ("float32", "float64")
PRNG_IMPLS = ("rbg", "unsafe_rbg", "threefry2x32")

# ---------------------------------------------------------------- top level


@dataclass
class MLflowConfig:
    enabled: bool = True
    # None: $MLFLOW_TRACKING_URI if set, else sqlite:///<launch dir>/mlflow.db (MLflow 3's default)
    tracking_uri: Optional[str] = None
    experiment: str = "lambda_hat"


@dataclass
class ReferenceConfig:
    """How a reference λ is computed for a target without an analytic one (cached, reused)."""

    sampler: str = "nuts"  # a full-batch sampler preset (conf/sampler/)
    num_chains: int = 4
    num_warmup: int = 1000
    num_steps: int = 4000


@dataclass
class ObjectiveConfig:
    """What a job returns to a sweeper (Optuna): its error against the reference λ."""

    enabled: bool = False  # the hparams_search presets turn it on
    metric: str = "abs_rel_error"  # abs_rel_error | rel_error | abs_error | sq_error
    with_work: bool = False  # second objective: the run's total FGE (the Pareto front)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)


OBJECTIVE_METRICS = ("abs_rel_error", "rel_error", "abs_error", "sq_error")


def default_cache_dir() -> Path:
    """Where targets, references and the XLA cache go when cache_dir is null."""
    return Path(os.environ.get("LAMBDA_HAT_CACHE", Path.home() / ".cache" / "lambda_hat")).expanduser()


@dataclass
class Config:
    """Root schema. Group fields are typed ``Any`` because each group has several schemas."""

    model: Any = MISSING
    data: Any = MISSING
    posterior: Any = MISSING
    sampler: Any = MISSING
    training: Any = MISSING
    vi: Any = None  # the VI algorithm (group vi), present only with sampler=vi
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    seed: int = 0
    target_seed: Optional[int] = None  # seed of the teacher and data; None = same as `seed`
    # Content-addressed target cache; None = $LAMBDA_HAT_CACHE or ~/.cache/lambda_hat
    cache_dir: Optional[str] = None
    # Persistent XLA compilation cache; None = <cache_dir>/xla
    compilation_cache_dir: Optional[str] = None
    progress: bool = True
    # trace.png and llc_running.png per job; None: on for a single run, off for the jobs of a
    # multirun (~0.5-1.5 s per job, the largest cost of a small job beyond its estimator; every
    # plot can be redrawn from trace.parquet). plots=true draws them in sweeps too.
    plots: Optional[bool] = None
    # JAX PRNG. "threefry2x32" (JAX's default) gives the same draws however the chains are split
    # over devices, on CPU and GPU; "rbg" does not (a chain's stream depends on the split) and
    # with chains split over CPU cores it is slower (15.8k vs 20.3k chain-steps/s, small DLN).
    prng_impl: str = "threefry2x32"
    # XLA CPU devices the chains are split over (one thread each); None = one per usable core,
    # 1 = no split. Fixed when JAX starts (the first run of a process); ignored on GPU.
    cpu_devices: Optional[int] = None
    # A sweep re-run with resume=true reuses every job whose metrics.json is complete (same config)
    # and runs only the others; for the default timestamped sweep folders, the newest earlier sweep
    # of the same command line is resumed in place (lambda_hat/sweeps/resume.py).
    resume: bool = False


SCHEMAS: dict[str, dict[str, type]] = {
    "data": {"data": DataConfig},
    "posterior": {"posterior": PosteriorConfig},
    "training": {"training": TrainingConfig},
}
# The sampler and vi schemas are those of lambda_hat.registry (one list of estimators), the model
# schemas those of lambda_hat.registry.TARGETS (one list of targets); registry.register_configs
# stores them all.

# Keys renamed so that a name means one thing; the old spelling gets a pointer, not "unknown key".
RENAMED_KEYS = {
    ("sghmc", "alpha"): "friction",
    ("sgnht", "alpha"): "friction",
    ("rmsprop_sgld", "alpha"): "decay",
}


def register_resolvers() -> None:
    """The config's own interpolation resolvers (also needed to resolve a saved job config)."""
    if not OmegaConf.has_resolver("random_dln"):
        OmegaConf.register_new_resolver("random_dln", _random_dln_field)


def burnin_steps(sampler: Any, steps: int | None = None) -> int:
    """Steps discarded from the estimate: num_burnin if set, else burnin_fraction x num_steps."""
    if sampler.num_burnin is not None:
        return int(sampler.num_burnin)
    return int(sampler.burnin_fraction * (sampler.num_steps if steps is None else steps))


# ---------------------------------------------------------------- validation


class ConfigError(ValueError):
    """A configuration value outside its allowed range; the message is one line naming the key."""

    def __init__(self, key: str, value: Any = None, allowed: str = "", *, message: str | None = None) -> None:
        super().__init__(message if message is not None else f"{key}={value!r} is invalid: {allowed}")
        self.key = key


class MissingExtraError(ConfigError):
    """An optional dependency group (a pyproject extra) is not installed; names the extra to install."""

    def __init__(self, what: str, extra: str) -> None:
        ValueError.__init__(self, f"{what} needs the '{extra}' extra: pip install -e \".[{extra}]\"")
        self.key = what.split("=")[0]


# The modules each optional extra provides (checked before a run starts, without importing them).
EXTRA_MODULES = {"vi": ("flowjax", "equinox", "paramax")}


def require_extra(what: str, extra: str) -> None:
    """Raise MissingExtraError unless every module of the extra can be found (none is imported)."""
    if any(importlib.util.find_spec(m) is None for m in EXTRA_MODULES[extra]):
        raise MissingExtraError(what, extra)


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def _positive(cfg: DictConfig, key: str, *, integer: bool = False) -> None:
    value = _get(cfg, key)
    _require(value is not None and value > 0, key, value, f"must be > 0{' (integer)' if integer else ''}")


def _get(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _one_of(cfg: DictConfig, key: str, allowed: tuple[str, ...]) -> None:
    value = _get(cfg, key)
    _require(value in allowed, key, value, f"must be one of {', '.join(allowed)}")


def check_known_keys(node: Any, prefix: str = "") -> None:
    """Every key of a schema-typed node is a field of its schema (a '+key=...' override adds keys
    Hydra does not check, so a typo would be silently ignored, and a `_target_` would name code)."""
    if not isinstance(node, DictConfig):
        return
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return
    allowed = [f.name for f in dataclasses.fields(schema)]
    for key in node.keys():
        key = str(key)
        if prefix == "" and key == "hydra":  # Hydra's own node, checked by check_hydra
            continue
        if key not in allowed:
            why = "lambda_hat's groups instantiate no code" if key == "_target_" else "unknown key"
            raise ConfigError(f"{prefix}{key}", message=f"{prefix}{key}: {why}; allowed keys here: {', '.join(allowed)}")
        check_known_keys(node._get_node(key), f"{prefix}{key}.")


def _validate_random_dln(cfg: DictConfig) -> None:
    """A random DLN is named by (size_class, index, generator_seed); what they draw is not set by hand."""
    from lambda_hat.random_dln import CLASSES, draw

    model = cfg.model
    _one_of(cfg, "model.size_class", tuple(CLASSES))
    _require(model.index >= 0, "model.index", model.index, "must be >= 0 (the net's number in its class)")
    net = draw(model.size_class, model.index, model.generator_seed)
    drawn = {"widths": net.widths, "true_rank": net.true_rank, "teacher_seed": net.seed}
    for key, value in drawn.items():
        given = model[key]
        given = list(given) if key == "widths" else given
        _require(
            given == value,
            f"model.{key}",
            given,
            f"is drawn by model.size_class/index/generator_seed (here {value}); use model=dln to set it",
        )
    _require(
        cfg.target_seed is None,
        "target_seed",
        cfg.target_seed,
        "must be null with model=dln_random (the teacher's seed is drawn with the net: model.teacher_seed)",
    )


def _validate_user(cfg: DictConfig) -> None:
    """model=user: the factory's form (it is imported when the target is built) and the checkpoint format."""
    import re

    factory = cfg.model.factory
    if factory is not None:  # None: lambda_hat.estimate passes the target itself
        _require(
            re.match(FACTORY_PATTERN, str(factory)) is not None,
            "model.factory",
            factory,
            "must name a function as PKG.MODULE:FUNCTION (e.g. mypkg.nets:make_target)",
        )
    _one_of(cfg, "model.checkpoint_format", CHECKPOINT_FORMATS)


def validate(cfg: DictConfig) -> None:
    """Check ranges and cross-field constraints; raise ConfigError on the first violation."""
    check_known_keys(cfg)
    model, data, sampler = cfg.model, cfg.data, cfg.sampler
    _require(cfg.seed >= 0, "seed", cfg.seed, "must be >= 0 (it seeds numpy's SeedSequence)")
    if cfg.target_seed is not None:
        _require(cfg.target_seed >= 0, "target_seed", cfg.target_seed, "must be >= 0, or null (= seed)")

    if "size_class" in model:
        _validate_random_dln(cfg)
    if model.name == "user":
        _validate_user(cfg)
    if model.name == "polynomial":
        exps = list(model.exponents)
        _require(len(exps) >= 1 and all(p >= 1 for p in exps), "model.exponents", exps, "needs one or more integers >= 1")
    widths = list(model.widths) if "widths" in model else [1, 1]
    _require(len(widths) >= 2, "model.widths", widths, "needs at least an input and an output width")
    _require(all(w >= 1 for w in widths), "model.widths", widths, "all widths must be >= 1")
    if model.name == "dln" and model.true_rank is not None:
        _require(
            0 <= model.true_rank <= min(widths),
            "model.true_rank",
            model.true_rank,
            f"must be in [0, {min(widths)}] (0 = the zero map; {min(widths)} = the narrowest width of {widths})",
        )
    if model.name == "dln":
        _one_of(cfg, "model.teacher", TEACHERS)
    if model.name == "mlp":
        _one_of(cfg, "model.activation", ACTIVATIONS)
        if model.teacher_activation is not None:
            _one_of(cfg, "model.teacher_activation", ACTIVATIONS)
        if model.teacher_widths is not None:
            tw = list(model.teacher_widths)
            _require(
                len(tw) >= 2 and tw[0] == widths[0] and tw[-1] == widths[-1] and min(tw) >= 1,
                "model.teacher_widths",
                tw,
                f"must start with {widths[0]} and end with {widths[-1]} (the student's input/output)",
            )
    _one_of(cfg, "prng_impl", PRNG_IMPLS)
    _one_of(cfg, "objective.metric", OBJECTIVE_METRICS)
    # objective.reference.sampler (a full-batch sampler) is checked by lambda_hat.registry.validate
    for key in ("num_chains", "num_warmup", "num_steps"):
        _positive(cfg, f"objective.reference.{key}", integer=True)
    if cfg.cpu_devices is not None:
        _positive(cfg, "cpu_devices", integer=True)
    _positive(cfg, "data.n", integer=True)
    _one_of(cfg, "data.input_dist", INPUT_DISTS)
    _positive(cfg, "data.input_scale")
    _require(data.noise_std >= 0, "data.noise_std", data.noise_std, "must be >= 0")
    _require(data.n >= 2, "data.n", data.n, "must be >= 2 (beta = beta0 / log n)")
    _positive(cfg, "posterior.beta0")
    _require(cfg.posterior.gamma >= 0, "posterior.gamma", cfg.posterior.gamma, "must be >= 0")
    _positive(cfg, "posterior.eval_batch_size", integer=True)
    _one_of(cfg, "posterior.nbeta_from", NBETA_FROM)
    if cfg.posterior.nbeta_from == "batch_size":
        _require(
            "batch_size" in sampler and sampler.name != "vi",
            "posterior.nbeta_from",
            "batch_size",
            f"needs a minibatch sampler (sampler={sampler.name} has no minibatch); use posterior.nbeta_from=n",
        )
    _one_of(cfg, "posterior.sample_on", SAMPLE_ON)
    if cfg.posterior.sample_on == "subset":
        _require(cfg.posterior.measure_on is not None, "posterior.sample_on", "subset", "needs posterior.measure_on (the subset's name)")

    if sampler.name == "vi":
        _validate_vi(cfg)
    else:
        _validate_sampler(cfg)

    training = cfg.training
    _one_of(cfg, "training.optimizer", OPTIMIZERS)
    _positive(cfg, "training.learning_rate")
    _positive(cfg, "training.max_steps", integer=True)
    _positive(cfg, "training.eval_every", integer=True)
    _positive(cfg, "training.patience", integer=True)
    if training.batch_size is not None:
        _require(
            0 < training.batch_size <= data.n,
            "training.batch_size",
            training.batch_size,
            f"must be in [1, data.n={data.n}] or null (full batch)",
        )


def _validate_sampler(cfg: DictConfig) -> None:
    """The MCMC samplers' keys (sampler.*)."""
    data, sampler = cfg.data, cfg.sampler
    _positive(cfg, "sampler.num_chains", integer=True)
    _one_of(cfg, "sampler.dtype", DTYPES)
    _positive(cfg, "sampler.num_steps", integer=True)
    _positive(cfg, "sampler.thinning", integer=True)
    _require(
        sampler.num_steps % sampler.thinning == 0,
        "sampler.thinning",
        sampler.thinning,
        f"must divide sampler.num_steps={sampler.num_steps} (every step run is counted)",
    )
    if sampler.get("max_steps") is not None:
        _require(
            sampler.max_steps >= sampler.num_steps,
            "sampler.max_steps",
            sampler.max_steps,
            f"must be >= sampler.num_steps={sampler.num_steps} (the first stretch; null = a fixed length)",
        )
        _require(sampler.converge_rhat > 1.0, "sampler.converge_rhat", sampler.converge_rhat, "must be > 1")
        _positive(cfg, "sampler.converge_ess")
    if sampler.num_burnin is not None:
        _require(
            0 <= sampler.num_burnin < sampler.num_steps,
            "sampler.num_burnin",
            sampler.num_burnin,
            f"must be in [0, sampler.num_steps={sampler.num_steps}), or null (burnin_fraction)",
        )
    _require(0 <= sampler.burnin_fraction < 1, "sampler.burnin_fraction", sampler.burnin_fraction, "must be in [0, 1)")
    kept = sampler.num_steps - burnin_steps(sampler)
    _require(
        kept // sampler.thinning >= 4,
        "sampler.thinning" if sampler.thinning > 1 else "sampler.num_steps",
        sampler.thinning if sampler.thinning > 1 else sampler.num_steps,
        f"must leave >= 4 draws after burn-in ({kept} steps kept, thinning {sampler.thinning})",
    )
    if "batch_size" in sampler:
        _positive(cfg, "sampler.step_size")
        _positive(cfg, "sampler.batch_size", integer=True)
        if cfg.model.name != "user":  # a user target's n is its data's (checked when it is built)
            _require(
                sampler.batch_size <= data.n,
                "sampler.batch_size",
                sampler.batch_size,
                f"must be <= data.n={data.n}",
            )
    if "mala_every" in sampler:
        _require(sampler.mala_every >= 0, "sampler.mala_every", sampler.mala_every, "must be >= 0 (0 = off)")
    if "target_mala_accept" in sampler:
        target = sampler.target_mala_accept
        _require(target is None or 0 < target < 1, "sampler.target_mala_accept", target, "must be in (0, 1) or null (fixed step)")
        _positive(cfg, "sampler.num_tune", integer=True)
        bias = sampler.max_bias
        _require(bias is None or bias > 0, "sampler.max_bias", bias, "must be > 0 or null (no cap)")
    for key in ("decay", "beta1", "beta2"):
        if key in sampler:
            v = sampler[key]
            _require(0 <= v < 1, f"sampler.{key}", v, "must be in [0, 1)")
    if "friction" in sampler:
        _require(
            0 <= sampler.friction * sampler.step_size < 1,
            "sampler.friction",
            sampler.friction,
            f"friction x step must be in [0, 1) (step_size={sampler.step_size})",
        )
    if "eps" in sampler:
        _positive(cfg, "sampler.eps")
    if "num_warmup" in sampler:
        _positive(cfg, "sampler.num_warmup", integer=True)
        _positive(cfg, "sampler.initial_step_size")
        v = sampler.target_accept
        _require(0 < v < 1, "sampler.target_accept", v, "must be in (0, 1)")
    if sampler.name == "hmc":
        _positive(cfg, "sampler.num_integration_steps", integer=True)
        _positive(cfg, "sampler.max_integration_steps", integer=True)
        if sampler.trajectory_length is not None:
            _positive(cfg, "sampler.trajectory_length")
    if sampler.name == "nuts":
        _require(1 <= sampler.max_tree_depth <= 20, "sampler.max_tree_depth", sampler.max_tree_depth, "must be in [1, 20]")
    if sampler.name == "adjusted_mclmc":
        _one_of(cfg, "sampler.integrator", MCLMC_INTEGRATORS)
        v = sampler.target_accept
        _require(0 < v < 1, "sampler.target_accept", v, "must be in (0, 1)")
        _positive(cfg, "sampler.num_windows", integer=True)
        _positive(cfg, "sampler.tuning_factor")
        _require(
            sampler.target_num_integration_steps > 1.1,
            "sampler.target_num_integration_steps",
            sampler.target_num_integration_steps,
            "must be > 1.1 (blackjax's floor for avg-preserving tuning)",
        )
        for key in ("frac_tune1", "frac_tune2", "frac_tune3"):
            v = sampler[key]
            _require(0 <= v <= 1, f"sampler.{key}", v, "must be in [0, 1]")
    if sampler.name == "mclmc":
        _one_of(cfg, "sampler.integrator", MCLMC_INTEGRATORS)
        for key in ("frac_tune1", "frac_tune2", "frac_tune3"):
            v = sampler[key]
            _require(0 <= v <= 1, f"sampler.{key}", v, "must be in [0, 1]")
        _require(
            sampler.frac_tune1 + sampler.frac_tune2 > 0,
            "sampler.frac_tune1",
            sampler.frac_tune1,
            "frac_tune1 + frac_tune2 must be > 0 (no tuning otherwise)",
        )
        for key in ("desired_energy_var", "trust_in_estimate", "l_factor"):
            _positive(cfg, f"sampler.{key}")
        _positive(cfg, "sampler.num_effective_samples", integer=True)


def _validate_vi(cfg: DictConfig) -> None:
    """sampler=vi's keys and the VI algorithm's (vi.*)."""
    s, vi = cfg.sampler, cfg.vi
    for key in ("num_chains", "num_steps", "batch_size", "num_samples", "num_draws", "whitening_batches"):
        _positive(cfg, f"sampler.{key}", integer=True)
    _require(s.num_draws >= 2, "sampler.num_draws", s.num_draws, "must be >= 2 (the Monte Carlo error needs a spread)")
    if cfg.model.name != "user":
        _require(s.batch_size <= cfg.data.n, "sampler.batch_size", s.batch_size, f"must be <= data.n={cfg.data.n}")
    _one_of(cfg, "sampler.dtype", DTYPES)
    _one_of(cfg, "sampler.optimizer", VI_OPTIMIZERS)
    _one_of(cfg, "sampler.schedule", VI_SCHEDULES)
    _positive(cfg, "sampler.learning_rate")
    _require(0 <= s.warmup_steps < s.num_steps, "sampler.warmup_steps", s.warmup_steps, f"must be in [0, sampler.num_steps={s.num_steps})")
    _require(0 <= s.end_lr_fraction <= 1, "sampler.end_lr_fraction", s.end_lr_fraction, "must be in [0, 1]")
    if s.clip_norm is not None:
        _positive(cfg, "sampler.clip_norm")
    _require(vi is not None, "vi", vi, "sampler=vi needs a VI algorithm: vi=mfa or vi=flow")
    if vi.name == "mfa":
        _one_of(cfg, "vi.parameterization", MFA_PARAMETERIZATIONS)
        _positive(cfg, "vi.components", integer=True)
        _positive(cfg, "vi.rank", integer=True)
        if vi.ranks is not None:
            ranks = list(vi.ranks)
            _require(
                len(ranks) == vi.components and all(r >= 1 for r in ranks),
                "vi.ranks",
                ranks,
                f"must list vi.components={vi.components} ranks >= 1, or be null (vi.rank for all)",
            )
        _positive(cfg, "vi.dirichlet_concentration")
        _positive(cfg, "vi.init_scale")
        _require(vi.init_spread >= 0, "vi.init_spread", vi.init_spread, "must be >= 0")
    if vi.name == "flow":
        require_extra("vi=flow", "vi")
        _one_of(cfg, "vi.flow", FLOWS)
        for key in ("layers", "nn_width", "nn_depth", "knots"):
            _positive(cfg, f"vi.{key}", integer=True)
        _require(vi.latent_dim >= 2, "vi.latent_dim", vi.latent_dim, "must be >= 2 (and <= the number of parameters)")
        _one_of(cfg, "vi.subspace", FLOW_SUBSPACES)
        _positive(cfg, "vi.interval")
        _positive(cfg, "vi.init_scale")
