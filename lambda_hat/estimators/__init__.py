"""Estimators: one module per algorithm (or pair of close ones), each holding its config schema,
range checks, cost and builder together.

A module here defines ``ESTIMATORS``, a tuple of :class:`EstimatorSpec`; lambda_hat.registry
finds every module of this package (no list to edit elsewhere) and generates the ConfigStore's
``schema/sampler/<name>`` entries from the specs. Adding an estimator is one module here, one
preset in ``conf/sampler/`` and its tests (docs: extending).

The modules are JAX-free when imported: validating a command line reads the schemas and checks
and must not pay for starting JAX (~1.5 s with blackjax). A builder imports the JAX code when a
run calls it; the machinery shared by several samplers (the driver, the SG-Langevin engine, window
adaptation) lives in :mod:`lambda_hat.samplers`, the variational fit in :mod:`lambda_hat.vi`.

Module map: ``sgld`` (SGLD and the SG-MCMC base schema), ``psgld`` (RMSprop- and
Adam-preconditioned SGLD), ``sghmc`` (SGHMC and SGNHT), ``hmc`` (HMC and NUTS), ``mclmc`` (MCLMC
and its adjusted variant), ``vi`` (variational inference and its ``vi`` group: MFA, flows).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal, Optional

from omegaconf import MISSING, DictConfig

from lambda_hat.config import DTYPES, WORK_CAP_FACTOR, ConfigError, burnin_steps, one_of, positive, require

if TYPE_CHECKING:
    from lambda_hat.samplers.base import Kernel

Family = Literal["minibatch", "full_batch", "variational"]


@dataclass(frozen=True)
class EstimatorSpec:
    """One registered estimator.

    ``build(cfg, n) -> Kernel`` for a data set of n rows (for the variational family the fit
    driver, called by the runner with the VI algorithm of the ``vi`` group). ``cost(cfg) ->
    (expected, upper bound)`` full-data gradients one chain spends, warm-up included (the run says
    the cost up front from it); None if unknown beforehand. ``check(cfg)`` raises
    lambda_hat.config.ConfigError for a value out of range (the root config is passed, so a check
    may compare with ``data.n``); None: the common checks only. ``cost_knobs``: the keys the
    up-front cost estimate tells a user to shorten the run with.
    """

    name: str
    schema: type
    family: Family
    build: Callable[[Any, int], Kernel | Any]
    cost: Callable[[Any], tuple[float | None, float | None]] | None = None
    check: Callable[[DictConfig], None] | None = None
    # the keys that shorten a run, named in the up-front cost estimate
    cost_knobs: str = "sampler.num_steps"
    # size(sampler, n, fge, vi) -> the sampler keys that spend fge full-gradient equivalents per
    # chain, warm-up included (budget.fge_per_chain; lambda_hat.budget applies it); None: no rule
    size: Callable[..., dict[str, Any]] | None = None
    # Sampler keys a batched grid (lambda_hat.grid) may vary within one compiled program: build()
    # reads them as numbers it never converts with float()/int(), so they may be traced scalars.
    # Seeds, posterior.beta0 and posterior.gamma batch for every estimator (they are arguments).
    grid_keys: tuple[str, ...] = ()

    def gradients_per_chain(self, cfg: Any) -> tuple[float | None, float | None] | None:
        return None if self.cost is None else self.cost(cfg)


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
    # Run until converged (the default): num_steps is the first stretch, then sampling goes on in
    # chunks of a tenth of it until the per-draw λ̂ after burn-in has split R-hat <= converge_rhat
    # and bulk ESS >= converge_ess, or max_steps (the work cap, steps per chain; null =
    # WORK_CAP_FACTOR x num_steps) is reached, which warns. Burn-in is then chosen from the chains
    # (MSER-5, lambda_hat.llc.stationary_start), at most burnin_fraction x the steps run
    # (num_burnin, if set, stays fixed). until_converged=false: a fixed length of num_steps
    # (lambda_hat.samplers.driver.Converge).
    until_converged: bool = True
    max_steps: Optional[int] = None
    converge_rhat: float = 1.01
    converge_ess: float = 400.0


def check_sampler(cfg: DictConfig) -> None:
    """The keys every MCMC sampler has (SamplerConfig)."""
    sampler = cfg.sampler
    positive(cfg, "sampler.num_chains", integer=True)
    one_of(cfg, "sampler.dtype", DTYPES)
    positive(cfg, "sampler.num_steps", integer=True)
    positive(cfg, "sampler.thinning", integer=True)
    require(
        sampler.num_steps % sampler.thinning == 0,
        "sampler.thinning",
        sampler.thinning,
        f"must divide sampler.num_steps={sampler.num_steps} (every step run is counted)",
    )
    if sampler.get("max_steps") is not None:
        require(
            bool(sampler.until_converged),
            "sampler.max_steps",
            sampler.max_steps,
            "is the work cap of sampler.until_converged=true; null with a fixed length",
        )
        require(
            sampler.max_steps >= sampler.num_steps,
            "sampler.max_steps",
            sampler.max_steps,
            f"must be >= sampler.num_steps={sampler.num_steps} (the first stretch), or null ({WORK_CAP_FACTOR} x num_steps)",
        )
    if sampler.get("until_converged"):
        require(sampler.converge_rhat > 1.0, "sampler.converge_rhat", sampler.converge_rhat, "must be > 1")
        positive(cfg, "sampler.converge_ess")
    if sampler.num_burnin is not None:
        require(
            0 <= sampler.num_burnin < sampler.num_steps,
            "sampler.num_burnin",
            sampler.num_burnin,
            f"must be in [0, sampler.num_steps={sampler.num_steps}), or null (burnin_fraction)",
        )
    require(0 <= sampler.burnin_fraction < 1, "sampler.burnin_fraction", sampler.burnin_fraction, "must be in [0, 1)")
    kept = sampler.num_steps - burnin_steps(sampler)
    require(
        kept // sampler.thinning >= 4,
        "sampler.thinning" if sampler.thinning > 1 else "sampler.num_steps",
        sampler.thinning if sampler.thinning > 1 else sampler.num_steps,
        f"must leave >= 4 draws after burn-in ({kept} steps kept, thinning {sampler.thinning})",
    )


def check_fractions(cfg: DictConfig, keys: tuple[str, ...] = ("frac_tune1", "frac_tune2", "frac_tune3")) -> None:
    """Tuning fractions of num_steps (MCLMC's), each in [0, 1]."""
    for key in keys:
        v = cfg.sampler[key]
        require(0 <= v <= 1, f"sampler.{key}", v, "must be in [0, 1]")


def check_open_unit(cfg: DictConfig, key: str) -> None:
    """A probability target (acceptance rate) strictly inside (0, 1)."""
    v = cfg.sampler[key]
    require(0 < v < 1, f"sampler.{key}", v, "must be in (0, 1)")


# ---------------------------------------------------------------- sizing for a work budget
# Exact arithmetic (fractions of the decimal values), so that a budget gives the same sizes on
# every machine and the benchmark presets' numbers exactly (tests/unit/test_budget.py).

SG_THINNING = 10  # a budgeted SG-MCMC run keeps every 10th step ...
SG_BURNIN_FRACTION = 0.5  # ... of the second half


def exact(x: Any) -> Fraction:
    """x as an exact fraction of its decimal form (0.1 -> 1/10)."""
    return Fraction(str(x)) if isinstance(x, float) else Fraction(x)


def too_small(name: str, fge: Any, why: str) -> ConfigError:
    return ConfigError("budget.fge_per_chain", fge, f"too small for {name}: {why}")


def minibatch_fge(s: Any, n: int) -> Fraction:
    """FGE of one minibatch gradient: batch_size / n (at most 1)."""
    return Fraction(min(int(s.batch_size), n), n)


# Sampling steps between two estimates of a fixed step's bias of λ̂ (SGHMC, SGNHT, an untuned
# Langevin chain: lambda_hat.samplers.sgmcmc.probe_bias); here so that sizing stays JAX-free.
PROBE_EVERY = 100


def probe_gradients(s: Any) -> int:
    """Minibatch gradients one bias estimate costs: a second minibatch's gradient and a Hessian
    probe, or the gradient alone for a Langevin chain with the LM noise (no Hessian term)."""
    return 1 if getattr(s, "integrator", None) == "lm" else 2


def sg_sizes(name: str, fge: Fraction, step: Fraction, spent: Fraction) -> dict[str, Any]:
    """An SG-MCMC run of steps costing ``step`` FGE each after ``spent`` FGE of tuning: whole
    tens of steps, thinning 10, the second half kept."""
    steps = math.floor((fge - spent) / step) // SG_THINNING * SG_THINNING
    if steps <= 0:
        raise too_small(name, float(fge), f"{SG_THINNING} steps of {float(step):g} FGE after {float(spent):g} FGE of tuning")
    return {"num_steps": steps, "thinning": SG_THINNING, "burnin_fraction": SG_BURNIN_FRACTION}
