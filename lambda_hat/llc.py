"""λ̂ and its diagnostics from a loss trace (ESS and R-hat from blackjax.diagnostics)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from blackjax.diagnostics import effective_sample_size, ess_bulk, ess_tail, rhat


@jax.jit
def _chain_diagnostics(draws: jax.Array) -> dict[str, jax.Array]:
    """ESS (mean), ESS bulk/tail and R-hat of (chains, draws), compiled as one program.

    Called op by op, blackjax's diagnostics dispatch ~200 small compilations (~6 s per run); one
    jitted program compiles once per shape and is then served from the persistent XLA cache.
    """
    out = {"ess": effective_sample_size(draws), "ess_bulk": ess_bulk(draws), "ess_tail": ess_tail(draws)}
    if draws.shape[0] > 1:  # R-hat compares chains; undefined for one
        out["r_hat"] = rhat(draws)
    return out


def _finite_or_none(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def estimate_llc(loss: np.ndarray, num_burnin_draws: int, nbeta: float, L0: float, llc_true: float | None = None) -> dict[str, Any]:
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
        return out | dict.fromkeys(["llc_mean", "llc_std", "llc_sem", "ess", "ess_bulk", "ess_tail", "r_hat", "llc_rel_error"])
    mean = float(good.mean())
    diag = {k: _finite_or_none(v) for k, v in _chain_diagnostics(good.astype(np.float32)).items()}
    ess = diag["ess"]
    sd = float(good.std(ddof=1)) if good.size > 1 else 0.0
    out |= {
        "llc_mean": mean,
        "llc_std": float(np.std(per_chain[healthy], ddof=1)) if n_good > 1 else 0.0,
        "llc_sem": sd / np.sqrt(ess) if ess else None,
        "ess": ess,
        "ess_bulk": diag["ess_bulk"],
        "ess_tail": diag["ess_tail"],
        "r_hat": diag.get("r_hat"),
        "llc_rel_error": (mean / llc_true - 1.0) if llc_true else None,
    }
    return out


# R-hat up to which chains count as mixed for the interval: past it, the interval's upper end grows
# by (R-hat - RHAT_MIXED) x λ̂ (chains that started at w* and have not equilibrated are low). The
# threshold a run until converged stops at (Vehtari et al. 2021's 1.01): at 1.05, runs that hit the
# work cap at R-hat 1.03-1.06 still climbing missed (5 of 28 measured), converged ones 2 of 81.
RHAT_MIXED = 1.01
# The scatter of λ̂ around λ that neither the Monte Carlo error nor the step's predicted bias
# accounts for, relative (interval95): the finite-n gap between the tempered posterior's E[nβ(L − L*)]
# and λ, and slow excursions a run's ESS does not see (two fresh ~1k nets came out −2.7% and −2.1%
# at R-hat 1.006 and ESS > 400, −0.3% and +0.4% with 10x the steps). With the LM noise, on converged
# runs of random DLNs, the maximum-likelihood τ of errors ~ N(0, se² + τ²) is 0.3%, but the misses
# are heavier-tailed than that: 0.6% is the least τ (in steps of 0.1%) at which each sweep of the
# defaults (seeds 21 and 31 ~1k, seed 21 ~10k; 52 nets) covers ≥ 90% (docs: results-accuracy).
SCATTER = 0.006


def split_rhat(draws: np.ndarray, pieces: int = 4) -> float | None:
    """R-hat of one chain cut into ``pieces`` consecutive stretches (a chain still drifting has
    stretches that disagree); None if too short. For the interval of a one-chain run."""
    from arviz_stats.base import array_stats

    draws = np.asarray(draws, dtype=np.float64).ravel()
    n = draws.size // pieces
    if n < 4 or not np.all(np.isfinite(draws)):
        return None
    return _finite_or_none(array_stats.rhat(draws[: n * pieces].reshape(pieces, n), chain_axis=0, draw_axis=1))


MSER_BATCH = 5  # draws per batch mean of MSER-5


def stationary_start(loss: np.ndarray, most: int) -> int:
    """Burn-in draws chosen from the chains: MSER-5 (White 1997; Franklin & White 2008) on the
    per-draw mean over the finite chains — the cut d (a multiple of 5 draws, at most ``most``)
    that minimises the squared standard error of the mean of what is left, Σ_{j≥d}(z_j − z̄)² /
    (m − d)² over the m batch means z of 5 draws. A chain still climbing from w* is cut where it
    levels off; one already stationary keeps more of its draws than a fixed fraction would.
    Written here: arviz and blackjax have no truncation rule. ``most`` if too short to judge."""
    loss = np.asarray(loss, dtype=np.float64)
    finite = loss[np.all(np.isfinite(loss), axis=1)]
    m = loss.shape[1] // MSER_BATCH
    if finite.shape[0] == 0 or m < 8 or most < MSER_BATCH:
        return most
    z = finite.mean(axis=0)[: m * MSER_BATCH].reshape(m, MSER_BATCH).mean(axis=1)
    z = z - z.mean()  # the sums below in float64 without cancellation
    left = np.arange(m, 0, -1, dtype=np.float64)  # m − d batches kept, d = 0 .. m−1
    s1, s2 = np.cumsum(z[::-1])[::-1], np.cumsum((z * z)[::-1])[::-1]
    mser = (s2 - s1 * s1 / left) / (left * left)
    cuts = min(most // MSER_BATCH, m - 2) + 1  # candidates d = 0 .. most/5, two batches left at least
    return int(np.argmin(mser[:cuts])) * MSER_BATCH


def interval95(llc_mean: float | None, llc_sem: float | None, r_hat: float | None, bias: float) -> list[float] | None:
    """A 95% interval for λ that counts the step's bias and under-mixing, not only Monte Carlo error.

    With b the step's predicted relative bias of λ̂ (the SGLD tuner's ``predicted_bias``: the
    unadjusted chain's law sits ε·tr/8 above the posterior's; SGHMC/SGNHT's probe,
    lambda_hat.estimators.sghmc.predicted_excess; 0 for Metropolis-adjusted samplers)
    and c = λ̂ / (1 + b) the bias-corrected centre:

        low  = c - 1.96 sqrt(se² + (τ λ̂)²) - b λ̂
        high = c + 1.96 sqrt(se² + (τ λ̂)²) + b λ̂ + max(0, R-hat - 1.01) λ̂

    τ = SCATTER is what scatters λ̂ around λ beyond both (see SCATTER). The b λ̂ on both sides is
    the net-to-net scatter of the actual bias around the predicted one (measured with
    Euler–Maruyama's step: sd ≈ 1.2% of λ at b = 1%, the same size as b itself; it is not Monte
    Carlo error, so inflating se does not cover it). The R-hat term is one-sided because chains that start at w*
    and have not equilibrated are below λ (every large miss measured was low). Measured on 66
    four-chain runs of random DLNs (~1k and ~10k classes, generator seeds 11 and 12, never used
    in development; the R-hat term then from 1.05, Euler–Maruyama's step, no τ): 95.5% coverage,
    median half-width 2.7% of λ; λ̂ ± 1.96 se covered 38%. With the LM noise and τ, on 84 runs of
    the defaults (~1k and ~10k, seeds 21, 31, 41): 78 of 84, half-widths 1.3–1.6% (docs:
    results-accuracy). None without an estimate or its se.
    """
    if llc_mean is None or llc_sem is None or not np.isfinite(llc_mean) or not np.isfinite(llc_sem):
        return None
    b = max(0.0, float(bias)) if np.isfinite(bias) else 0.0
    centre = llc_mean / (1.0 + b)
    spread = 1.96 * float(np.hypot(llc_sem, SCATTER * llc_mean)) + b * abs(llc_mean)
    drift = max(0.0, (r_hat or 1.0) - RHAT_MIXED) * abs(llc_mean)
    return [float(centre - spread), float(centre + spread + drift)]


def interval_metrics(est: dict[str, Any], trace: Any) -> dict[str, Any]:
    """llc_ci95 (lambda_hat.llc.interval95), the bias b it used and, when λ is known, whether it
    covers it. b: the median over the healthy chains of the predicted relative bias — the SGLD
    tuner's ``predicted_bias``, or a sampler's per-draw ``predicted_excess`` of E[U] (SGHMC, SGNHT)
    averaged over the kept draws and divided by the chain's λ̂; 0 where the sampler predicts none.
    R-hat across chains, or within a lone chain (four stretches)."""
    healthy = np.isfinite(trace.loss).all(axis=1)
    predicted = np.asarray(trace.warmup.get("predicted_bias", np.zeros(len(healthy))), dtype=np.float64)
    if "predicted_bias" not in trace.warmup and "predicted_excess" in trace.extras:
        excess = np.asarray(trace.extras["predicted_excess"], dtype=np.float64)[:, trace.num_burnin_draws :]
        llc = np.array([np.nan if v is None else v for v in est.get("llc_per_chain") or [None] * len(healthy)], dtype=np.float64)
        counts = np.isfinite(excess).sum(axis=1)
        with np.errstate(all="ignore"):  # a chain without an estimate, or with λ̂ <= 0, predicts none
            per_chain = np.where(np.isfinite(excess), excess, 0.0).sum(axis=1) / counts / llc
        predicted = np.where((counts > 0) & np.isfinite(per_chain) & (llc > 0), per_chain, 0.0)
    bias = float(np.median(predicted[healthy])) if healthy.any() and predicted.size == healthy.size else 0.0
    r_hat = est.get("r_hat")
    if r_hat is None and healthy.sum() == 1:
        r_hat = split_rhat(trace.loss[healthy][0, trace.num_burnin_draws :])
    ci = interval95(est.get("llc_mean"), est.get("llc_sem"), r_hat, bias)
    out: dict[str, Any] = {"llc_ci95": ci, "llc_ci95_bias": bias if ci is not None else None}
    # the interval's centre: λ̂ with the step's predicted bias taken out (measured: median error
    # 0.7% vs 1.45% for λ̂ on fresh ~1k DLNs, 4 chains; docs: results-accuracy)
    out["llc_bias_corrected"] = est["llc_mean"] / (1.0 + bias) if ci is not None else None
    if ci is not None and est.get("llc_true") is not None:
        out["llc_ci95_covers"] = bool(ci[0] <= est["llc_true"] <= ci[1])
    return out


def e_bfmi(energy: np.ndarray) -> np.ndarray:
    """Energy Bayesian fraction of missing information per chain (Betancourt 2016), arviz-stats'
    ``bfmi``: Σ (E_t - E_{t-1})² / Σ (E_t - Ē)²; values below ~0.3 flag poor momentum resampling.
    NaN for a chain whose energy is not finite (a runaway chain) or constant."""
    from arviz_stats.base import array_stats

    energy = np.asarray(energy, dtype=np.float64)
    out = np.full(energy.shape[0], np.nan)
    for c, row in enumerate(energy):
        if np.all(np.isfinite(row)) and np.ptp(row) > 0:
            out[c] = float(np.ravel(array_stats.bfmi(row[None, :]))[0])
    return out


def sampler_diagnostics(trace: Any, thinning: int) -> dict[str, Any]:
    """Sampler health from the trace: acceptance, divergences, adapted values, E-BFMI, MALA test."""
    out: dict[str, Any] = {}
    kept = slice(trace.num_burnin_draws, None)
    ex = {k: np.asarray(v, dtype=np.float64) for k, v in trace.extras.items()}
    if "acceptance_rate" in ex:
        out["acceptance_rate"] = _finite_or_none(np.nanmean(ex["acceptance_rate"][:, kept]))
    if "is_divergent" in ex:  # per-draw means over the thinning block -> counts
        out["num_divergent"] = int(round(float(np.nansum(ex["is_divergent"][:, kept]) * thinning)))
    if "energy" in ex:
        bfmi = e_bfmi(ex["energy"][:, kept])
        out["e_bfmi_per_chain"] = [_finite_or_none(b) for b in bfmi]
        out["e_bfmi"] = _finite_or_none(np.nanmin(bfmi)) if np.any(np.isfinite(bfmi)) else None
    for name in ("mala_accept", "tree_depth", "num_integration_steps", "trajectory_length", "energy_var_per_dim", "kinetic_temperature"):
        if name in ex and np.any(np.isfinite(ex[name][:, kept])):
            out[f"{name}_mean" if name in trace.warmup else name] = _finite_or_none(np.nanmean(ex[name][:, kept]))
    for name, values in trace.warmup.items():  # adapted per chain: report the median and the list
        values = np.asarray(values, dtype=np.float64)
        out[name] = _finite_or_none(np.median(values))
        out[f"{name}_per_chain"] = [_finite_or_none(v) for v in values]
    return out


def efficiency(est: dict[str, Any], trace: Any) -> dict[str, Any]:
    """ESS (bulk) per full-gradient equivalent and per second, warm-up included."""
    out: dict[str, Any] = {"ess_per_fge": None, "ess_per_s": None}
    if est.get("ess_bulk") is None:
        return out
    work = trace.n_fge + trace.n_fge_warmup
    seconds = trace.sampling_time_s + trace.warmup_time_s
    out["ess_per_fge"] = est["ess_bulk"] / work if work > 0 else None
    out["ess_per_s"] = est["ess_bulk"] / seconds if seconds > 0 else None
    return out


def pareto_khat(log_ratio: np.ndarray) -> np.ndarray:
    """Pareto k̂ per fit of the importance ratios p/q (PSIS, arviz-stats), NaN for a fit with
    non-finite ratios. Above 0.7 the ratios' tail is too heavy for importance sampling to
    correct q, i.e. q misses posterior mass (Yao et al. 2018; Vehtari et al. 2024)."""
    from arviz_stats.base import array_stats

    log_ratio = np.asarray(log_ratio, np.float64)
    out = np.full(log_ratio.shape[0], np.nan)
    for c, row in enumerate(log_ratio):
        if np.all(np.isfinite(row)):
            try:  # psislw takes LOO's log-likelihoods and smooths their negatives as log weights
                out[c] = float(array_stats.psislw(-(row - row.max()), r_eff=1.0, axis=-1)[1])
            except ValueError:  # too few draws for a tail fit (it needs >= 5 in the tail, ~25 draws)
                pass
    return out


def variational_diagnostics(trace: Any, nbeta: float) -> dict[str, Any]:
    """A VI run's reliability: Pareto k̂ per fit (worst reported), the final ELBO per fit, and the
    Monte Carlo standard error of λ̂ given the fits (its draws are independent):
    llc_sem = nβ sqrt(Σ_c var_c / S) / C over the C healthy fits of S draws each."""
    loss = np.asarray(trace.loss, np.float64)
    healthy = np.all(np.isfinite(loss), axis=1)
    khat = pareto_khat(trace.extras["log_ratio"])
    tail = max(1, trace.num_warmup_steps // 10)  # the ELBO averaged over the last 10% of steps
    elbo = np.nanmean(np.asarray(trace.fit["elbo"], np.float64)[:, -tail:], axis=1)
    out: dict[str, Any] = {
        "pareto_khat": _finite_or_none(np.nanmax(khat)) if np.any(np.isfinite(khat)) else None,
        "pareto_khat_per_chain": [_finite_or_none(k) for k in khat],
        "elbo_final": _finite_or_none(np.nanmedian(elbo)) if np.any(np.isfinite(elbo)) else None,
        "elbo_final_per_chain": [_finite_or_none(e) for e in elbo],
    }
    good = loss[healthy]
    if good.shape[0] and good.shape[1] > 1:
        out["llc_sem"] = float(nbeta * np.sqrt(np.sum(good.var(axis=1, ddof=1) / good.shape[1])) / good.shape[0])
    return out


# Thresholds of health_warnings: R-hat 1.1 and 100 bulk-ESS are the classic minimums (Gelman et
# al.; Vehtari et al. 2021 ask for stricter values before publishing); a MALA acceptance below
# 0.8 marks a step size that biases λ̂ (Furman & Lau 2024; +50% on the tiny DLN test target).
RHAT_MAX = 1.1
ESS_MIN = 100.0
MALA_ACCEPT_MIN = 0.8
# Above this the SGLD step is far smaller than it need be; with R-hat or ESS failing too, the chains
# under-mix (Lau et al.'s 5e-7 at n = 1e4: MALA 0.99-1.00, R-hat 1.3, ESS ~10 of 4,000 draws).
MALA_ACCEPT_HIGH = 0.98
# A fixed step whose predicted relative bias of λ̂ is above this (SGHMC/SGNHT: discretization and
# minibatch noise, lambda_hat.estimators.sghmc.predicted_excess) warns; the SGLD tuner caps it at 1%.
PREDICTED_BIAS_MAX = 0.02
# Pareto k̂ of a VI fit's importance ratios: above 0.7 q does not match p (Yao et al. 2018).
KHAT_MAX = 0.7
TUNE_HINT = "sampler.target_mala_accept=0.95 tunes the step per chain"


def health_warnings(metrics: dict[str, Any]) -> list[str]:
    """One line per diagnostic that says the estimate should not be trusted as it stands."""
    out = []
    if metrics.get("chains_diverged"):
        out.append(f"chains {metrics['chains_diverged']} diverged and were excluded; lower the step size")
    r_hat, ess, mala = metrics.get("r_hat"), metrics.get("ess_bulk"), metrics.get("mala_accept")
    mixing_failed = False
    if r_hat is not None and r_hat > RHAT_MAX:
        out.append(f"r_hat = {r_hat:.3f} > {RHAT_MAX}: the chains disagree; run longer or mix faster")
        mixing_failed = True
    if ess is not None and ess < ESS_MIN:
        out.append(f"ess_bulk = {ess:.0f} < {ESS_MIN:.0f}: llc_sem is unreliable; run longer or thin less")
        mixing_failed = True
    khat = metrics.get("pareto_khat")
    if khat is not None and khat > KHAT_MAX:
        out.append(
            f"pareto_khat = {khat:.2f} > {KHAT_MAX}: q does not match the posterior (heavy-tailed importance "
            "ratios), λ̂ is unreliable; raise vi.rank / vi.components (mfa) or vi.latent_dim (flow), or fit longer"
        )
    bias = metrics.get("llc_ci95_bias")
    if bias is not None and bias > PREDICTED_BIAS_MAX and "tune_mala_accept" not in metrics:
        out.append(
            f"predicted bias of λ̂ from the step = {100 * bias:+.1f}% > {100 * PREDICTED_BIAS_MAX:.0f}% (discretization and "
            "minibatch-gradient noise; llc_bias_corrected takes it out): lower sampler.step_size"
        )
    tuned = "tune_mala_accept" in metrics  # the step was tuned: the hint would not help
    if mala is not None and mala < MALA_ACCEPT_MIN:
        hint = "" if tuned else f"; {TUNE_HINT}"
        out.append(f"mala_accept = {mala:.2f} < {MALA_ACCEPT_MIN}: the step size is too large (biases λ̂){hint}")
    elif mala is not None and mala > MALA_ACCEPT_HIGH and mixing_failed and not tuned:
        out.append(f"mala_accept = {mala:.2f} > {MALA_ACCEPT_HIGH}: the step size is too small to mix; {TUNE_HINT}")
    return out
