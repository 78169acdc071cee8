"""The minibatch SG-MCMC engine: the minibatch potential, the SG-Langevin move (with an optional
diagonal preconditioner), MALA acceptance and step-size tuning. The estimators that use it are
lambda_hat.estimators.sgld (plain SGLD), .psgld (RMSprop/Adam preconditioners) and .sghmc (SGHMC,
SGNHT: their momentum step is written there, on this module's potential).

Langevin family, with U(w) = nβ L_batch(w) + γ/2 |w - w*|² and a diagonal preconditioner G:

    w <- w - (ε/2) G ⊙ ∇U(w) + sqrt(ε G) ⊙ ξ,   ξ ~ N(0, I)

(devinterp's convention: ε is the step size). With ``integrator: lm`` (the default) the noise
is Leimkuhler & Matthews' (2013, "Rational construction of stochastic numerical methods for
molecular sampling"): ξ is replaced by (ξ_k + ξ_{k+1})/2, the mean of this step's draw and the
next's, so each draw is used twice. Why: on a quadratic U the Euler–Maruyama chain's stationary
E[U] is high by ε·tr(G A)/8 (A = ∇²U), which grows with the number of stiff directions and
dominated the step's bias of λ̂ (98% of the predicted bias on a ~1k random DLN); the LM chain's
stationary variance is exact there at any stable step (an ARMA(1,1) whose variance is 1/a per
eigenvalue a), leaving the minibatch noise's ε·tr(G Σ_g)/8 and higher-order terms. Same cost,
same step-size meaning; ``integrator: euler`` is devinterp's and Lau et al.'s move
(``sampler=sgld_lau``). Plain Euler SGLD (G = 1) uses blackjax's overdamped Langevin integrator
(blackjax has no LM move). blackjax has no preconditioned SGLD, so RMSprop/Adam are written here
following Hitchcock & Hoogland 2025 (arXiv:2507.21449) App. D.3 (lambda_hat.estimators.psgld
supplies the moments as a :class:`Preconditioner`): the moment estimates use the loss gradient
∇L_batch only, not the localization term. As in pSGLD (Li et al. 2016) the small Γ correction
term is dropped.

Step-size health (Furman & Lau 2024, arXiv:2402.03698): every ``mala_every`` steps the Langevin
samplers report ``mala_accept``, the Metropolis acceptance probability that a MALA proposal with
the same step, drift and noise would have (evaluated on the step's minibatch). Low values mean
the step is too large. It costs one extra minibatch gradient per evaluation, not counted as work.

Step-size tuning (``target_mala_accept``, Langevin samplers only): a fixed ε is right for one nβ
and one loss scale only (Lau et al.'s 5e-7 is calibrated for n = 1e5; at n = 1e4 its MALA
acceptance is ~1 and the chains under-mix). With a target set, each chain first runs
``num_tune`` MALA-corrected steps whose ε follows blackjax's dual averaging towards that
acceptance; sampling then uses the averaged ε (per chain), unadjusted as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.adaptation.step_size import dual_averaging_adaptation
from blackjax.sgmcmc.diffusions import overdamped_langevin

from lambda_hat.estimators import PROBE_EVERY, probe_gradients
from lambda_hat.posterior import Posterior
from lambda_hat.samplers.base import Kernel, StepInfo, StepwiseWarmup, Warmup

BIAS_EVERY = 5  # tuning steps between two estimates of the unadjusted chain's bias (see tuning())


class SGMCMCState(NamedTuple):
    position: jax.Array
    m: jax.Array  # Adam: first moment of ∇L_batch; SGHMC/SGNHT: momentum; else shape ()
    v: jax.Array  # RMSprop/Adam: second moment of ∇L_batch; SGNHT: thermostat ξ; else shape ()
    t: jax.Array  # steps taken (Adam's bias correction)
    noise: jax.Array | None = None  # Leimkuhler–Matthews: the draw the next move reuses; else None


class Preconditioner(NamedTuple):
    """A diagonal preconditioner G = 1 / (sqrt(v̂) + eps) from moments of the loss gradient.

    ``update(m, v, g, t, grad_u, w, post) -> (m, v, drift, v̂)``: the new moments after seeing
    g = ∇L_batch at step t (float, 1-based), the drift that replaces ∇U_batch = grad_u, and the
    second-moment estimate v̂ that sets G.
    """

    update: Callable[..., tuple[jax.Array, jax.Array, jax.Array, jax.Array]]
    eps: float


def batch_idx(key: jax.Array, post: Posterior, batch_size: int) -> jax.Array:
    # With replacement: O(batch) per step on device, unlike a permutation of n.
    return jax.random.randint(key, (batch_size,), 0, post.n)


def potential(post: Posterior, w: jax.Array, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(U_batch(w), L_batch(w)) with U = nβ L_batch + γ/2 |w - w*|²."""
    loss = post.batch_loss(w, idx)
    return post.nbeta * loss + post.localization(w), loss


def mala_acceptance(
    post: Posterior,
    idx: jax.Array,
    w: jax.Array,
    w_new: jax.Array,
    grad_u: jax.Array,
    u: jax.Array,
    eps: float,
    precond: jax.Array,
) -> jax.Array:
    """MALA acceptance probability of the move w -> w_new under N(w - ε/2 G∇U(w), εG)."""
    (u_new, _), grad_u_new = jax.value_and_grad(potential, argnums=1, has_aux=True)(post, w_new, idx)

    def log_q(to, frm, grad):  # log density of proposing `to` from `frm`, up to a constant
        return -jnp.sum((to - frm + 0.5 * eps * precond * grad) ** 2 / precond) / (2 * eps)

    log_ratio = u - u_new + log_q(w, w_new, grad_u_new) - log_q(w_new, w, grad_u)
    return jnp.exp(jnp.minimum(0.0, jnp.nan_to_num(log_ratio, nan=-jnp.inf)))


def bias_traces(
    key: jax.Array, post: Posterior, w: jax.Array, grad_u: jax.Array, batch: int, precond: jax.Array | float = 1.0, hessian: bool = True
) -> tuple[jax.Array, jax.Array]:
    """(tr(G ∇²U), tr(G Σ_g)) at w, estimated from a second, independent minibatch: a Hutchinson
    probe of its Hessian and the gradient difference (E|∇U_A − ∇U_B|² = 2 tr Σ_g); grad_u is ∇U
    on the step's own minibatch. Two gradients' worth of work; one with hessian=False (the first
    trace is then 0, not estimated)."""
    k_batch, k_probe = jax.random.split(key)
    other = batch_idx(k_batch, post, batch)
    grad_of = jax.grad(lambda x: potential(post, x, other)[0])
    if not hessian:
        return jnp.zeros((), w.dtype), 0.5 * jnp.sum(precond * (grad_u - grad_of(w)) ** 2)
    v = jnp.sqrt(precond) * jax.random.rademacher(k_probe, w.shape, w.dtype)
    grad_other, hvp = jax.jvp(grad_of, (w,), (v,))
    return jnp.vdot(v, hvp), 0.5 * jnp.sum(precond * (grad_u - grad_other) ** 2)


def probe_bias(
    key: jax.Array, post: Posterior, w: jax.Array, grad_u: jax.Array, batch: int, t: jax.Array, precond: jax.Array | float = 1.0, hessian: bool = True
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """A sampling step's bias probe: bias_traces every PROBE_EVERY steps (NaN between: the driver
    averages what was evaluated), from a key of its own so that the chain's draws do not change.
    Returns (the traces, whether they were estimated at step t)."""
    estimate = t % PROBE_EVERY == 0
    nan = jnp.full((), jnp.nan, w.dtype)
    traces = jax.lax.cond(estimate, lambda: bias_traces(jax.random.fold_in(key, 1), post, w, grad_u, batch, precond, hessian), lambda: (nan, nan))
    return traces, estimate


def build_langevin(cfg: Any, n: int, preconditioner: Preconditioner | None = None) -> Kernel:
    """An SG-Langevin kernel (tuned if cfg.target_mala_accept is set); n is the data size (a
    minibatch gradient is batch/n FGE); preconditioner None = plain SGLD (G = 1)."""
    eps0, batch = cfg.step_size, int(cfg.batch_size)  # no float(): a grid traces it
    fge = batch / n
    mala_every = int(getattr(cfg, "mala_every", 0))
    target_accept = getattr(cfg, "target_mala_accept", None)
    tuned = target_accept is not None
    num_tune = int(getattr(cfg, "num_tune", 0))
    max_bias = getattr(cfg, "max_bias", None)  # None: no bias cap (and no estimates)
    leimkuhler_matthews = getattr(cfg, "integrator", "euler") == "lm"
    probe_cost = probe_gradients(cfg)
    langevin = overdamped_langevin()

    def init(key: jax.Array, w0: jax.Array, post: Posterior) -> SGMCMCState:
        del post
        noise = jax.random.normal(key, w0.shape, w0.dtype) if leimkuhler_matthews else None
        if preconditioner is not None:
            return SGMCMCState(w0, jnp.zeros_like(w0), jnp.zeros_like(w0), jnp.zeros((), jnp.int32), noise)
        scalar = jnp.zeros((), w0.dtype)
        return SGMCMCState(w0, scalar, scalar, jnp.zeros((), jnp.int32), noise)

    def propose(key, state, post, eps):
        """One Langevin move from state with step eps: (new state, L_batch(w), MALA acceptance fn,
        ∇U_batch(w), preconditioner)."""
        k_batch, k_noise = jax.random.split(key)
        w = state.position
        idx = batch_idx(k_batch, post, batch)
        (u, loss), grad_u = jax.value_and_grad(potential, argnums=1, has_aux=True)(post, w, idx)
        loss = post.recorded_loss(loss, idx)
        g = (grad_u - post.gamma * (w - post.w_star)) / post.nbeta  # ∇L_batch, for the moments
        m, v, tt = state.m, state.v, state.t + 1
        kept = None  # the draw the next LM move reuses
        if preconditioner is None and not leimkuhler_matthews:
            precond = jnp.ones((), w.dtype)
            # blackjax: w + s ∇log p + sqrt(2 s) ξ with s = ε/2 is exactly the update above.
            new_w = euler_w = langevin(k_noise, w, -grad_u, eps / 2)
        else:
            drift = grad_u
            precond = jnp.ones((), w.dtype)
            if preconditioner is not None:
                m, v, drift, v_hat = preconditioner.update(m, v, g, tt.astype(w.dtype), grad_u, w, post)
                precond = 1.0 / (jnp.sqrt(v_hat) + preconditioner.eps)
            noise = jax.random.normal(k_noise, w.shape, w.dtype)
            mean = w - 0.5 * eps * precond * drift
            euler_w = mean + jnp.sqrt(eps * precond) * noise
            new_w = euler_w
            if leimkuhler_matthews:
                # The move's noise is the mean of this step's and the last one's (see module doc).
                new_w, kept = mean + jnp.sqrt(eps * precond) * (0.5 * (state.noise + noise)), noise

        def accept_prob() -> jax.Array:
            # The Euler–Maruyama move from w with this step's noise: a MALA proposal, so its
            # acceptance measures the step the same way whichever move the chain makes.
            return mala_acceptance(post, idx, w, euler_w, grad_u, u, eps, precond).astype(w.dtype)

        return SGMCMCState(new_w, m, v, tt, kept), loss, accept_prob, grad_u, precond

    def langevin_step(key, state, params, post, t):
        eps = params["step_size"] if tuned else eps0
        new_state, loss, accept_prob, grad_u, precond = propose(key, state, post, eps)
        dtype = new_state.position.dtype
        extras = {}
        if mala_every > 0:
            extras["mala_accept"] = jax.lax.cond(t % mala_every == 0, accept_prob, lambda: jnp.full((), jnp.nan, dtype))
        fge_step = jnp.asarray(fge, dtype)
        if not tuned:
            # A fixed step has no tuner's predicted_bias: estimate its excess of E[U] along the
            # chain instead (ε·(tr(G A) + tr(G Σ_g))/8, LM: ε·tr(G Σ_g)/8; see tuning()).
            traces, estimate = probe_bias(key, post, state.position, grad_u, batch, t, precond, hessian=not leimkuhler_matthews)
            extras["predicted_excess"] = (eps * (traces[0] + traces[1]) / 8.0).astype(dtype)
            fge_step = jnp.where(estimate, (1 + probe_cost) * fge, fge).astype(dtype)
        return new_state, StepInfo(loss, fge_step, extras)

    def tuning() -> StepwiseWarmup:
        """Per chain, one step at a time: dual averaging of log ε to the target MALA acceptance,
        capped where the unadjusted chain's predicted bias of λ̂ exceeds ``max_bias``.

        Written here because blackjax adapts step sizes only inside its HMC/MCLMC warm-ups; its
        dual-averaging update is reused. The chain tuned is the *unadjusted* chain that sampling
        runs (every finite move kept, a non-finite one dropped); each move's MALA acceptance
        probability is what dual averaging sees.

        Why a cap: MALA acceptance bounds the integrator's error per step, not the bias of the
        unadjusted chain's stationary law. For U locally quadratic with Hessian A, preconditioner
        G and minibatch-gradient covariance Σ_g, the Euler–Maruyama chain's law has E[U] higher by
        ε·(tr(G A) + tr(G Σ_g))/8 (an Ornstein–Uhlenbeck process discretized; the MALA test uses
        one minibatch for both ends of a move, so it does not see Σ_g at all), i.e. λ̂ higher by
        that over λ̂. The trace grows with the number of stiff directions while the MALA error is
        dominated by the stiffest ones, so a step with MALA acceptance 0.95 can bias λ̂ a lot: on
        a wide DLN ([99,98,43], rank 41, λ = 2127.5, d = 13,916) the tuned step (33x Lau et al.'s)
        gave +157% (at γ = 100, where the chain cannot drift along the fiber, +7% at 6.7e-6, where
        the formula predicts +5.5%). Both traces and λ̂ are estimated along the tuning chain every
        ``BIAS_EVERY`` steps (a Hutchinson probe and a gradient on a second minibatch: two
        gradients' worth), and the step is capped at max_bias · 8 λ̂ / (tr(G A) + tr(G Σ_g))
        during tuning (so the chain does not heat up) and at its end.

        With the LM noise the same cap holds, though the Hessian's term is then exactly 0 on a
        quadratic and ``predicted_bias`` is the minibatch term ε·tr(G Σ_g)/(8 λ̂) alone: the cap
        keeps the step small against the *mean* curvature, which the chains may meet more of later
        than the MALA target saw while tuning. Measured (seed-21 ~10k net #4, d = 18,028, λ = 394,
        γ = 1): uncapped, the LM step (3.6e-7, MALA 0.95 while tuning) fell to MALA 0.15 as the
        chains drifted along the fiber into stiffer regions and λ̂ came out +4.9%; capped (2.2e-7),
        +0.2%. The MALA acceptance is always that of the Euler–Maruyama move with this step's
        noise (a MALA proposal), so the target means the same step whichever move the chain makes.
        """
        da_init, da_update, da_final = dual_averaging_adaptation(target_accept)

        def bias_cap(sums):
            llc_sum, trace_sum, _ = sums  # Euler–Maruyama's traces, whichever the move (see above)
            ok = (llc_sum > 0) & (trace_sum > 0)
            if max_bias is None:
                return jnp.full((), jnp.inf, llc_sum.dtype)
            return jnp.where(ok, max_bias * 8.0 * llc_sum / jnp.where(ok, trace_sum, 1.0), jnp.inf)

        def init(key, state, post):
            dtype = state.position.dtype
            # Shrink towards the configured step, not 10x it (blackjax's HMC heuristic): a 10x SGLD
            # step can be past the explicit integrator's stability limit on stiff posteriors.
            da = da_init(eps0)._replace(mu=jnp.log(eps0))
            zero = jnp.zeros((), dtype)
            return key, state, da, (zero, zero, zero), zero

        def step(carry, post, t):
            key, state, da, sums, accept_sum = carry
            dtype = state.position.dtype
            k_move, k_bias = jax.random.split(jax.random.fold_in(key, t))
            eps = jnp.minimum(jnp.exp(da.log_step_size), bias_cap(sums)).astype(dtype)
            proposal, loss, accept_prob, grad_u, precond = propose(k_move, state, post, eps)
            accept = accept_prob()
            finite = jnp.all(jnp.isfinite(proposal.position))
            # Skip the first 10% (the chain leaving w*, where U's traces and λ̂ are all ~0).
            estimate = (t % BIAS_EVERY == 0) & (t >= num_tune // 10) & (max_bias is not None)
            zero = jnp.zeros((), dtype)
            traces = jax.lax.cond(estimate, lambda: bias_traces(k_bias, post, state.position, grad_u, batch, precond), lambda: (zero, zero))
            term = (post.llc_of_loss(loss), traces[0] + traces[1], traces[1])
            use = estimate & finite & jnp.all(jnp.isfinite(jnp.stack(term)))
            sums = jax.tree.map(lambda total, x: total + jnp.where(use, x, 0.0), sums, term)
            state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), proposal, state)
            accept_sum = accept_sum + jnp.where(t >= num_tune // 2, accept, 0.0)
            # Work: the move and its MALA reverse density (two minibatch gradients), plus the
            # second minibatch's gradient and Hessian probe (counted as two) when estimated.
            fge_step = jnp.where(estimate, 4 * fge, 2 * fge).astype(dtype)
            return (key, state, da_update(da, accept), sums, accept_sum), fge_step

        def final(carry, post) -> Warmup:
            _, state, da, sums, accept_sum = carry
            dtype = state.position.dtype
            eps_mala, cap = da_final(da), bias_cap(sums)
            eps = jnp.minimum(eps_mala, cap).astype(dtype)
            llc_sum, trace_sum, noise_sum = sums
            trace_sum = noise_sum if leimkuhler_matthews else trace_sum  # the move's own bias
            extras = {
                "step_size": eps,
                "tune_mala_accept": accept_sum / (num_tune - num_tune // 2),
                # 1 where the bias cap set the step (dual averaging alone asked for more), and the
                # relative bias of λ̂ the final step is predicted to cause (0 = not estimated).
                # Both finite: the driver flags a chain whose tuned values are not.
                "step_size_capped": (cap < eps_mala).astype(dtype),
                "predicted_bias": jnp.where(llc_sum > 0, eps * trace_sum / (8.0 * jnp.where(llc_sum > 0, llc_sum, 1.0)), 0.0).astype(dtype),
            }
            return Warmup(state, {"step_size": eps}, jnp.zeros((), dtype), extras)

        return StepwiseWarmup(num_steps=num_tune, init=init, step=step, final=final)

    return Kernel(init=init, step=langevin_step, warmup=tuning() if tuned else None)
