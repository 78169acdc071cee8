"""Batched grids: the jobs of a sweep that share a target and a program's shape, run as one.

A grid over sampler settings (step size, friction, RMSprop/Adam constants, the tuning target),
``posterior.beta0``, ``posterior.gamma`` and seeds runs the same program at every point: only
numbers differ. Here those numbers are arguments of one compiled program: the chains of all
points sit side by side on the chain axis (split over devices as chains always are), each chain
builds its kernel from its own settings (``EstimatorSpec.grid_keys``, traced) and reads its own
nβ and γ. A grid of G points × C chains is one batch of G·C chains, compiled once, and every
point's chains get the random draws they would get alone (from its own seed), so each point's
λ̂ equals its job run alone up to floating-point rounding (tests/unit/test_grid.py measures it).

:func:`structure` says which jobs can share a program; :func:`estimate_grid` runs them, in
sub-batches that fit ``max_batch_mb``, and returns each point's estimate as
``lambda_hat.runner.estimate_target`` would. The launcher (``hydra/launcher=batched``,
lambda_hat.sweeps.batched) groups a sweep's jobs by structure and runs the rest as ordinary jobs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lambda_hat import registry
from lambda_hat.config import burnin_steps

log = logging.getLogger(__name__)

GRID_VALUE = "<grid>"  # what a varied setting reads as in a structure key


class TracedSettings(dict):
    """A sampler config as a plain mapping with attribute access (as builders read an OmegaConf
    config), whose grid keys may hold traced scalars (OmegaConf cannot hold them)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def varied_keys(cfg: DictConfig) -> list[str]:
    """The sampler keys of cfg a grid may vary: the estimator's grid keys whose value is not null
    (null switches a feature off, e.g. the step tuning: that is the program's shape)."""
    spec = registry.get(cfg.sampler.name)
    return [k for k in spec.grid_keys if cfg.sampler.get(k) is not None]


def structure(cfg: DictConfig) -> str | None:
    """A key equal for two validated job configs exactly when one program runs both, on one
    target: the whole config but the sampler's seed (a built-in target's own seed stays: it is
    the seed unless target_seed is set), posterior.beta0/gamma and the varied sampler keys. None: cannot be
    batched (variational estimators). Runs until converged batch too: each point stops at its own check."""
    spec = registry.get(cfg.sampler.name)
    if spec.family not in ("full_batch", "minibatch"):
        return None
    plain: Any = OmegaConf.to_container(cfg, resolve=True)
    if cfg.model.name != "user":  # a built-in target's teacher and data come from seed unless target_seed is set
        from lambda_hat.targets import target_spec

        plain["target_seed"] = target_spec(cfg)["seed"]
    for key in ("seed", "resume", "plots"):
        plain.pop(key, None)
    for key in ("beta0", "gamma"):
        plain["posterior"].pop(key, None)
    for key in varied_keys(cfg):
        plain["sampler"][key] = GRID_VALUE
    return json.dumps(plain, sort_keys=True, default=str)


def point_bytes(cfg: DictConfig, d: int, itemsize: int) -> int:
    """Rough device memory one grid point adds: per chain ~16 parameter vectors (state, moments,
    gradients, proposals and the compiler's temporaries) and one chunk's draw buffers."""
    s = cfg.sampler
    draws_per_chunk = math.ceil(int(s.num_steps) // int(s.thinning) / 10)
    return int(s.num_chains) * (16 * d * itemsize + draws_per_chunk * 8 * 8)


# Default size of one batch (lambda_hat.grid.point_bytes estimates): on a GPU, memory is the
# limit; on CPU cores a batch pays only while its chains' working set stays in the caches.
# Measured on 2 cores (user MLP d = 24,760, 4 chains x 1,000 steps per point): 4.0 s per point
# alone, 4.15 s in batches of 2 points, 4.65 s in batches of 8, and 25 points in one batch ran
# the grid 1.5x slower than one job at a time; the default DLN (d = 800) keeps its speed with all
# 25 points in one batch (2.9 s per point, as alone). So: ~8 MB per CPU device.
CPU_BATCH_MB_PER_DEVICE = 8.0
ACCELERATOR_BATCH_MB = 2048.0


def default_batch_mb() -> float:
    """The max_batch_mb used when none is given: per CPU device ~8 MB, else 2 GiB."""
    import jax

    devices = jax.devices()
    return CPU_BATCH_MB_PER_DEVICE * len(devices) if devices[0].platform == "cpu" else ACCELERATOR_BATCH_MB


def sub_batches(points: int, per_point: int, max_batch_mb: float, max_points: int) -> list[range]:
    """The points split into near-equal consecutive parts, each within max_points and (by the
    per_point estimate) max_batch_mb; at most two part sizes, so at most two programs compile."""
    fits = max(1, min(max_points, int(max_batch_mb * 2**20 // max(1, per_point))))
    parts = math.ceil(points / fits)
    size, extra = divmod(points, parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + size + (1 if i < extra else 0)
        out.append(range(start, stop))
        start = stop
    return out


def estimate_grid(
    cfgs: Sequence[DictConfig], target: Any = None, *, max_batch_mb: float | None = None, max_points: int = 64
) -> list[tuple[dict[str, Any], Any, Any, Any]]:
    """(metrics, Trace, trace frame, target) of every config, as estimate_target gives them one by
    one, from batched runs; the configs are validated and share one structure(). target: the
    target they share (None: built from the first config)."""
    import jax
    import jax.numpy as jnp

    from lambda_hat.posterior import scalars
    from lambda_hat.runner import (
        build_target,
        cache_dir_of,
        configure_compilation_cache,
        convergence,
        estimate_from_trace,
        nbeta_sample_size,
        precision,
        prepare,
    )
    from lambda_hat.samplers import build_kernel
    from lambda_hat.samplers.driver import Grid, run_grid

    first = cfgs[0]
    key = structure(first)
    if key is None or any(structure(c) != key for c in cfgs):
        raise ValueError("these configs do not share one program (lambda_hat.grid.structure)")
    configure_compilation_cache(first)
    built = target if target is not None else build_target(first, cache_dir_of(first))
    s = first.sampler
    varied = varied_keys(first)
    spec = registry.get(s.name)
    plain = OmegaConf.to_container(s, resolve=True)
    chains = int(s.num_chains)
    results: list[tuple[dict[str, Any], Any, Any, Any]] = []
    with precision(first):
        sampled, posterior = prepare(first, built)
        nbeta_n = nbeta_sample_size(first, sampled)
        point_scalars = [scalars(nbeta_n, float(c.posterior.beta0), float(c.posterior.gamma), posterior.dtype) for c in cfgs]
        kernel = build_kernel(s, posterior.n)  # any point's: the warm-up's kind and length
        n = posterior.n
        budget = default_batch_mb() if max_batch_mb is None else max_batch_mb
        parts = sub_batches(len(cfgs), point_bytes(first, posterior.d, posterior.dtype.itemsize), budget, max_points)
        if len(parts) > 1:
            log.info("[%s] grid of %d points in %d batches of up to %d", s.name, len(cfgs), len(parts), len(parts[0]))
        traces = []
        for part in parts:
            chosen = [cfgs[i] for i in part]
            nbeta = jnp.repeat(jnp.stack([point_scalars[i][0] for i in part]), chains)
            gamma = jnp.repeat(jnp.stack([point_scalars[i][1] for i in part]), chains)
            settings = {k: jnp.repeat(jnp.asarray([c.sampler[k] for c in chosen], posterior.dtype), chains) for k in varied}
            grid = Grid(
                build=lambda values: spec.build(TracedSettings({**plain, **values}), n),
                settings=settings,
                points=len(part),
                program=("grid", key, n),
            )
            traces += run_grid(
                kernel,
                dataclasses.replace(posterior, nbeta=nbeta, gamma=gamma),
                [jax.random.key(int(c.seed), impl=c.prng_impl) for c in chosen],
                grid,
                num_chains=chains,
                num_steps=int(s.num_steps),
                num_burnin=burnin_steps(s),
                thinning=int(s.thinning),
                progress=bool(first.progress),
                label=f"{s.name}, {len(part)} grid points",
                converge=convergence(s),
            )
    for c, (nbeta_g, gamma_g), trace in zip(cfgs, point_scalars, traces):
        metrics, trace, frame = estimate_from_trace(c, sampled, dataclasses.replace(posterior, nbeta=nbeta_g, gamma=gamma_g), trace, {})
        results.append((metrics, trace, frame, built))
    return results
