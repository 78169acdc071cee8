"""Runs a kernel on many chains: chains vmapped, steps in a jit-compiled ``lax.scan``.

The scan is cut into a few equal chunks (one compilation) only so that long runs can report
progress; within a chunk there is no host round-trip. Traces hold one scalar per kept draw and
chain, never parameters.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from lambda_hat.posterior import Posterior
from lambda_hat.samplers.base import Kernel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trace:
    """Per-draw loss of every chain, with the bookkeeping needed for the estimate and its cost."""

    loss: np.ndarray  # (chains, draws): L(w) recorded at each kept draw
    step: np.ndarray  # (draws,): number of steps taken when the draw was recorded
    num_burnin_draws: int  # the first draws, recorded during burn-in
    compile_time_s: float
    sampling_time_s: float
    n_fge: float  # full-gradient equivalents spent after burn-in (all chains)
    n_fge_warmup: float  # ... spent during burn-in / warm-up (all chains)


def chunk_length(num_draws: int, max_chunks: int) -> int:
    """Smallest divisor of num_draws that is >= num_draws / max_chunks (equal chunks, one compile)."""
    target = math.ceil(num_draws / max_chunks)
    return next(c for c in range(target, num_draws + 1) if num_draws % c == 0)


def run_chains(
    kernel: Kernel,
    posterior: Posterior,
    key: jax.Array,
    *,
    num_chains: int,
    num_steps: int,
    num_burnin: int,
    thinning: int = 1,
    progress: bool = True,
    label: str = "sampler",
    max_chunks: int = 10,
) -> Trace:
    """Run num_chains chains from w* for num_steps steps each, keeping every thinning-th loss."""
    num_draws = num_steps // thinning
    draws_per_chunk = chunk_length(num_draws, max_chunks if progress else 1)
    init_key, run_key = jax.random.split(key)
    chain_keys = jax.random.split(run_key, num_chains)
    init_keys = jax.random.split(init_key, num_chains)
    states = jax.vmap(kernel.init, in_axes=(0, None, None))(init_keys, posterior.w_star, posterior)
    step_all = jax.vmap(kernel.step, in_axes=(0, 0, None))

    def run_chunk(states, t, posterior):
        def one_step(carry, _):
            states, t = carry
            keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(chain_keys, t)
            states, info = step_all(keys, states, posterior)
            return (states, t + 1), info.loss

        def one_draw(carry, _):
            carry, losses = jax.lax.scan(one_step, carry, None, length=thinning)
            return carry, losses[-1]

        (states, t), losses = jax.lax.scan(one_draw, (states, t), None, length=draws_per_chunk)
        return states, t, losses

    t = jnp.zeros((), jnp.int32)
    start = time.perf_counter()
    compiled = jax.jit(run_chunk, donate_argnums=(0,)).lower(states, t, posterior).compile()
    compile_time = time.perf_counter() - start

    chunks: list[np.ndarray] = []
    start = time.perf_counter()
    for i in range(num_draws // draws_per_chunk):
        states, t, losses = compiled(states, t, posterior)
        chunks.append(np.asarray(losses))  # blocks: the chunk is done
        if progress and num_draws > draws_per_chunk:
            done = (i + 1) * draws_per_chunk * thinning
            elapsed = time.perf_counter() - start
            log.info(
                "[%s] step %d/%d (%d%%), %.1fs elapsed, ~%.1fs left",
                label, done, num_steps, 100 * done // num_steps, elapsed, elapsed * (num_steps / done - 1),
            )
    sampling_time = time.perf_counter() - start

    loss = np.concatenate(chunks, axis=0).T  # (chains, draws)
    step = thinning * np.arange(1, num_draws + 1)
    burnin_draws = int(np.sum(step <= num_burnin))
    steps_run = num_draws * thinning
    return Trace(
        loss=loss,
        step=step,
        num_burnin_draws=burnin_draws,
        compile_time_s=compile_time,
        sampling_time_s=sampling_time,
        n_fge=kernel.fge_per_step * (steps_run - num_burnin) * num_chains,
        n_fge_warmup=kernel.fge_per_step * num_burnin * num_chains,
    )
