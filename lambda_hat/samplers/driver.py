"""Runs a kernel on many chains: chains vmapped, steps in a jit-compiled ``lax.scan``.

Warm-up (adaptation), when the kernel has one, runs first per chain (vmapped). Warm-up and
sampling run in chunks sized by time (about ``CHUNK_SECONDS`` each, never more than a tenth of
the run): between two chunks the host reports progress, checks convergence and lets a signal
handler act, so none of them waits on a long compiled call; within a chunk there is no host
round-trip. The number of steps a chunk runs is a traced argument of one compiled program, so
resizing chunks never recompiles, and every step's random key comes from its global step index,
so how a run is cut into chunks does not change a single draw. With several devices (one per CPU core, see
``lambda_hat.devices``) the chain axis is split across them with ``shard_map``.

Compiled programs are kept for the life of the process and reused by later runs with the same
kernel and argument shapes (lambda_hat.samplers.programs): the jobs of a sweep run by Hydra's basic launcher
share one process and mostly differ in seeds, so only the first of them traces and compiles.

One module, over the 400-line guide, because its parts are one loop seen from several sides:
the chunked warm-up and sampling scans, the program cache they share, the convergence check and
the progress/heartbeat/signal turns that happen between two chunks; split apart, each piece would
have to know the others' chunk boundaries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lambda_hat.devices import CHAIN_AXIS, chain_mesh
from lambda_hat.llc import split_rhat, stationary_start
from lambda_hat.posterior import Posterior
from lambda_hat.samplers.base import Kernel, StepwiseWarmup
from lambda_hat.samplers.programs import PROGRAMS, compiled_program, signature
from lambda_hat.trace import Trace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Converge:
    """Sample past num_steps until converged (config: sampler.max_steps; see SamplerConfig)."""

    max_steps: int  # the work cap, steps per chain after warm-up
    rhat: float  # split R-hat of the kept per-draw losses at most this
    ess: float  # and their bulk ESS at least this
    burnin: Callable[[int], int]  # the most burn-in steps for a run of that many steps
    # True: burn-in is chosen from the chains (lambda_hat.llc.stationary_start), at most burnin();
    # False: exactly burnin() (a configured num_burnin)
    from_chains: bool = True

    def burnin_draws(self, loss: np.ndarray, draws: int, thinning: int) -> int:
        """Burn-in draws of one run's chains (loss: chains × draws) after its first ``draws`` draws."""
        most = int(np.sum(thinning * np.arange(1, draws + 1) <= self.burnin(draws * thinning)))
        return stationary_start(loss[:, :draws], most) if self.from_chains else most


@dataclass(frozen=True)
class Grid:
    """Several runs of one program shape side by side (lambda_hat.grid): the chains of every run
    are chains of one batch, point g's being [g·C, (g+1)·C) for C chains per point.

    ``build(settings) -> Kernel`` builds one chain's kernel from its sampler settings (traced
    scalars: EstimatorSpec.grid_keys); ``settings`` holds them per chain, and ``per_chain`` names
    the Posterior leaves given per chain (nbeta, gamma: shape (points·C,)). ``program`` identifies
    the program's shape for the compiled-program cache.
    """

    build: Callable[[dict[str, jax.Array]], Kernel]
    settings: dict[str, jax.Array]
    points: int
    program: Hashable
    per_chain: tuple[str, ...] = ("nbeta", "gamma")


def _chainwise(kernel: Kernel, grid: Grid | None, pick: Callable[[Kernel], Callable], in_axes: tuple, posterior: Posterior) -> Callable:
    """``f(settings, *args)``: pick(kernel) vmapped over chains (in_axes; the string "post" marks
    the posterior). In a grid each chain builds its kernel from its own settings and reads its own
    per-chain posterior leaves; otherwise settings is {} and the kernel is the one given."""
    if grid is None:
        vmapped = jax.vmap(pick(kernel), in_axes=tuple(None if a == "post" else a for a in in_axes))
        return lambda settings, *args: vmapped(*args)
    post_axes = dataclasses.replace(jax.tree.map(lambda _: None, posterior), **dict.fromkeys(grid.per_chain, 0))
    axes = tuple(post_axes if a == "post" else a for a in in_axes)
    return jax.vmap(lambda settings, *args: pick(grid.build(settings))(*args), in_axes=(0, *axes))


def _posterior_spec(posterior: Posterior, grid: Grid | None):
    """How the posterior is laid out over the chain mesh: replicated, but for a grid's per-chain leaves."""
    if grid is None:
        return P()
    return dataclasses.replace(jax.tree.map(lambda _: P(), posterior), **dict.fromkeys(grid.per_chain, P(CHAIN_AXIS)))


def converged(loss: np.ndarray, burnin_draws: int, rhat_max: float, ess_min: float) -> tuple[bool, float, float]:
    """(converged?, split R-hat, bulk ESS) of the kept draws of the finite chains. arviz-stats on
    numpy: a check per chunk must not compile a program per trace length (blackjax's would)."""
    from arviz_stats.base import array_stats

    kept = np.asarray(loss[:, burnin_draws:], dtype=np.float64)
    kept = kept[np.all(np.isfinite(kept), axis=1)]
    if kept.shape[0] == 0 or kept.shape[1] < 8:
        return False, math.nan, 0.0
    ess = float(array_stats.ess(kept, chain_axis=0, draw_axis=1, method="bulk"))
    if kept.shape[0] > 1:
        rhat = float(array_stats.rhat(kept, chain_axis=0, draw_axis=1))
    else:  # a lone chain: its stretches must agree (a chain still drifting fails)
        rhat = split_rhat(kept[0])
        rhat = math.nan if rhat is None else rhat
    return bool(rhat <= rhat_max and ess >= ess_min), rhat, ess


CHUNK_SECONDS = 3.0  # target wall time of one compiled chunk (progress, convergence, signals)
FIRST_CHUNK_FRACTION = 16  # the first chunk, before any timing: 1/16 of the longest allowed


class ChunkSizer:
    """Steps per chunk so that a chunk takes about ``seconds``: from the time per step of the
    chunks run so far, never more than ``longest`` (the buffers' size) nor fewer than 1."""

    def __init__(self, longest: int, seconds: float | None = None) -> None:
        self.longest, self.seconds = max(1, longest), CHUNK_SECONDS if seconds is None else seconds
        self.steps = self.elapsed = 0.0

    def next(self, remaining: int) -> int:
        if self.steps == 0:
            size = max(1, self.longest // FIRST_CHUNK_FRACTION)
        else:
            per_step = self.elapsed / self.steps
            size = self.longest if per_step <= 0 else int(self.seconds / per_step)
        return max(1, min(size, self.longest, remaining))

    def ran(self, steps: int, seconds: float) -> None:
        self.steps += steps
        self.elapsed += seconds


def chunk_length(num_draws: int, max_chunks: int) -> int:
    """Smallest divisor of num_draws that is >= num_draws / max_chunks (equal chunks, one compile)."""
    target = math.ceil(num_draws / max_chunks)
    return next(c for c in range(target, num_draws + 1) if num_draws % c == 0)


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


def _place(mesh: Mesh | None, tree, spec):
    """Commit tree's arrays to the mesh (chain-split or replicated, or a tree of specs) so compiled
    calls see one layout."""
    if mesh is None:
        return tree
    if isinstance(spec, P):
        return jax.device_put(tree, NamedSharding(mesh, spec))
    return jax.device_put(tree, jax.tree.map(lambda s: NamedSharding(mesh, s), spec))


def _log_progress(label: str, what: str, done: int, total: int, elapsed: float, at_most: bool = False) -> None:
    """One progress line; ``at_most``: ``total`` is the work cap of a run until converged, which
    may stop sooner, so the time left is an upper bound."""
    log.info(
        "[%s] %s %d/%s%d (%d%%), %.1fs elapsed, %s%.1fs left",
        label,
        what,
        done,
        "at most " if at_most else "",
        total,
        100 * done // total,
        elapsed,
        "at most " if at_most else "~",
        elapsed * (total / done - 1),
    )


class _Reporter:
    """Progress lines as chunks end: one per tenth of the run, and at least one a minute."""

    def __init__(self, label: str, what: str, total: int, enabled: bool, every_s: float = 60.0) -> None:
        self.label, self.what, self.total, self.enabled, self.every_s = label, what, total, enabled, every_s
        self.last_done, self.last_time = 0, 0.0

    def __call__(self, done: int, elapsed: float, cap: int | None = None) -> None:
        """``cap``: past the first stretch of a run until converged, the work cap (the total at most)."""
        total = self.total if cap is None else cap
        if not self.enabled or (done - self.last_done < total / 10 and elapsed - self.last_time < self.every_s):
            return
        self.last_done, self.last_time = done, elapsed
        _log_progress(self.label, self.what, done, total, elapsed, at_most=cap is not None)


def _run_stepwise_warmup(
    warmup: StepwiseWarmup,
    kernel: Kernel,
    grid: Grid | None,
    mesh: Mesh | None,
    settings,
    keys,
    states,
    posterior,
    *,
    program: Hashable,
    label: str,
    progress: bool,
    max_chunks: int,
    before_timed: Callable[[], None],
):
    """Adaptation in a few chunks of one compiled loop: progress in steps, nothing kept per step.
    Returns (Warmup, work per chain, seconds, compile seconds)."""
    chains, replicated, post_spec = P(CHAIN_AXIS), P(), _posterior_spec(posterior, grid)
    init_all = _chainwise(kernel, grid, lambda k: k.warmup.init, (0, 0, "post"), posterior)
    step_all = _chainwise(kernel, grid, lambda k: k.warmup.step, (0, "post", None), posterior)
    final_all = _chainwise(kernel, grid, lambda k: k.warmup.final, (0, "post"), posterior)

    def chunk(carry, t, num, posterior, settings):
        zeros = jnp.zeros(jax.tree.leaves(carry)[0].shape[0], posterior.dtype)

        def body(_, c):
            carry, t, fge, comp = c
            carry, f = step_all(settings, carry, posterior, t)
            # Kahan summation: a float32 running total of thousands of minibatch fractions drifts.
            y = f - comp
            total = fge + y
            return carry, t + 1, total, (total - fge) - y

        # num is traced, so every chunk (the last one may be shorter) runs the same program.
        carry, t, fge, _ = jax.lax.fori_loop(0, num, body, (carry, t, zeros, zeros))
        return carry, t, fge

    init_fn, _ = compiled_program(
        ("warmup_init", program),
        lambda: jax.jit(_over_chains(init_all, mesh, (chains, chains, chains, post_spec), chains)),
        settings,
        keys,
        states,
        posterior,
        mesh=mesh,
    )
    carry = init_fn(settings, keys, states, posterior)
    t = _place(mesh, jnp.zeros((), jnp.int32), replicated)
    num = _place(mesh, jnp.zeros((), jnp.int32), replicated)
    chunk_fn = lambda: jax.jit(  # noqa: E731
        _over_chains(chunk, mesh, (chains, replicated, replicated, post_spec, chains), (chains, replicated, chains)),
        donate_argnums=(0,),
    )
    compiled, compile_time = compiled_program(("warmup_chunk", program), chunk_fn, carry, t, num, posterior, settings, mesh=mesh)
    before_timed()
    sizer = ChunkSizer(math.ceil(warmup.num_steps / max(1, max_chunks)))
    report = _Reporter(label, "warm-up step", warmup.num_steps, progress)
    fge_total = 0.0
    start = time.perf_counter()
    done = 0
    while done < warmup.num_steps:
        k = sizer.next(warmup.num_steps - done)
        begun = time.perf_counter()
        carry, t, fge = compiled(carry, t, _place(mesh, jnp.asarray(k, jnp.int32), replicated), posterior, settings)
        fge_total = fge_total + np.asarray(fge, np.float64)  # blocks: the chunk is done
        sizer.ran(k, time.perf_counter() - begun)
        done += k
        if done < warmup.num_steps:
            report(done, time.perf_counter() - start)
    final_fn, _ = compiled_program(
        ("warmup_final", program),
        lambda: jax.jit(_over_chains(final_all, mesh, (chains, chains, post_spec), chains)),
        settings,
        carry,
        posterior,
        mesh=mesh,
    )
    result = final_fn(settings, carry, posterior)
    fge_total = fge_total + np.asarray(result.fge, np.float64)
    return result, fge_total, time.perf_counter() - start, compile_time


def run_chains(kernel: Kernel, posterior: Posterior, key: jax.Array, **kw: Any) -> Trace:
    """Run num_chains chains from w*: warm-up if any, then num_steps steps keeping every thinning-th.

    Keywords (see _run): num_chains, num_steps, num_burnin (required); thinning (1), progress
    (True), label, max_chunks (10), split_chains (True), heartbeat_s (30), before_timed, converge.
    split_chains spreads the chains over the available devices (see lambda_hat.devices).
    With progress on, warm-up and sampling log their step counts ~max_chunks times (a warm-up
    that runs as one call logs every heartbeat_s instead). ``before_timed`` is called once,
    after compiling and before the first timed phase: the caller finishes any background work
    there, so that the reported times are the estimator's alone. ``converge``: sample past
    num_steps until converged (Converge).
    """
    return _run(kernel, posterior, key, None, **kw)[0]


def run_grid(
    kernel: Kernel, posterior: Posterior, keys: list[jax.Array], grid: Grid, *, num_chains: int, num_steps: int, num_burnin: int, **kw: Any
) -> list[Trace]:
    """run_chains for every point of a grid at once (one compiled program): point g runs from
    keys[g] with grid.settings' chains [g·C, (g+1)·C) and the posterior's per-chain leaves; each
    point's chains get the same random draws as run_chains(key=keys[g]) would give them. kernel
    is any point's (its structure: warm-up kind and length). With ``converge`` each point stops at its
    own check, where it would have stopped alone (the others run on)."""
    return _run(kernel, posterior, keys, grid, num_chains=num_chains, num_steps=num_steps, num_burnin=num_burnin, **kw)


def _point_keys(key: jax.Array, num_chains: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A run's (init, warm-up, sampling) keys, one per chain."""
    init_key, warm_key, run_key = jax.random.split(key, 3)
    return tuple(jax.random.split(k, num_chains) for k in (init_key, warm_key, run_key))  # type: ignore[return-value]


def _run(
    kernel: Kernel,
    posterior: Posterior,
    key: jax.Array | list[jax.Array],
    grid: Grid | None,
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
    before_timed: Callable[[], None] = lambda: None,
    converge: Converge | None = None,
) -> list[Trace]:
    if num_steps % thinning:
        raise ValueError(f"num_steps={num_steps} is not a multiple of thinning={thinning}")
    points = 1 if grid is None else grid.points
    total_chains = points * num_chains
    program: Hashable = kernel if grid is None else grid.program
    settings = {} if grid is None else grid.settings
    num_draws = num_steps // thinning
    # The buffers of one call hold at most a tenth of the run (until converged: a tenth of its first
    # stretch); the calls themselves are sized by time (ChunkSizer).
    draws_per_chunk = math.ceil(num_draws / max(1, max_chunks))
    mesh = chain_mesh(total_chains) if split_chains else None
    chains, replicated = P(CHAIN_AXIS), P()
    post_spec = _posterior_spec(posterior, grid)
    per_point = [_point_keys(k, num_chains) for k in ([key] if grid is None else key)]
    init_keys, warm_keys, run_keys = (jnp.concatenate([p[i] for p in per_point]) if points > 1 else per_point[0][i] for i in range(3))
    chain_keys = _place(mesh, run_keys, chains)
    init_all = _chainwise(kernel, grid, lambda k: k.init, (0, None, "post"), posterior)
    states = init_all(settings, init_keys, posterior.w_star, posterior)
    states = _place(mesh, states, chains)
    settings = _place(mesh, settings, chains)
    posterior = _place(mesh, posterior, post_spec)

    params, warm_extras = (), {}
    fge_warmup: np.ndarray | float = 0.0  # per chain
    warmup_time = warmup_compile = 0.0
    num_warmup_steps = 0
    timed_started = False
    if kernel.warmup is not None:
        warm_keys = _place(mesh, warm_keys, chains)
        if isinstance(kernel.warmup, StepwiseWarmup):
            num_warmup_steps = kernel.warmup.num_steps
            if progress:
                log.info("[%s] warm-up/adaptation of %d chains, %d steps each ...", label, total_chains, num_warmup_steps)
            warm, fge_warmup, warmup_time, warmup_compile = _run_stepwise_warmup(
                kernel.warmup,
                kernel,
                grid,
                mesh,
                settings,
                warm_keys,
                states,
                posterior,
                program=program,
                label=label,
                progress=progress,
                max_chunks=max_chunks,
                before_timed=before_timed,
            )
        else:
            if progress:
                log.info("[%s] warm-up/adaptation of %d chains (one compiled call) ...", label, total_chains)
            warm_all = _chainwise(kernel, grid, lambda k: k.warmup, (0, 0, "post"), posterior)
            warm_fn = lambda: jax.jit(_over_chains(warm_all, mesh, (chains, chains, chains, post_spec), chains))  # noqa: E731
            compiled, warmup_compile = compiled_program(("warmup", program), warm_fn, settings, warm_keys, states, posterior, mesh=mesh)
            before_timed()
            start = time.perf_counter()
            with _heartbeat(f"[{label}] warm-up still running", heartbeat_s, progress):
                warm = compiled(settings, warm_keys, states, posterior)
                fge_warmup = np.asarray(warm.fge, np.float64)  # blocks until the warm-up is done
            warmup_time = time.perf_counter() - start
        timed_started = True
        states, params = warm.state, warm.params
        warm_extras = {k: np.asarray(v) for k, v in warm.extras.items()}
        if progress:
            summary = ", ".join(f"{k}={np.median(v):.4g}" for k, v in warm_extras.items())
            log.info("[%s] warm-up done in %.1fs (median over chains: %s)", label, warmup_time, summary)

    step_all = _chainwise(kernel, grid, lambda k: k.step, (0, 0, 0, "post", None), posterior)

    def run_chunk(states, t, posterior, params, chain_keys, num, settings):
        local_chains = chain_keys.shape[0]  # this device's share under shard_map
        zeros = jnp.zeros(local_chains, posterior.dtype)

        def one_step(carry, _):
            states, t, fge, extras_sum = carry
            keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(chain_keys, t)
            states, info = step_all(settings, keys, states, params, posterior, t)
            fge = fge + info.fge
            # NaN-aware running sums: a diagnostic may be evaluated only on some steps (NaN otherwise)
            extras_sum = jax.tree.map(
                lambda acc, x: (acc[0] + jnp.nan_to_num(x.astype(acc[0].dtype)), acc[1] + ~jnp.isnan(x)),
                extras_sum,
                info.extras,
                is_leaf=lambda a: isinstance(a, tuple),
            )
            return (states, t + 1, fge, extras_sum), info.loss

        def one_draw(carry, _):
            states, t = carry
            extras0 = jax.tree.map(lambda _: (zeros, jnp.zeros(local_chains, jnp.int32)), extras_shape)
            # Work is summed per draw here and over draws on the host in float64 (a float32 running
            # total of 1e6 minibatch fractions would drift).
            (states, t, fge, extras_sum), losses = jax.lax.scan(one_step, (states, t, zeros, extras0), None, length=thinning)
            extras_mean = jax.tree.map(
                lambda acc: jnp.where(acc[1] > 0, acc[0] / jnp.maximum(acc[1], 1), jnp.nan),
                extras_sum,
                is_leaf=lambda a: isinstance(a, tuple),
            )
            # |w - w*| at the draw, for the drift check (lambda_hat.health): O(d) per draw
            extras_mean["distance"] = jnp.sqrt(jnp.sum((states.position - posterior.w_star) ** 2, axis=-1)).astype(posterior.dtype)
            loss = losses[-1]
            if posterior.measuring:  # a data-refined λ̂: the draw's loss on the second dataset, all rows
                loss = jax.vmap(posterior.measured_loss)(states.position).astype(loss.dtype)
                fge = fge + posterior.measure_n / posterior.n  # its forward pass, counted as a gradient's work
            return (states, t), (loss, fge, extras_mean)

        # num draws (traced: one program for every chunk size) into buffers of draws_per_chunk rows;
        # the rows past num are left as they are and dropped on the host.
        out_shape = jax.eval_shape(lambda c: one_draw(c, None)[1], (states, t))
        buffers = jax.tree.map(lambda a: jnp.zeros((draws_per_chunk, *a.shape), a.dtype), out_shape)

        def body(i, carry):
            (states, t), buffers = carry
            (states, t), out = one_draw((states, t), None)
            return (states, t), jax.tree.map(lambda b, x: b.at[i].set(x), buffers, out)

        (states, t), (losses, fge, extras) = jax.lax.fori_loop(0, num, body, ((states, t), buffers))
        return states, t, losses, fge, extras

    # The diagnostics a step reports, to size the accumulators (and to name them below).
    extras_key = ("extras", program, signature((chain_keys, states, params, posterior, settings)))
    extras_shape = PROGRAMS.get(extras_key)
    if extras_shape is None:
        extras_shape = PROGRAMS[extras_key] = jax.eval_shape(
            lambda s, p, c: step_all(c, chain_keys, s, p, posterior, jnp.zeros((), jnp.int32))[1].extras, states, params, settings
        )
    t = jnp.zeros((), jnp.int32)
    per_draw = P(None, CHAIN_AXIS)  # (draws, chains) outputs
    chunk_fn = lambda: jax.jit(  # noqa: E731
        _over_chains(
            run_chunk,
            mesh,
            (chains, replicated, post_spec, chains, chains, replicated, chains),
            (chains, replicated, per_draw, per_draw, per_draw),
        ),
        donate_argnums=(0,),
    )
    t = _place(mesh, t, replicated)
    num = _place(mesh, jnp.zeros((), jnp.int32), replicated)
    compiled, compile_time = compiled_program(
        ("sample", program, thinning, draws_per_chunk), chunk_fn, states, t, posterior, params, chain_keys, num, settings, mesh=mesh
    )

    if not timed_started:
        before_timed()
    loss_chunks: list[np.ndarray] = []
    fge_chunks: list[np.ndarray] = []
    extra_chunks: list[dict[str, np.ndarray]] = []
    start = time.perf_counter()
    # Until converged, each point stops at its own check (a grid runs until the last one has): a
    # point's draws do not depend on the chunking, so it stops where it would have alone.
    stops: list[tuple[int, str]] = [(num_draws, "fixed length")] * points  # (draws kept, why)
    running = set(range(points)) if converge is not None else set()
    done, checked = 0, 0
    max_draws = num_draws if converge is None else max(num_draws, converge.max_steps // thinning)
    sizer = ChunkSizer(draws_per_chunk)
    report = _Reporter(label, "step", num_steps, progress and max_draws > draws_per_chunk)
    while done < max_draws:
        # until converged: the chunks end where a check is due (num_draws, then every tenth of it)
        due = num_draws if done < num_draws else checked + draws_per_chunk
        size = sizer.next((min(due, max_draws) if converge is not None else max_draws) - done)
        begun = time.perf_counter()
        states, t, losses, fge, extras = compiled(states, t, posterior, params, chain_keys, _place(mesh, jnp.asarray(size, jnp.int32), replicated), settings)
        loss_chunks.append(np.asarray(losses)[:size])  # blocks: the chunk is done
        fge_chunks.append(np.asarray(fge, dtype=np.float64)[:size])
        extra_chunks.append({k: np.asarray(v)[:size] for k, v in extras.items()})
        sizer.ran(size, time.perf_counter() - begun)
        done += size
        report(done * thinning, time.perf_counter() - start, None if done <= num_draws else max_draws * thinning)
        if converge is None or done < due:
            continue
        checked = done
        so_far = np.concatenate(loss_chunks, axis=0).T
        for g in sorted(running):
            chains_g = so_far[g * num_chains : (g + 1) * num_chains]
            if converged(chains_g, converge.burnin_draws(chains_g, done, thinning), converge.rhat, converge.ess)[0]:
                stops[g] = (done, "converged")
            elif done + draws_per_chunk > max_draws:
                stops[g] = (done, "work cap")
            else:
                continue
            running.discard(g)
        if not running:
            break
    for g in running:  # not reached: the last check stops every point
        stops[g] = (done, "work cap")
    sampling_time = time.perf_counter() - start

    fge_per_draw = np.concatenate(fge_chunks, axis=0)  # (draws, chains)
    loss = np.concatenate(loss_chunks, axis=0).T
    extras_all = {k: np.concatenate([c[k] for c in extra_chunks], axis=0).T for k in (*extras_shape, "distance")}
    # A chain whose adaptation produced a non-finite parameter (blackjax's MCLMC tuning can) may
    # still yield finite but meaningless draws (e.g. stuck at w*): flag it like a diverged chain.
    failed = np.zeros(total_chains, bool)
    for values in warm_extras.values():
        failed |= ~np.isfinite(np.asarray(values, dtype=np.float64)).reshape(total_chains, -1).all(axis=1)
    if failed.any():
        log.warning("[%s] adaptation failed (non-finite parameters) on chains %s", label, np.flatnonzero(failed).tolist())
        loss[failed] = np.nan
    fge_warmup = np.broadcast_to(np.asarray(fge_warmup, np.float64), (total_chains,))
    traces = []
    for g, (kept, stop_reason) in enumerate(stops):  # a grid's points share its times: each is given its share
        rows = slice(g * num_chains, (g + 1) * num_chains)
        step = thinning * np.arange(1, kept + 1)
        burnin_draws = int(np.sum(step <= num_burnin)) if converge is None else converge.burnin_draws(loss[rows], kept, thinning)
        fge = fge_per_draw[:kept, rows]
        traces.append(
            Trace(
                loss=loss[rows, :kept],
                step=step,
                num_burnin_draws=burnin_draws,
                compile_time_s=compile_time / points,
                sampling_time_s=sampling_time / points,
                n_fge=float(fge[burnin_draws:].sum(axis=0).sum()),
                n_fge_warmup=float((fge_warmup[rows] + fge[:burnin_draws].sum(axis=0)).sum()),
                extras={k: v[rows, :kept] for k, v in extras_all.items()},
                warmup={k: v[rows] for k, v in warm_extras.items()},
                warmup_time_s=warmup_time / points,
                warmup_compile_time_s=warmup_compile / points,
                num_warmup_steps=num_warmup_steps,
                devices=1 if mesh is None else int(mesh.devices.size),
                stop_reason=stop_reason,
                batch_points=points,
            )
        )
    return traces
