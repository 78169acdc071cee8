"""Where the chains run: one XLA device per CPU core, chains split across devices.

XLA's CPU backend runs one program on one thread for the small matmuls of a typical LLC
problem (its intra-op thread pool only helps large ones), so a 2-core machine sits half idle.
Exposing one CPU device per usable core and splitting the chain axis across them with
``shard_map`` runs each device's chains on its own core: 2.1x the chain-steps/s of one device on
the 800-parameter DLN and 1.3x on the 80k one (scripts/bench_speed.py). Chains are independent,
so there is no communication; each device runs the same per-chain program as one device would.
With the threefry PRNG the draws do not depend on the split (tested); on a GPU there is one
device and nothing is split.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
from jax.sharding import Mesh

log = logging.getLogger(__name__)

CHAIN_AXIS = "chains"
_reported: set[int] = set()  # requests already reported as unmet (say it once per process)


CPU_SHARE_ENV = "LAMBDA_HAT_CPUS"  # a launcher's share of the machine for one job (local_parallel)
EXPECT_GPU_ENV = "LAMBDA_HAT_EXPECT_GPU"  # set by GPU launch presets: the job asked for a GPU


def _positive_int(text: str | None) -> int | None:
    try:
        value = int(str(text).split("(")[0])  # SLURM may write e.g. "4(x2)"
    except ValueError:
        return None
    return value if value > 0 else None


def usable_cores() -> int:
    """CPU cores this job may run on: the OS affinity (taskset, cgroups), capped by the job's share
    when a launcher gives one (SLURM_CPUS_PER_TASK, or LAMBDA_HAT_CPUS from local_parallel) — a
    scheduler without CPU binding (task/none) leaves every core in the affinity mask."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    for var in (CPU_SHARE_ENV, "SLURM_CPUS_PER_TASK"):
        share = _positive_int(os.environ.get(var))
        if share is not None:
            cores = min(cores, share)
    return cores


def gpu_requested() -> bool:
    """Whether this job was launched to use a GPU (a GPU preset, or a SLURM allocation with GPUs)."""
    if os.environ.get(EXPECT_GPU_ENV, "").strip().lower() in ("1", "true", "yes"):
        return True
    for var in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_TASK", "SLURM_GPUS"):
        if _positive_int(os.environ.get(var)):
            return True
    return bool(os.environ.get("SLURM_JOB_GPUS") or os.environ.get("SLURM_STEP_GPUS"))


def device_record() -> dict[str, object]:
    """The devices JAX actually runs on: platform (cpu, gpu, tpu), device kind and count."""
    devices = jax.devices()
    return {
        "device_platform": devices[0].platform,
        "device_kind": str(devices[0].device_kind),
        "device_count": len(devices),
    }


def device_warning(record: dict[str, object]) -> str | None:
    """A health warning when the job asked for a GPU but JAX runs on the CPU."""
    if gpu_requested() and record.get("device_platform") == "cpu":
        return (
            "a GPU was requested but JAX runs on the CPU (is a CUDA build of jaxlib installed, e.g. "
            '`pip install -U "jax[cuda12]"`, and is the GPU visible: CUDA_VISIBLE_DEVICES?)'
        )
    return None


def configure_cpu_devices(count: int | None) -> int:
    """Ask JAX for `count` CPU devices (None: one per usable core); returns the count in effect.

    JAX fixes the number when its backends start (the first JAX operation in the process; note
    that importing blackjax is one). Later calls leave it as it is and say so once when it differs
    from the request, e.g. the second job of an in-process multirun asking for another count.
    """
    want = usable_cores() if count is None else int(count)
    try:
        jax.config.update("jax_num_cpu_devices", want)
        return want
    except RuntimeError:  # JAX refuses once its backends are up
        pass
    have = len(jax.devices("cpu"))
    if have != want and want not in _reported:
        _reported.add(want)
        level = logging.INFO if count is None else logging.WARNING
        log.log(level, "JAX already runs with %d CPU device(s); cpu_devices=%d applies to a new process", have, want)
    return have


def cpu_compiler_options(mesh: Mesh | None) -> dict[str, str]:
    """XLA options for a program split over the mesh's devices.

    jaxlib 0.10.2's CPU backend turns large dot products into "YNN fusions"; while two CPU devices
    run such a program at the same time, each parallel task leaves ~2.4 KB alive until the call
    returns (SlinkyThreadPool keeps finished tasks queued), so a long call grows RSS linearly in
    time: NUTS warm-up on rows (d = 152, n = 2e4) went from 0.8 to 9 GB. Turned off per program,
    and only for multi-device CPU programs (one device: no growth, and YNN is ~2x faster there).
    A per-program option, not XLA_FLAGS: the environment is ignored once the backends run.
    """
    if mesh is None or mesh.devices.size < 2 or mesh.devices.flat[0].platform != "cpu":
        return {}
    return {"xla_cpu_experimental_ynn_fusion_type": ""}


def chain_mesh(num_chains: int) -> Mesh | None:
    """A 1-D mesh over as many default-backend devices as evenly divide num_chains; None for one."""
    devices = jax.devices()
    k = max(d for d in range(1, min(len(devices), num_chains) + 1) if num_chains % d == 0)
    if k == 1:
        return None
    return Mesh(np.array(devices[:k]), (CHAIN_AXIS,))
