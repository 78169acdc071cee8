"""λ̂ and its diagnostics from a loss trace (ESS and R-hat from blackjax.diagnostics)."""

from __future__ import annotations

from typing import Any

import numpy as np
from blackjax.diagnostics import effective_sample_size, ess_bulk, rhat


def _finite_or_none(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def estimate_llc(
    loss: np.ndarray, num_burnin_draws: int, nbeta: float, L0: float, llc_true: float | None = None
) -> dict[str, Any]:
    """λ̂ = nβ (E[L(w)] - L0) per chain and over the healthy chains.

    A chain whose trace holds NaN/inf anywhere (burn-in included) is flagged and excluded.
    ``llc_sem`` is the Monte Carlo standard error sd / sqrt(ESS) of the pooled mean; ``llc_std`` is
    the spread of the per-chain estimates.
    """
    loss = np.asarray(loss, dtype=np.float64)
    kept = loss[:, num_burnin_draws:]
    healthy = np.all(np.isfinite(loss), axis=1)
    draws = nbeta * (kept - L0)  # per-draw λ̂ contributions
    per_chain = np.where(healthy, draws.mean(axis=1), np.nan)
    good = draws[healthy]
    n_good, n_chains = int(healthy.sum()), loss.shape[0]
    status = "ok" if n_good == n_chains else ("failed" if n_good == 0 else "some_chains_diverged")
    out: dict[str, Any] = {
        "llc_per_chain": [_finite_or_none(v) for v in per_chain],
        "chains_ok": n_good,
        "chains_diverged": [int(i) for i in np.flatnonzero(~healthy)],
        "num_draws": int(kept.shape[1]),
        "status": status,
        "llc_true": llc_true,
    }
    if n_good == 0:
        return out | dict.fromkeys(
            ["llc_mean", "llc_std", "llc_sem", "ess", "ess_bulk", "r_hat", "llc_rel_error"]
        )
    mean = float(good.mean())
    ess = float(effective_sample_size(good, chain_axis=0, sample_axis=1))
    sd = float(good.std(ddof=1)) if good.size > 1 else 0.0
    out |= {
        "llc_mean": mean,
        "llc_std": float(np.std(per_chain[healthy], ddof=1)) if n_good > 1 else 0.0,
        "llc_sem": sd / np.sqrt(ess) if ess > 0 else None,
        "ess": _finite_or_none(ess),
        "ess_bulk": _finite_or_none(ess_bulk(good, chain_axis=0, sample_axis=1)),
        # R-hat compares chains; with one healthy chain it is undefined.
        "r_hat": _finite_or_none(rhat(good, chain_axis=0, sample_axis=1)) if n_good > 1 else None,
        "llc_rel_error": (mean / llc_true - 1.0) if llc_true else None,
    }
    return out
