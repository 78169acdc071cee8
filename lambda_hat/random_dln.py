"""Random deep linear networks drawn like Lau et al.'s generator (arXiv:2308.12108, App. J).

``draw(size_class, index, generator_seed)`` is a pure function of its arguments, so net number
``index`` of a class is a target option (``model=dln_random model.index=7``) and a sweep over the
index is the accuracy benchmark (``+experiment=accuracy_1k``). No JAX here: the config resolver
that fills ``model.widths`` / ``model.true_rank`` / ``model.teacher_seed`` calls it while a
command line is validated.

For each size class a seeded numpy Generator draws, one net after another:
  - the number of weight matrices L uniformly in [L_min, L_max],
  - each of the L + 1 widths (input and output included) uniformly in [w_min, w_max],
  - the draw is rejected (and redrawn) unless the parameter count d = sum H_i H_{i+1} lies in
    [d_min, d_max],
  - the teacher's product rank: full rank (None) with probability 0.5, otherwise r uniform in
    [1, min(widths)],
  - the seed of the teacher and its data, from the same Generator.
These are exactly the draws of the former scripts/bench_accuracy.py (same generator, same order),
so its published numbers are about the same nets.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class SizeClass:
    label: str
    layers: tuple[int, int]  # number of weight matrices L, inclusive range
    widths: tuple[int, int]  # each width, inclusive range
    params: tuple[int, int]  # accepted parameter counts d, inclusive range


# L is capped at 5: deeper, very low-rank nets are the known hard cases, outside the range
# benchmarked here.
CLASSES: dict[str, SizeClass] = {
    "1k": SizeClass("~1k params", (2, 5), (5, 30), (500, 2000)),
    "10k": SizeClass("~10k params", (2, 5), (5, 100), (5000, 20000)),
}
# About half the nets full rank, as in Lau et al.'s generator (each weight matrix is rank-reduced
# with probability 0.2, so 33-64% of nets with 2-5 matrices keep full rank) and in public
# reproductions of their App. J (0.5).
P_FULL_RANK = 0.5


@dataclass(frozen=True)
class RandomDLN:
    widths: list[int]
    true_rank: int | None  # None = full rank
    seed: int  # of the teacher and its data (the run's target_seed)


def _num_params(widths: list[int]) -> int:
    return sum(a * b for a, b in zip(widths[:-1], widths[1:]))


@functools.lru_cache(maxsize=64)
def _nets(size_class: str, generator_seed: int, count: int) -> tuple[RandomDLN, ...]:
    import numpy as np

    c = CLASSES[size_class]
    # One generator per class and seed, so a class's nets do not depend on what else runs.
    rng = np.random.default_rng([generator_seed, list(CLASSES).index(size_class)])
    nets = []
    for _ in range(count):
        while True:
            L = int(rng.integers(c.layers[0], c.layers[1] + 1))
            widths = [int(w) for w in rng.integers(c.widths[0], c.widths[1] + 1, size=L + 1)]
            if c.params[0] <= _num_params(widths) <= c.params[1]:
                break
        rank = None if rng.random() < P_FULL_RANK else int(rng.integers(1, min(widths) + 1))
        nets.append(RandomDLN(widths, rank, int(rng.integers(2**31 - 1))))
    return tuple(nets)


def draw(size_class: str, index: int, generator_seed: int = 0) -> RandomDLN:
    """Net number ``index`` (0-based) of ``size_class`` from the generator seeded ``generator_seed``."""
    if size_class not in CLASSES:
        raise ValueError(f"unknown size class {size_class!r}; available: {', '.join(CLASSES)}")
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    # Nets are drawn in sequence (rejection sampling), so net i needs the draws of nets 0..i-1;
    # a batch of 32 keeps the cache small and a sweep's repeated look-ups cheap.
    count = (index // 32 + 1) * 32
    return _nets(size_class, int(generator_seed), count)[index]
