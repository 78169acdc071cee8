"""Health checks for networks without a known λ: is w* a local minimum, does the loss stay above
L_n(w*), do the chains stay near w*? Each warning names what to change.

λ̂ is defined at a local minimum of L_n. At a point with a non-negligible gradient the localized
posterior slides downhill, draws sit *below* L_n(w*) and λ̂ is biased low (even negative); a
chain that drifts away from w* without bound (too weak a localization γ, a flat direction) does
not estimate a *local* quantity at all. The built-in samplers' own health (R-hat, ESS, MALA
acceptance, divergences, Pareto k̂) is in lambda_hat.llc.health_warnings.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from lambda_hat.posterior import Posterior

# w* counts as "not a minimum" when one Newton step along -∇L_n(w*) lowers nβ·L_n by more than
# this many units of λ̂ (relative) or absolute nats: λ̂ itself is nβ·(E L − L_n(w*)), so a drop
# of that size is a bias of that size.
MIN_DROP_REL = 0.05
MIN_DROP_ABS = 0.5
# A block of kept draws is "below L_n(w*)" when its mean λ̂ is below 0 by more than this many
# standard errors of the block mean (minibatch losses are noisy; a chance dip is not a warning).
DIP_SE = 3.0
NUM_BLOCKS = 10
# Chains "drift" when their mean squared distance from w* over the last quarter of the kept draws
# is more than this factor above that over the first quarter (at equilibrium the two agree, while
# for a random walk along flat directions |w - w*|² grows linearly in the step: last/first quarter
# of the second half of a run, 15/9 = 1.67) and they are farther out than γ allows (trace_warnings).
DRIFT_FACTOR = 1.4


@jax.jit
def _newton_step_along_gradient(posterior: Posterior) -> dict[str, jax.Array]:
    w = posterior.w_star
    grad = jax.grad(posterior.full_loss)(w)
    g2 = jnp.sum(grad**2)
    _, hg = jax.jvp(jax.grad(posterior.full_loss), (w,), (grad,))
    curv = jnp.vdot(grad, hg)  # gᵀHg
    # Newton step along -g when the curvature is positive, else a small probe step
    alpha = jnp.where(curv > 0, g2 / jnp.where(curv > 0, curv, 1.0), 1e-3 / jnp.sqrt(jnp.maximum(g2, 1e-30)))
    drop = posterior.L0 - posterior.full_loss(w - alpha * grad)
    return {"grad_norm": jnp.sqrt(g2), "curvature": curv, "drop": drop}


def minimum_check(posterior: Posterior) -> dict[str, Any]:
    """The full-data gradient norm at w* and nβ times the loss drop of one Newton step along it
    (metrics ``wstar_grad_norm``, ``wstar_newton_drop``); costs ~4 full-data gradients."""
    out = {k: float(v) for k, v in _newton_step_along_gradient(posterior).items()}
    drop = out["drop"] if np.isfinite(out["drop"]) else 0.0
    return {
        "wstar_grad_norm": out["grad_norm"] if np.isfinite(out["grad_norm"]) else None,
        "wstar_newton_drop": float(posterior.nbeta) * max(drop, 0.0),
    }


def trace_warnings(frame: pd.DataFrame, metrics: dict[str, Any]) -> list[str]:
    """Warnings about w* and the chains' behaviour relative to it (see the module docstring)."""
    out: list[str] = []
    llc = metrics.get("llc_mean")
    drop = metrics.get("wstar_newton_drop")
    if drop is not None and drop > max(MIN_DROP_ABS, MIN_DROP_REL * abs(llc or 0.0)):
        out.append(
            f"w* is not a local minimum: one step along the full-data gradient (|∇L_n(w*)| = "
            f"{metrics['wstar_grad_norm']:.3g}) lowers nβ·L_n by {drop:.3g} (λ̂ = {llc if llc is not None else float('nan'):.3g}); "
            "λ̂ is defined at a local minimum: train w* to convergence first"
        )
    if llc is not None and llc < 0:
        out.append(f"λ̂ = {llc:.3g} < 0: the chains sit below L_n(w*); the step is too large, posterior.gamma too small, or w* is not a local minimum")
    kept = frame[~frame["burnin"]]
    if llc is not None and llc >= 0 and len(kept):
        dips = _dipping_chains(kept)
        if dips:
            out.append(
                f"the loss of chains {dips} dips below L_n(w*) (a block of draws with mean λ̂ < 0 by > {DIP_SE:g} se): "
                "lower the step size or raise posterior.gamma, and check that w* is a local minimum"
            )
    if "distance" in kept.columns:
        drift = _drift(kept)
        # Growth alone is not a fault: with γ > 0 a chain relaxes slowly along flat directions (a
        # DLN's fiber) towards a spread of at most √(d/γ); drifting past that, the localization
        # no longer holds the chain near w*.
        gamma, d = metrics.get("gamma") or 0.0, metrics.get("d") or 0
        scale = float(np.sqrt(d / gamma)) if gamma > 0 else 0.0
        if drift is not None and drift[1] > scale:
            first, last = drift
            bound = f", past the localization's scale √(d/γ) = {scale:.3g}" if gamma > 0 else ", with no localization (γ = 0)"
            out.append(
                f"chains drift away from w* (RMS distance {first:.3g} over the first quarter of the kept draws, "
                f"{last:.3g} over the last{bound}): raise posterior.gamma (the localization) or lower the step size"
            )
    return out


def _dipping_chains(kept: pd.DataFrame) -> list[int]:
    chains = []
    for chain, rows in kept.groupby("chain"):
        llc = rows["llc"].to_numpy()
        llc = llc[np.isfinite(llc)]
        if llc.size < NUM_BLOCKS * 4:
            continue
        blocks = np.array_split(llc, NUM_BLOCKS)
        for b in blocks:
            se = b.std(ddof=1) / np.sqrt(b.size)
            if b.mean() + DIP_SE * se < 0:
                chains.append(int(chain))
                break
    return chains


def _drift(kept: pd.DataFrame) -> tuple[float, float] | None:
    """(first-quarter, last-quarter) RMS distance from w* over the chains, when most chains drift."""
    firsts, lasts, drifting = [], [], 0
    for _, rows in kept.groupby("chain"):
        sq = rows["distance"].to_numpy() ** 2
        sq = sq[np.isfinite(sq)]
        if sq.size < 8:
            return None
        q = sq.size // 4
        first, last = float(sq[:q].mean()), float(sq[-q:].mean())
        firsts.append(first)
        lasts.append(last)
        drifting += last > DRIFT_FACTOR * first
    if not firsts or drifting <= len(firsts) // 2:
        return None
    return float(np.sqrt(np.mean(firsts))), float(np.sqrt(np.mean(lasts)))
