"""Typed configuration: the root schema, the shared groups' schemas (data, posterior, training) and
the cross-field checks; the one-line :class:`ConfigError` and the small checking helpers every
schema's module uses (:func:`require`, :func:`positive`, :func:`one_of`).

An estimator's schema and range checks live in its module (lambda_hat.estimators.*), a target's
in its module (lambda_hat.models.*); lambda_hat.registry collects them, stores every schema in
Hydra's ConfigStore and runs all checks (registry.validate). Every YAML preset in ``conf/`` names
its schema explicitly in its defaults list (``- /schema/<group>@_here_: <name>``), so no automatic
schema matching is relied on (Hydra 1.4 drops it). This module is JAX-free, like the schemas'.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from omegaconf import MISSING, DictConfig, OmegaConf


# ---------------------------------------------------------------- model


def _random_dln_field(what: str, *, _parent_: Any) -> Any:
    """OmegaConf resolver: one field of the random DLN the model node names."""
    from lambda_hat.random_dln import draw

    net = draw(str(_parent_.size_class), int(_parent_.index), int(_parent_.generator_seed))
    return {"widths": list(net.widths), "true_rank": net.true_rank, "seed": net.seed}[what]


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


OPTIMIZERS = ("adam", "adamw", "sgd")  # optax names, for training and for VI fits

DTYPES = ("float32", "float64")
PRNG_IMPLS = ("rbg", "unsafe_rbg", "threefry2x32")

# ---------------------------------------------------------------- top level


@dataclass
class BudgetConfig:
    """The root config's ``budget`` (lambda_hat.budget applies it; each estimator module sizes itself)."""

    # Full-gradient equivalents per chain (per fit for VI), warm-up and tuning included; null = no
    # sizing (the sampler's own keys).
    fge_per_chain: Optional[float] = None
    # estimator name -> sampler keys set for it (before the sizing rule, and winning over it)
    per_sampler: Dict[str, Dict[str, Any]] = field(default_factory=dict)


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
    budget: BudgetConfig = field(default_factory=BudgetConfig)  # work per chain; sizes the sampler (lambda_hat/budget.py)
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
# The sampler and vi schemas are the estimators' (lambda_hat.estimators.*), the model schemas the
# targets' (lambda_hat.models.*); lambda_hat.registry.register_configs stores them all.

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


# The default work cap of a run until converged: this many times its first stretch (num_steps).
WORK_CAP_FACTOR = 4


def work_cap(sampler: Any) -> int | None:
    """Steps per chain a run until converged may take (sampler.max_steps, else WORK_CAP_FACTOR x
    num_steps); None for a fixed length (until_converged false, or a sampler without the key)."""
    if not sampler.get("until_converged", False):
        return None
    return int(sampler.max_steps) if sampler.get("max_steps") is not None else WORK_CAP_FACTOR * int(sampler.num_steps)


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


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def positive(cfg: DictConfig, key: str, *, integer: bool = False) -> None:
    value = _get(cfg, key)
    require(value is not None and value > 0, key, value, f"must be > 0{' (integer)' if integer else ''}")


def _get(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def one_of(cfg: DictConfig, key: str, allowed: tuple[str, ...]) -> None:
    value = _get(cfg, key)
    require(value in allowed, key, value, f"must be one of {', '.join(allowed)}")


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


def validate(cfg: DictConfig) -> None:
    """Check ranges and cross-field constraints; raise ConfigError on the first violation."""
    check_known_keys(cfg)
    data, sampler = cfg.data, cfg.sampler
    require(cfg.seed >= 0, "seed", cfg.seed, "must be >= 0 (it seeds numpy's SeedSequence)")
    if cfg.target_seed is not None:
        require(cfg.target_seed >= 0, "target_seed", cfg.target_seed, "must be >= 0, or null (= seed)")

    # model.* is checked by the target's module (lambda_hat.models.*.check), the estimator's keys
    # (sampler.*, vi.*) by its module (lambda_hat.estimators.*.check): lambda_hat.registry.validate
    one_of(cfg, "prng_impl", PRNG_IMPLS)
    one_of(cfg, "objective.metric", OBJECTIVE_METRICS)
    # objective.reference.sampler (a full-batch sampler) is checked by lambda_hat.registry.validate
    for key in ("num_chains", "num_warmup", "num_steps"):
        positive(cfg, f"objective.reference.{key}", integer=True)
    if cfg.cpu_devices is not None:
        positive(cfg, "cpu_devices", integer=True)
    positive(cfg, "data.n", integer=True)
    one_of(cfg, "data.input_dist", INPUT_DISTS)
    positive(cfg, "data.input_scale")
    require(data.noise_std >= 0, "data.noise_std", data.noise_std, "must be >= 0")
    require(data.n >= 2, "data.n", data.n, "must be >= 2 (beta = beta0 / log n)")
    positive(cfg, "posterior.beta0")
    require(cfg.posterior.gamma >= 0, "posterior.gamma", cfg.posterior.gamma, "must be >= 0")
    positive(cfg, "posterior.eval_batch_size", integer=True)
    one_of(cfg, "posterior.nbeta_from", NBETA_FROM)
    if cfg.posterior.nbeta_from == "batch_size":
        require(
            "batch_size" in sampler and sampler.name != "vi",
            "posterior.nbeta_from",
            "batch_size",
            f"needs a minibatch sampler (sampler={sampler.name} has no minibatch); use posterior.nbeta_from=n",
        )
    one_of(cfg, "posterior.sample_on", SAMPLE_ON)
    if cfg.posterior.sample_on == "subset":
        require(cfg.posterior.measure_on is not None, "posterior.sample_on", "subset", "needs posterior.measure_on (the subset's name)")

    # the estimator's own keys (sampler.*, vi.*) are checked by its module
    # (lambda_hat.estimators.*.check, called by lambda_hat.registry.validate)

    training = cfg.training
    one_of(cfg, "training.optimizer", OPTIMIZERS)
    positive(cfg, "training.learning_rate")
    positive(cfg, "training.max_steps", integer=True)
    positive(cfg, "training.eval_every", integer=True)
    positive(cfg, "training.patience", integer=True)
    if training.batch_size is not None:
        require(
            0 < training.batch_size <= data.n,
            "training.batch_size",
            training.batch_size,
            f"must be in [1, data.n={data.n}] or null (full batch)",
        )
