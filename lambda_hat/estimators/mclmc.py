"""Microcanonical Langevin Monte Carlo (blackjax), tuned with ``mclmc_find_L_and_step_size``, and
its Metropolis-adjusted variant (``adjusted_mclmc_dynamic``, tuned with
``adjusted_mclmc_find_L_and_step_size``).

Every knob of the schema reaches blackjax: the three tuning fractions, the desired energy
variance, trust in the estimate, the number of effective samples, diagonal preconditioning,
the L factor and the integrator. Tuning runs per chain; its integrator steps are counted as
warm-up work (each isokinetic integrator step costs one gradient per position update).
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from lambda_hat.config import one_of, positive, require
from lambda_hat.estimators import EstimatorSpec, SamplerConfig, check_fractions, check_open_unit, check_sampler, exact, too_small

if TYPE_CHECKING:
    import jax

    from lambda_hat.posterior import Posterior
    from lambda_hat.samplers.base import Kernel, Warmup

# Gradient evaluations per step of each blackjax isokinetic integrator (= position updates in the
# splitting scheme); the names are blackjax.mcmc.integrators'.
GRADIENTS_PER_STEP = {
    "isokinetic_velocity_verlet": 1,
    "isokinetic_mclachlan": 2,
    "isokinetic_yoshida": 3,
    "isokinetic_omelyan": 5,
}


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


def check(cfg: DictConfig) -> None:
    check_sampler(cfg)
    s = cfg.sampler
    one_of(cfg, "sampler.integrator", tuple(GRADIENTS_PER_STEP))
    check_fractions(cfg)
    require(s.frac_tune1 + s.frac_tune2 > 0, "sampler.frac_tune1", s.frac_tune1, "frac_tune1 + frac_tune2 must be > 0 (no tuning otherwise)")
    for key in ("desired_energy_var", "trust_in_estimate", "l_factor"):
        positive(cfg, f"sampler.{key}")
    positive(cfg, "sampler.num_effective_samples", integer=True)


def check_adjusted(cfg: DictConfig) -> None:
    check_sampler(cfg)
    s = cfg.sampler
    one_of(cfg, "sampler.integrator", tuple(GRADIENTS_PER_STEP))
    check_open_unit(cfg, "target_accept")
    positive(cfg, "sampler.num_windows", integer=True)
    positive(cfg, "sampler.tuning_factor")
    require(
        s.target_num_integration_steps > 1.1,
        "sampler.target_num_integration_steps",
        s.target_num_integration_steps,
        "must be > 1.1 (blackjax's floor for avg-preserving tuning)",
    )
    check_fractions(cfg)


def _warmup_result(state: Any, params: Any, num_tuning_steps: Any, grads_per_step: int) -> Warmup:
    """Package blackjax's MCLMCAdaptationState; tuning cost = integrator steps x gradients each."""
    import jax.numpy as jnp

    from lambda_hat.samplers.base import Warmup

    dtype = state.position.dtype
    tuned = {"L": params.L, "step_size": params.step_size, "inverse_mass_matrix": params.inverse_mass_matrix}
    extras = {
        "L": params.L,
        "step_size": params.step_size,
        "mean_inverse_mass": jnp.mean(params.inverse_mass_matrix),
        "num_tuning_steps": jnp.asarray(num_tuning_steps, dtype),
    }
    return Warmup(state, tuned, jnp.asarray(num_tuning_steps * grads_per_step, dtype), extras)


def build(cfg: Any, n: int) -> Kernel:
    """MCLMC, tuned per chain by ``mclmc_find_L_and_step_size``."""
    import blackjax
    import jax.numpy as jnp
    from blackjax.mcmc import integrators

    from lambda_hat.samplers.base import Kernel, StepInfo

    del n
    integrator, grads_per_step = getattr(integrators, cfg.integrator), GRADIENTS_PER_STEP[cfg.integrator]
    raw_kernel = blackjax.mcmc.mclmc.build_kernel(integrator=integrator, desired_energy_var=float(cfg.desired_energy_var))

    def init(key: jax.Array, w0: jax.Array, post: Posterior):
        return blackjax.mcmc.mclmc.init(position=w0, logdensity_fn=post.logdensity, rng_key=key)

    def warmup(key: jax.Array, state, post: Posterior) -> Warmup:
        state, params, num_tuning_steps = blackjax.mclmc_find_L_and_step_size(
            mclmc_kernel=raw_kernel,
            num_steps=int(cfg.num_steps),
            state=state,
            rng_key=key,
            logdensity_fn=post.logdensity,
            frac_tune1=float(cfg.frac_tune1),
            frac_tune2=float(cfg.frac_tune2),
            frac_tune3=float(cfg.frac_tune3),
            desired_energy_var=float(cfg.desired_energy_var),
            trust_in_estimate=float(cfg.trust_in_estimate),
            num_effective_samples=int(cfg.num_effective_samples),
            diagonal_preconditioning=bool(cfg.diagonal_preconditioning),
            l_factor=float(cfg.l_factor),
        )
        return _warmup_result(state, params, num_tuning_steps, grads_per_step)

    def step(key, state, params, post: Posterior, t):
        del t
        state, info = raw_kernel(key, state, post.logdensity, params["inverse_mass_matrix"], params["L"], params["step_size"])
        dtype = state.position.dtype
        loss = post.loss_of_logdensity(info.logdensity, state.position)
        extras = {
            # the quantity MCLMC tunes: energy error variance per dimension
            "energy_var_per_dim": (info.energy_change**2 / post.d).astype(dtype),
        }
        return state, StepInfo(loss, jnp.asarray(grads_per_step, dtype), extras)

    return Kernel(init=init, step=step, warmup=warmup)


def build_adjusted(cfg: Any, n: int) -> Kernel:
    """Metropolis-adjusted MCLMC (blackjax ``adjusted_mclmc_dynamic``), tuned per chain by
    ``adjusted_mclmc_find_L_and_step_size`` (dual averaging of the step to ``target_accept``)."""
    import blackjax
    import jax.numpy as jnp
    from blackjax.mcmc import integrators

    from lambda_hat.samplers.base import Kernel, StepInfo

    del n
    integrator, grads_per_step = getattr(integrators, cfg.integrator), GRADIENTS_PER_STEP[cfg.integrator]
    dynamic = blackjax.mcmc.adjusted_mclmc_dynamic
    raw_kernel = dynamic.build_kernel(
        integrator=integrator,
        integration_steps_fn=dynamic.make_random_trajectory_length_fn(bool(cfg.random_trajectory_length)),
    )

    def init(key: jax.Array, w0: jax.Array, post: Posterior):
        return dynamic.init(w0, post.logdensity, key)

    def warmup(key: jax.Array, state, post: Posterior) -> Warmup:
        state, params, num_tuning_steps = blackjax.adjusted_mclmc_find_L_and_step_size(
            mclmc_kernel=raw_kernel,
            logdensity_fn=post.logdensity,
            num_steps=int(cfg.num_steps),
            state=state,
            rng_key=key,
            target=float(cfg.target_accept),
            frac_tune1=float(cfg.frac_tune1),
            frac_tune2=float(cfg.frac_tune2),
            frac_tune3=float(cfg.frac_tune3),
            diagonal_preconditioning=bool(cfg.diagonal_preconditioning),
            num_windows=int(cfg.num_windows),
            tuning_factor=float(cfg.tuning_factor),
            target_num_integration_steps=float(cfg.target_num_integration_steps),
        )
        return _warmup_result(state, params, num_tuning_steps, grads_per_step)

    def step(key, state, params, post: Posterior, t):
        del t
        state, info = raw_kernel(
            rng_key=key,
            state=state,
            logdensity_fn=post.logdensity,
            step_size=params["step_size"],
            inverse_mass_matrix=params["inverse_mass_matrix"],
            integration_steps_params=(params["L"] / params["step_size"],),
        )
        dtype = state.position.dtype
        loss = post.loss_of_logdensity(state.logdensity, state.position)
        extras = {
            "acceptance_rate": info.acceptance_rate,
            "is_divergent": info.is_divergent,
            "num_integration_steps": info.num_integration_steps,
        }
        extras = {k: jnp.asarray(v).astype(dtype) for k, v in extras.items()}
        fge = jnp.asarray(info.num_integration_steps * grads_per_step).astype(dtype)
        return state, StepInfo(loss, fge, extras)

    return Kernel(init=init, step=step, warmup=warmup)


def gradients_per_chain(cfg: Any) -> tuple[float | None, float | None]:
    """(expected, upper bound) full-data gradients one chain spends, tuning included."""
    fracs = float(cfg.frac_tune1) + float(cfg.frac_tune2) + float(cfg.frac_tune3)
    if cfg.diagonal_preconditioning:
        fracs += float(cfg.frac_tune2) / 3
    total = int(cfg.num_steps) * (1 + fracs) * GRADIENTS_PER_STEP[cfg.integrator]
    return total, total


def adjusted_gradients_per_chain(cfg: Any) -> tuple[float | None, float | None]:
    """Adjusted MCLMC: tuning adapts the trajectory length, so only the sampling part is known."""
    sampling = int(cfg.num_steps) * float(cfg.target_num_integration_steps) * GRADIENTS_PER_STEP[cfg.integrator]
    return sampling, None


def size_mclmc(s: Any, n: int, fge: Fraction, vi: Any = None) -> dict[str, Any]:
    """MCLMC: num_steps x (1 + its tuning fractions, frac_tune2 / 3 more with preconditioning) x
    the integrator's gradients (1e3 FGE: 375 x (1 + 0.1 + 0.1 + 0.1/3 + 0.1) x 2)."""
    fracs = exact(s.frac_tune1) + exact(s.frac_tune2) + exact(s.frac_tune3) + (exact(s.frac_tune2) / 3 if s.diagonal_preconditioning else 0)
    steps = math.floor(fge / ((1 + fracs) * GRADIENTS_PER_STEP[s.integrator]))
    if steps < 1:
        raise too_small("mclmc", float(fge), "one step")
    return {"num_steps": steps}


def size_adjusted_mclmc(s: Any, n: int, fge: Fraction, vi: Any = None) -> dict[str, Any]:
    """Adjusted MCLMC, sampling only: num_steps proposals x target_num_integration_steps x the
    integrator's gradients (1e3 FGE: 250 x 2 x 2). Its tuning is adaptive (blackjax sizes it;
    50-100x these budgets on the benchmark DLNs): the report shows what it really spent."""
    steps = math.floor(fge / (exact(s.target_num_integration_steps) * GRADIENTS_PER_STEP[s.integrator]))
    if steps < 1:
        raise too_small("adjusted_mclmc", float(fge), "one proposal")
    return {"num_steps": steps}


ESTIMATORS = (
    EstimatorSpec("mclmc", MCLMCConfig, "full_batch", build, gradients_per_chain, check, size=size_mclmc),
    EstimatorSpec("adjusted_mclmc", AdjustedMCLMCConfig, "full_batch", build_adjusted, adjusted_gradients_per_chain, check_adjusted, size=size_adjusted_mclmc),
)
