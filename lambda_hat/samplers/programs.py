"""The compiled programs of this process, reused by later runs of the same shape.

jax.jit caches per function object, and every run builds new closures, so the driver keys the
programs itself: on what the program is built from (the kernel, which
lambda_hat.samplers.build_kernel returns as one object per sampler config, or a batched grid's
structure; the loop's static sizes; the device mesh) and on the arguments' structure, shapes,
dtypes and placement. The posterior's loss functions are static fields of its pytree structure,
hence part of the key (lambda_hat.posterior keeps one object per model structure).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from lambda_hat.devices import cpu_compiler_options


def timed_compile(fn, *args, mesh: Mesh | None = None):
    """(fn lowered and compiled for args, seconds it took)."""
    start = time.perf_counter()
    compiled = fn.lower(*args).compile(compiler_options=cpu_compiler_options(mesh) or None)
    return compiled, time.perf_counter() - start


# least recently used last out
PROGRAMS: OrderedDict[Hashable, Any] = OrderedDict()
MAX_PROGRAMS = 64


def signature(args: tuple) -> Hashable:
    leaves, treedef = jax.tree.flatten(args)
    avals = tuple((a.shape, a.dtype, getattr(a, "weak_type", False), getattr(a, "sharding", None)) for a in leaves)
    # x64 mode changes a program's internal dtypes even where its arguments' dtypes agree
    return treedef, avals, jax.dtypes.canonicalize_dtype(np.float64)


def compiled_program(key: Hashable, make: Callable[[], Any], *args, mesh: Mesh | None = None) -> tuple[Any, float]:
    """(compiled program, seconds spent compiling it): make() is jitted, lowered and compiled for
    args unless this process compiled it for the same key and argument types before (then 0 s)."""
    full = (key, mesh, signature(args))
    compiled = PROGRAMS.get(full)
    if compiled is not None:
        PROGRAMS.move_to_end(full)
        return compiled, 0.0
    compiled, seconds = timed_compile(make(), *args, mesh=mesh)
    PROGRAMS[full] = compiled
    while len(PROGRAMS) > MAX_PROGRAMS:
        PROGRAMS.popitem(last=False)
    return compiled, seconds
