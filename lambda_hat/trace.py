"""The result every estimator returns: per-draw losses and diagnostics, and what they cost.

Samplers (``lambda_hat.samplers.driver``) and variational estimators (``lambda_hat.vi.fit``:
draws of each fitted q) produce a :class:`Trace`; the estimate, the output files and the tracking code read only this type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Trace:
    """Per-draw loss and diagnostics of every chain, and the run's cost.

    Times are the estimator's own (no background work of the tool runs while they are measured):
    ``sampling_time_s`` is the compiled sampling loop only; ``warmup_time_s`` the adaptation or
    tuning loop only; compilation is reported apart in ``*_compile_time_s``.
    """

    loss: np.ndarray  # (chains, draws): L(w) at each kept draw
    step: np.ndarray  # (draws,): steps taken (after warm-up) when the draw was recorded; VI: draw number
    num_burnin_draws: int  # the first draws, recorded during burn-in
    compile_time_s: float  # sampling loop compilation
    sampling_time_s: float  # sampling loop execution
    n_fge: float  # full-gradient equivalents after burn-in, all chains
    n_fge_warmup: float  # ... during warm-up/adaptation and burn-in, all chains
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # (chains, draws), mean per draw
    warmup: dict[str, np.ndarray] = field(default_factory=dict)  # (chains,) adapted values
    warmup_time_s: float = 0.0  # adaptation/tuning loop execution
    warmup_compile_time_s: float = 0.0
    num_warmup_steps: int = 0  # adaptation/tuning steps per chain
    devices: int = 1  # devices the chains were split over
    # why sampling stopped: "fixed length" (num_steps), "converged" or "work cap" (sampler.max_steps)
    stop_reason: str = "fixed length"
    # Runs batched together (lambda_hat.grid): the times above are this run's share of the batch's
    batch_points: int = 1
    # Variational fits only: per optimiser step (chains, steps): elbo, grad_norm, family diagnostics
    fit: dict[str, np.ndarray] = field(default_factory=dict)
