"""The VI fit driver: independent fits of q (vmapped "chains"), then λ̂ from draws of q on full data.

Per fit: optax optimiser (schedule, global-norm clipping) on minibatch ELBO gradients of the same
:class:`~lambda_hat.posterior.Posterior` the samplers use, steps in a jit-compiled ``lax.scan``
cut into a few equal chunks for progress (the sampler driver's pieces), chains split over devices
like sampler chains. Then ``num_draws`` draws of each fitted q: L_n(w) on the full data (the
estimate), log p(w) − log q(w) (the importance ratios whose Pareto k̂ flags the fit).

Work in full-gradient equivalents (FGE), per fit: the whitening pre-pass (whitening_batches
minibatch gradients x batch/n, shared by the fits and counted once per fit), num_steps x
draws_per_step minibatch gradients x batch/n, and num_draws full-data evaluations of L_n counted
as 1 FGE each (a forward pass costs less than a gradient; counting it as one keeps VI's cost an
upper bound). In the Trace the fit is the "warm-up" (n_fge_warmup, warmup_time_s) and the
final draws the "sampling" (n_fge, sampling_time_s); metrics.json names them fit_* and final_*.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from lambda_hat.devices import CHAIN_AXIS, chain_mesh
from lambda_hat.posterior import Posterior
from lambda_hat.samplers.driver import _log_progress, _over_chains, _place, chunk_length
from lambda_hat.samplers.programs import timed_compile
from lambda_hat.trace import Trace
from lambda_hat.vi.base import VIFamily, draws_per_step, elbo_surrogate

log = logging.getLogger(__name__)


def make_optimizer(s: Any) -> optax.GradientTransformation:
    """optax optimiser with the configured schedule (optional linear warm-up) and clipping."""
    peak, end = float(s.learning_rate), float(s.learning_rate) * float(s.end_lr_fraction)
    warmup, steps = int(s.warmup_steps), int(s.num_steps)
    decay = max(1, steps - warmup)
    schedule = {
        "constant": lambda: optax.constant_schedule(peak),
        "cosine": lambda: optax.cosine_decay_schedule(peak, decay, alpha=float(s.end_lr_fraction)),
        "linear": lambda: optax.linear_schedule(peak, end, decay),
    }[s.schedule]()
    if warmup > 0:
        schedule = optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), schedule], [warmup])
    optimizer = {"adam": optax.adam, "adamw": optax.adamw, "sgd": optax.sgd}[s.optimizer](schedule)
    if s.clip_norm is None:
        return optimizer
    return optax.chain(optax.clip_by_global_norm(float(s.clip_norm)), optimizer)


def minibatch_logp(posterior: Posterior, scale: jax.Array, idx: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """log p of the whitened z (w = w* + s ⊙ z) on the rows idx: −nβ L_batch(w) − γ/2 |w − w*|²."""

    def logp(z: jax.Array) -> jax.Array:
        w = posterior.w_star + scale * z
        return -posterior.nbeta * posterior.batch_loss(w, idx) - posterior.localization(w)

    return logp


def whitening_scale(posterior: Posterior, key: jax.Array, batch_size: int, num_batches: int) -> jax.Array:
    """Per-coordinate scale s from minibatch-gradient second moments near w*.

    At w = w* + σ ξ (σ = 1/sqrt(nβ + γ)), the gradient of nβ L is ≈ A σ ξ for the Hessian A, so
    sqrt(E g_i²)/σ ≈ sqrt((A²)_ii) (= |A_ii| where A is diagonal) estimates the curvature along
    coordinate i; at w* itself a noiseless model's gradients vanish, hence the perturbation.
    s_i = 1/sqrt(curvature_i + γ): the posterior's scale along i for a quadratic loss.
    Hand-written: no library computes this preconditioner for an arbitrary loss.
    """
    sigma = 1.0 / jnp.sqrt(posterior.nbeta + posterior.gamma)

    def one(sum_sq: jax.Array, k: jax.Array) -> tuple[jax.Array, None]:
        k_w, k_b = jax.random.split(k)
        w = posterior.w_star + sigma * jax.random.normal(k_w, posterior.w_star.shape, posterior.dtype)
        idx = jax.random.randint(k_b, (batch_size,), 0, posterior.n)
        g = jax.grad(lambda v: posterior.nbeta * posterior.batch_loss(v, idx))(w)
        return sum_sq + g**2, None

    sum_sq, _ = jax.lax.scan(one, jnp.zeros_like(posterior.w_star), jax.random.split(key, num_batches))
    curvature = jnp.sqrt(sum_sq / num_batches) / sigma
    return 1.0 / jnp.sqrt(curvature + posterior.gamma + 1e-12)


def run_fits(
    s: Any,
    family: VIFamily,
    posterior: Posterior,
    key: jax.Array,
    *,
    progress: bool = True,
    label: str = "vi",
    max_chunks: int = 10,
    split_chains: bool = True,
    before_timed: Callable[[], None] = lambda: None,
) -> Trace:
    """Fit s.num_chains independent q's and draw s.num_draws from each on the full data.

    s is a sampler=vi config (lambda_hat.estimators.vi.VIConfig). Returns the Trace every estimator
    returns (loss: (chains, num_draws) full-data L_n at draws of q), with the per-step fit trace
    in ``Trace.fit`` and the draws' log p − log q in ``Trace.extras["log_ratio"]``.
    """
    num_chains, num_steps, batch = int(s.num_chains), int(s.num_steps), int(s.batch_size)
    num_samples, num_draws = int(s.num_samples), int(s.num_draws)
    mesh = chain_mesh(num_chains) if split_chains else None
    chains, replicated = P(CHAIN_AXIS), P()
    white_key, init_key, run_key, draw_key = jax.random.split(key, 4)
    frac = batch / posterior.n

    white_time = white_compile = 0.0
    if s.whitening:
        white_fn = jax.jit(whitening_scale, static_argnums=(2, 3))
        white_compiled, white_compile = timed_compile(white_fn, posterior, white_key, batch, int(s.whitening_batches))
        start = time.perf_counter()
        scale = jax.block_until_ready(white_compiled(posterior, white_key))
        white_time = time.perf_counter() - start
        fge_white = int(s.whitening_batches) * frac
    else:
        scale = jnp.full_like(posterior.w_star, 1.0 / jnp.sqrt(posterior.nbeta + posterior.gamma))
        fge_white = 0.0
    log_det_scale = jnp.sum(jnp.log(scale))  # log q_w(w) = log q_z(z) − Σ log s

    optimizer = make_optimizer(s)
    params = jax.vmap(family.init)(jax.random.split(init_key, num_chains))
    opt_state = jax.vmap(optimizer.init)(params)
    chain_keys = jax.random.split(run_key, num_chains)
    per_step = draws_per_step(family, num_samples)

    def step(carry, chain_key, t, posterior, scale):
        params, opt_state = carry
        k_batch, k_q = jax.random.split(jax.random.fold_in(chain_key, t))
        idx = jax.random.randint(k_batch, (batch,), 0, posterior.n)
        logp = minibatch_logp(posterior, scale, idx)
        (_, diag), grads = jax.value_and_grad(lambda p: elbo_surrogate(family, p, k_q, logp, num_samples), has_aux=True)(params)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        extras = {**diag, "elbo": diag["elbo"] + log_det_scale, "grad_norm": grad_norm}
        if family.diagnostics is not None:
            extras |= family.diagnostics(params)
        return (params, opt_state), extras

    step_all = jax.vmap(step, in_axes=(0, 0, None, None, None))
    steps_per_chunk = chunk_length(num_steps, max_chunks if progress else 1)

    def run_chunk(carry, t, posterior, scale, chain_keys):
        def body(c, _):
            carry, t = c
            carry, extras = step_all(carry, chain_keys, t, posterior, scale)
            return (carry, t + 1), extras

        (carry, t), extras = jax.lax.scan(body, (carry, t), None, length=steps_per_chunk)
        return carry, t, extras

    carry = _place(mesh, (params, opt_state), chains)
    chain_keys = _place(mesh, chain_keys, chains)
    posterior = _place(mesh, posterior, replicated)
    scale = _place(mesh, scale, replicated)
    t = _place(mesh, jnp.zeros((), jnp.int32), replicated)
    chunk_fn = _over_chains(run_chunk, mesh, (chains, replicated, replicated, replicated, chains), (chains, replicated, P(None, CHAIN_AXIS)))
    compiled, compile_time = timed_compile(jax.jit(chunk_fn, donate_argnums=(0,)), carry, t, posterior, scale, chain_keys, mesh=mesh)
    before_timed()
    if progress:
        log.info("[%s] fitting %d independent q's, %d steps each ...", label, num_chains, num_steps)
    start = time.perf_counter()
    fit_chunks: list[dict[str, np.ndarray]] = []
    for i in range(num_steps // steps_per_chunk):
        carry, t, extras = compiled(carry, t, posterior, scale, chain_keys)
        fit_chunks.append({k: np.asarray(v) for k, v in extras.items()})  # blocks: the chunk is done
        if progress and num_steps > steps_per_chunk:
            done = (i + 1) * steps_per_chunk
            elbo = np.median(fit_chunks[-1]["elbo"][-1])
            _log_progress(label, f"fit step (ELBO {elbo:.4g})", done, num_steps, time.perf_counter() - start)
    fit_time = time.perf_counter() - start + white_time
    fit = {k: np.concatenate([c[k] for c in fit_chunks], axis=0).T for k in fit_chunks[0]}
    params = carry[0]

    def final(params, key, posterior, scale):
        z, log_q = family.sample(params, key, num_draws)
        w = posterior.w_star + scale * z
        # lax.map in blocks: a full-data forward pass per draw, not num_draws of them at once
        loss = jax.lax.map(posterior.full_loss, w, batch_size=min(num_draws, 32))
        log_p = -posterior.nbeta * loss - jax.vmap(posterior.localization)(w)
        if posterior.measuring:  # a data-refined λ̂: its loss on the second dataset, weights as before
            loss = jax.lax.map(posterior.measured_loss, w, batch_size=min(num_draws, 32))
        return loss, log_p - (log_q - log_det_scale)

    final_fn = _over_chains(jax.vmap(final, in_axes=(0, 0, None, None)), mesh, (chains, chains, replicated, replicated), (chains, chains))
    draw_keys = _place(mesh, jax.random.split(draw_key, num_chains), chains)
    final_compiled, final_compile = timed_compile(jax.jit(final_fn), params, draw_keys, posterior, scale, mesh=mesh)
    start = time.perf_counter()
    loss, log_ratio = final_compiled(params, draw_keys, posterior, scale)
    loss, log_ratio = np.asarray(loss), np.asarray(log_ratio)
    final_time = time.perf_counter() - start

    fge_fit = num_chains * (fge_white + num_steps * per_step * frac)
    return Trace(
        loss=loss,
        step=np.arange(1, num_draws + 1),  # the draw's number (all after num_steps fit steps)
        num_burnin_draws=0,
        compile_time_s=final_compile,
        sampling_time_s=final_time,
        n_fge=float(num_chains * num_draws),
        n_fge_warmup=float(fge_fit),
        extras={"log_ratio": log_ratio},
        warmup_time_s=fit_time,
        warmup_compile_time_s=compile_time + white_compile,
        num_warmup_steps=num_steps,
        devices=1 if mesh is None else int(mesh.devices.size),
        fit=fit,
    )
