"""Runs a kernel on many chains: chains vmapped, steps in a jit-compiled ``lax.scan``.

Warm-up (adaptation), when the kernel has one, runs first per chain (vmapped). The sampling scan
is cut into a few equal chunks (one compilation) only so that long runs can report progress;
within a chunk there is no host round-trip. With several devices (one per CPU core, see
``lambda_hat.devices``) the chain axis is split across them with ``shard_map``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lambda_hat.devices import CHAIN_AXIS, chain_mesh
from lambda_hat.posterior import Posterior
from lambda_hat.samplers.base import Kernel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trace:
    """Per-draw loss and diagnostics of every chain, and the run's cost."""

    loss: np.ndarray  # (chains, draws): L(w) at each kept draw
    step: np.ndarray  # (draws,): steps taken (after warm-up) when the draw was recorded
    num_burnin_draws: int  # the first draws, recorded during burn-in
    compile_time_s: float  # sampling scan
    sampling_time_s: float
    n_fge: float  # full-gradient equivalents after burn-in, all chains
    n_fge_warmup: float  # ... during warm-up/adaptation and burn-in, all chains
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # (chains, draws), mean per draw
    warmup: dict[str, np.ndarray] = field(default_factory=dict)  # (chains,) adapted values
    warmup_time_s: float = 0.0  # adaptation, compile included
    warmup_compile_time_s: float = 0.0
    devices: int = 1  # devices the chains were split over


def chunk_length(num_draws: int, max_chunks: int) -> int:
    """Smallest divisor of num_draws that is >= num_draws / max_chunks (equal chunks, one compile)."""
    target = math.ceil(num_draws / max_chunks)
    return next(c for c in range(target, num_draws + 1) if num_draws % c == 0)


def _timed_compile(fn, *args):
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - start


@contextlib.contextmanager
def _heartbeat(message: str, every_s: float, enabled: bool = True) -> Iterator[None]:
    """Log `message` with the elapsed time every every_s seconds while the block runs.

    For phases that run as one compiled call without a step counter we can read: blackjax's
    warm-ups scan all their steps inside one call (their progress bar needs a host callback per
    step), so the host can only say that the call is still running and for how long.
    """
    if not enabled:
        yield
        return
    done = threading.Event()
    start = time.perf_counter()

    def beat() -> None:
        while not done.wait(every_s):
            log.info("%s, %.0fs elapsed", message, time.perf_counter() - start)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _over_chains(fn, mesh: Mesh | None, in_specs: tuple, out_specs):
    """fn split along the chain axis over the mesh's devices (fn itself when there is no mesh)."""
    if mesh is None:
        return fn
    # check_vma=False: the samplers (blackjax's included) use lax.cond/while_loop with constants in
    # one branch, which the varying-axis type check rejects; chains never communicate, and the
    # one replicated output (the step counter) is the same on every device by construction.
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


def _place(mesh: Mesh | None, tree, spec: P):
    """Commit tree's arrays to the mesh (chain-split or replicated) so compiled calls see one layout."""
    return tree if mesh is None else jax.device_put(tree, NamedSharding(mesh, spec))


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
    split_chains: bool = True,
    heartbeat_s: float = 30.0,
) -> Trace:
    """Run num_chains chains from w*: warm-up if any, then num_steps steps keeping every thinning-th.

    split_chains spreads the chains over the available devices (see lambda_hat.devices).
    With progress on, sampling logs each chunk's step count and a warm-up logs every heartbeat_s.
    """
    num_draws = num_steps // thinning
    draws_per_chunk = chunk_length(num_draws, max_chunks if progress else 1)
    mesh = chain_mesh(num_chains) if split_chains else None
    chains, replicated = P(CHAIN_AXIS), P()
    init_key, warm_key, run_key = jax.random.split(key, 3)
    chain_keys = _place(mesh, jax.random.split(run_key, num_chains), chains)
    states = jax.vmap(kernel.init, in_axes=(0, None, None))(
        jax.random.split(init_key, num_chains), posterior.w_star, posterior
    )
    states = _place(mesh, states, chains)
    posterior = _place(mesh, posterior, replicated)

    params, warm_extras, fge_warmup = (), {}, 0.0
    warmup_time = warmup_compile = 0.0
    if kernel.warmup is not None:
        if progress:
            log.info("[%s] warm-up/adaptation of %d chains ...", label, num_chains)
        start = time.perf_counter()
        warm_fn = jax.jit(
            _over_chains(jax.vmap(kernel.warmup, in_axes=(0, 0, None)), mesh, (chains, chains, replicated), chains)
        )
        warm_keys = _place(mesh, jax.random.split(warm_key, num_chains), chains)
        compiled, warmup_compile = _timed_compile(warm_fn, warm_keys, states, posterior)
        with _heartbeat(f"[{label}] warm-up still running", heartbeat_s, progress):
            warm = compiled(warm_keys, states, posterior)
            fge_warmup = float(jnp.sum(warm.fge))  # blocks until the warm-up is done
        states, params = warm.state, warm.params
        warm_extras = {k: np.asarray(v) for k, v in warm.extras.items()}
        warmup_time = time.perf_counter() - start
        if progress:
            summary = ", ".join(f"{k}={np.median(v):.4g}" for k, v in warm_extras.items())
            log.info("[%s] warm-up done in %.1fs (median over chains: %s)", label, warmup_time, summary)

    step_all = jax.vmap(kernel.step, in_axes=(0, 0, 0, None, None))

    def run_chunk(states, t, posterior, params, chain_keys):
        local_chains = chain_keys.shape[0]  # this device's share under shard_map
        zeros = jnp.zeros(local_chains, posterior.dtype)

        def one_step(carry, _):
            states, t, fge, extras_sum = carry
            keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(chain_keys, t)
            states, info = step_all(keys, states, params, posterior, t)
            fge = fge + info.fge
            # NaN-aware running sums: a diagnostic may be evaluated only on some steps (NaN otherwise)
            extras_sum = jax.tree.map(
                lambda acc, x: (acc[0] + jnp.nan_to_num(x.astype(acc[0].dtype)), acc[1] + ~jnp.isnan(x)),
                extras_sum, info.extras, is_leaf=lambda a: isinstance(a, tuple),
            )
            return (states, t + 1, fge, extras_sum), info.loss

        def one_draw(carry, _):
            states, t = carry
            extras0 = jax.tree.map(lambda _: (zeros, jnp.zeros(local_chains, jnp.int32)), extras_shape)
            # Work is summed per draw here and over draws on the host in float64 (a float32 running
            # total of 1e6 minibatch fractions would drift).
            (states, t, fge, extras_sum), losses = jax.lax.scan(
                one_step, (states, t, zeros, extras0), None, length=thinning
            )
            extras_mean = jax.tree.map(
                lambda acc: jnp.where(acc[1] > 0, acc[0] / jnp.maximum(acc[1], 1), jnp.nan),
                extras_sum, is_leaf=lambda a: isinstance(a, tuple),
            )
            return (states, t), (losses[-1], fge, extras_mean)

        (states, t), (losses, fge, extras) = jax.lax.scan(one_draw, (states, t), None, length=draws_per_chunk)
        return states, t, losses, fge, extras

    # The diagnostics a step reports, to size the accumulators.
    extras_shape = jax.eval_shape(
        lambda s, p: step_all(chain_keys, s, p, posterior, jnp.zeros((), jnp.int32))[1].extras, states, params
    )
    t = jnp.zeros((), jnp.int32)
    per_draw = P(None, CHAIN_AXIS)  # (draws, chains) outputs
    chunk_fn = _over_chains(
        run_chunk, mesh, (chains, replicated, replicated, chains, chains), (chains, replicated, per_draw, per_draw, per_draw)
    )
    t = _place(mesh, t, replicated)
    compiled, compile_time = _timed_compile(
        jax.jit(chunk_fn, donate_argnums=(0,)), states, t, posterior, params, chain_keys
    )

    loss_chunks: list[np.ndarray] = []
    fge_chunks: list[np.ndarray] = []
    extra_chunks: list[dict[str, np.ndarray]] = []
    start = time.perf_counter()
    for i in range(num_draws // draws_per_chunk):
        states, t, losses, fge, extras = compiled(states, t, posterior, params, chain_keys)
        loss_chunks.append(np.asarray(losses))  # blocks: the chunk is done
        fge_chunks.append(np.asarray(fge, dtype=np.float64))
        extra_chunks.append({k: np.asarray(v) for k, v in extras.items()})
        if progress and num_draws > draws_per_chunk:
            done = (i + 1) * draws_per_chunk * thinning
            elapsed = time.perf_counter() - start
            log.info(
                "[%s] step %d/%d (%d%%), %.1fs elapsed, ~%.1fs left",
                label, done, num_steps, 100 * done // num_steps, elapsed, elapsed * (num_steps / done - 1),
            )
    sampling_time = time.perf_counter() - start

    step = thinning * np.arange(1, num_draws + 1)
    burnin_draws = int(np.sum(step <= num_burnin))
    fge_per_draw = np.concatenate(fge_chunks, axis=0)  # (draws, chains)
    fge_burn, fge_sample = float(fge_per_draw[:burnin_draws].sum()), float(fge_per_draw[burnin_draws:].sum())
    loss = np.concatenate(loss_chunks, axis=0).T
    # A chain whose adaptation produced a non-finite parameter (blackjax's MCLMC tuning can) may
    # still yield finite but meaningless draws (e.g. stuck at w*): flag it like a diverged chain.
    failed = np.zeros(num_chains, bool)
    for values in warm_extras.values():
        failed |= ~np.isfinite(np.asarray(values, dtype=np.float64)).reshape(num_chains, -1).all(axis=1)
    if failed.any():
        log.warning("[%s] adaptation failed (non-finite parameters) on chains %s", label, np.flatnonzero(failed).tolist())
        loss[failed] = np.nan
    return Trace(
        loss=loss,
        step=step,
        num_burnin_draws=burnin_draws,
        compile_time_s=compile_time,
        sampling_time_s=sampling_time,
        n_fge=fge_sample,
        n_fge_warmup=fge_warmup + fge_burn,
        extras={k: np.concatenate([c[k] for c in extra_chunks], axis=0).T for k in extras_shape},
        warmup=warm_extras,
        warmup_time_s=warmup_time,
        warmup_compile_time_s=warmup_compile,
        devices=1 if mesh is None else int(mesh.devices.size),
    )
