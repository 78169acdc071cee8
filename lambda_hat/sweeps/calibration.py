"""Calibration without a known λ: verdicts on a step size × nβ (× γ) sweep and a recommended setting.

What researchers do before estimating λ̂ along training (devinterp's calibration notebook, the
developmental-interpretability papers): run SGLD at fixed steps over a grid, plot λ̂ against the
step, reject unhealthy chains and keep the flat region. ``+experiment=calibration`` is that grid;
this module reads its sweep table (and each job's trace.parquet) and applies these rules, in order,
the first that fires giving a setting its verdict:

1. **diverged** — the job failed or some chains produced NaN/inf: the step is far too large.
2. **negative** — λ̂ < 0: the chains sit below L_n(w*) (too large a step, too weak a γ, or w* not
   a minimum).
3. **below L_n(w*)** — some chain has a block of draws whose mean nβ(L − L_n(w*)) is below 0 by
   more than 3 standard errors (lambda_hat.health's rule; devinterp: λ̂ "should not have negative
   dips").
4. **too large** — MALA acceptance below ``MALA_LOW`` = 0.9 (devinterp: "as close as possible to
   .9"). Measured here on the default DLN (d 800, n 1e5, 4 × 2,000 steps): acceptance 0.97 gave
   λ̂ −0.3% off, 0.81 gave +5.7%, 0.59 +35%.
5. **too small** / **not converged** — split R-hat above ``RHAT_MAX`` = 1.05 or bulk ESS below
   ``ESS_MIN`` = 100: the chains have not forgotten w* (λ̂ is still rising). "too small" when the
   MALA acceptance is above ``MALA_HIGH`` = 0.98 (the step, not the run length, is the problem).
6. **drifts** — the chains walk away from w* past the localization's scale √(d/γ).
7. otherwise **healthy**.

The *flat region* of one (nβ, γ) is the longest run of consecutive grid steps that are all healthy
and whose λ̂ agree pairwise within ``FLAT_REL`` = 5% (or within 3 combined standard errors); of
runs equally long, the one with the smaller steps (less discretization bias: on a 3-parameter
regression two healthy steps, 1e-4 and 1e-3, gave −5% and +15% against a NUTS reference). The
recommended setting comes from the (nβ, γ) with the longest flat region (ties: nβ closest to the
default n/log n, then the smaller γ), and within it the step whose MALA acceptance is closest to
``MALA_BEST`` = 0.95 — the acceptance our tuner targets, measured the most accurate of 0.9 /
0.95 / 0.98 on the accuracy benchmarks (docs: Accuracy). A flat region of one step is reported as
such: refine the grid around it.

Everything here is pure table -> table; the sweep callback writes calibration.md / .png / .csv
beside the sweep table (:func:`write_report`), ``python -m lambda_hat.calibrate`` rebuilds them
and can check the recommendation against a cached full-batch reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MALA_LOW, MALA_HIGH, MALA_BEST = 0.9, 0.98, 0.95
RHAT_MAX, ESS_MIN = 1.05, 100.0
FLAT_REL, FLAT_SE = 0.05, 3.0
STEP, BETA0, GAMMA = "cfg.sampler.step_size", "cfg.posterior.beta0", "cfg.posterior.gamma"
REPORT, FIGURE, TABLE = "calibration.md", "calibration.png", "calibration.csv"
HEALTHY = "healthy"


def is_calibration(table: pd.DataFrame) -> bool:
    """A grid of fixed-step SG-MCMC jobs: more than one step size at some (nβ, γ)."""
    if STEP not in table or "cfg.sampler.target_mala_accept" not in table:
        return False
    fixed = table[table["cfg.sampler.target_mala_accept"].isna()]
    if not len(fixed):
        return False
    # a grid: some (nβ, γ) was run at several steps (an Optuna search draws γ afresh per trial)
    keys = [k for k in (BETA0, GAMMA) if k in fixed]
    steps = fixed.groupby(keys, dropna=False)[STEP].nunique() if keys else fixed[STEP].nunique()
    return bool(np.max(steps) > 1)


def _f(row: pd.Series, key: str) -> float:
    try:
        value = float(row.get(key))
    except (TypeError, ValueError):
        return math.nan
    return value


def _trace(row: pd.Series) -> pd.DataFrame | None:
    from lambda_hat.report.traces import find_trace

    path = find_trace(row)
    return pd.read_parquet(path) if path is not None else None


def verdict(row: pd.Series, trace: pd.DataFrame | None = None) -> tuple[str, str]:
    """(verdict, why) of one sweep row by the module's rules; trace: the job's trace.parquet."""
    from lambda_hat import health

    llc, mala, rhat, ess = (_f(row, k) for k in ("llc_mean", "mala_accept", "r_hat", "ess_bulk"))
    diverged = row.get("chains_diverged")
    if str(row.get("status")) not in ("ok", "some_chains_diverged") or not math.isfinite(llc):
        return "diverged", f"the job {row.get('status')}: {str(row.get('error') or 'all chains produced NaN/inf')[:120]}"
    if str(row.get("status")) == "some_chains_diverged" or (isinstance(diverged, str) and diverged not in ("", "[]")):
        return "diverged", f"chains {diverged} produced NaN/inf"
    if llc < 0:
        return "negative", f"λ̂ = {llc:.3g} < 0: the chains sit below L_n(w*)"
    kept = None if trace is None else trace[~trace["burnin"].astype(bool)]
    if kept is not None and len(kept):
        dips = health._dipping_chains(kept)
        if dips:
            return "below L_n(w*)", f"chains {dips} have blocks of draws below L_n(w*) by > {health.DIP_SE:g} se"
    if math.isfinite(mala) and mala < MALA_LOW:
        return "too large", f"MALA acceptance {mala:.2f} < {MALA_LOW}: the step's discretization biases λ̂ upward"
    if (math.isfinite(rhat) and rhat > RHAT_MAX) or not math.isfinite(ess) or ess < ESS_MIN:
        why = f"R-hat {rhat:.3f}, bulk ESS {ess:.0f} (want ≤ {RHAT_MAX}, ≥ {ESS_MIN:.0f}): the chains have not mixed"
        if math.isfinite(mala) and mala > MALA_HIGH:
            return "too small", f"{why}; MALA acceptance {mala:.3f} > {MALA_HIGH}: the step is too small to leave w*"
        return "not converged", f"{why}: run more steps (sampler.num_steps)"
    if kept is not None and "distance" in kept.columns:
        drift = health._drift(kept)
        gamma, d = _f(row, "gamma"), _f(row, "d")
        if drift is not None and gamma > 0 and drift[1] > math.sqrt(d / gamma):
            return "drifts", f"the chains drift from w* (RMS distance {drift[0]:.3g} -> {drift[1]:.3g} > √(d/γ)): raise posterior.gamma"
    return HEALTHY, f"MALA acceptance {mala:.2f}, R-hat {rhat:.3f}, bulk ESS {ess:.0f}"


def verdicts(table: pd.DataFrame, *, traces: bool = True) -> pd.DataFrame:
    """One row per setting: step, beta0, nβ, γ, λ̂ ± se, MALA, R-hat, ESS, verdict, why, flat."""
    rows = []
    for _, row in table.iterrows():
        trace = _trace(row) if traces and str(row.get("status")) in ("ok", "some_chains_diverged") else None
        v, why = verdict(row, trace)
        rows.append(
            {
                "step_size": _f(row, STEP),
                "beta0": _f(row, BETA0),
                "nbeta": _f(row, "nbeta"),
                "gamma": _f(row, GAMMA),
                "llc_mean": _f(row, "llc_mean"),
                "llc_sem": _f(row, "llc_sem"),
                "mala_accept": _f(row, "mala_accept"),
                "r_hat": _f(row, "r_hat"),
                "ess_bulk": _f(row, "ess_bulk"),
                "n_fge": _f(row, "n_fge"),
                "verdict": v,
                "why": why,
                "job_num": row.get("job_num"),
                "output_dir": row.get("output_dir"),
                "overrides": row.get("overrides"),
            }
        )
    out = pd.DataFrame(rows)
    if not len(out):
        return out
    out = out.sort_values(["beta0", "gamma", "step_size"], kind="stable").reset_index(drop=True)
    out["flat"] = False
    for _, g in out.groupby(["beta0", "gamma"], sort=False):
        out.loc[flat_region(g), "flat"] = True
    return out


def _agree(a: pd.Series, b: pd.Series) -> bool:
    diff = abs(a["llc_mean"] - b["llc_mean"])
    se = math.sqrt(np.nan_to_num(a["llc_sem"]) ** 2 + np.nan_to_num(b["llc_sem"]) ** 2)
    return diff <= max(FLAT_REL * max(abs(a["llc_mean"]), abs(b["llc_mean"])), FLAT_SE * se)


def flat_region(group: pd.DataFrame) -> list[Any]:
    """Index labels of the longest run of consecutive healthy steps whose λ̂ agree pairwise (ties:
    the run with the smaller steps, whose discretization bias is smaller)."""
    best: list[Any] = []
    labels = list(group.sort_values("step_size").index)
    for i in range(len(labels)):
        run: list[Any] = []
        for j in labels[i:]:
            if group.at[j, "verdict"] != HEALTHY or not all(_agree(group.loc[j], group.loc[k]) for k in run):
                break
            run.append(j)
        if len(run) > len(best):
            best = run
    return best


def recommend(table: pd.DataFrame) -> dict[str, Any] | None:
    """The recommended setting from verdicts(...) with the reason; None when nothing is healthy."""
    flat = table[table["flat"]]
    if not len(flat):
        return None
    sizes = flat.groupby(["beta0", "gamma"]).size()
    (beta0, gamma) = sorted(sizes.index, key=lambda k: (-sizes[k], abs(math.log(k[0])) if k[0] > 0 else math.inf, k[1]))[0]
    region = flat[(flat["beta0"] == beta0) & (flat["gamma"] == gamma)]
    pick = region.loc[(region["mala_accept"].fillna(MALA_BEST) - MALA_BEST).abs().idxmin()]
    steps = region["step_size"]
    llcs = region["llc_mean"]
    if len(region) > 1:
        why = (
            f"the flat region at nβ = {pick['nbeta']:.4g} (beta0 {beta0:g}, γ {gamma:g}) spans steps "
            f"{steps.min():.3g}–{steps.max():.3g}: {len(region)} healthy settings whose λ̂ agree within "
            f"{FLAT_REL:.0%} ({llcs.min():.4g}–{llcs.max():.4g}); of these the step whose MALA acceptance "
            f"({pick['mala_accept']:.2f}) is closest to {MALA_BEST}"
        )
    else:
        healthy = int((table["verdict"] == HEALTHY).sum())
        why = (
            f"a flat region of one step (nβ = {pick['nbeta']:.4g}, γ {gamma:g}"
            + (f"; the {healthy} healthy steps' λ̂ disagree by more than {FLAT_REL:.0%}, the smallest kept" if healthy > 1 else "")
            + "); refine the grid around it (e.g. steps ×/÷ 2) to see whether λ̂ is flat there"
        )
    overrides = f"sampler.target_mala_accept=null sampler.step_size={pick['step_size']:g} posterior.beta0={beta0:g} posterior.gamma={gamma:g}"
    return {**pick.to_dict(), "why": why, "use": overrides, "flat_steps": [float(s) for s in steps]}


def advice(table: pd.DataFrame) -> str:
    """What to change when nothing is healthy: which way to move the grid."""
    counts = table["verdict"].value_counts().to_dict()
    small = counts.get("too small", 0) + counts.get("not converged", 0)
    large = sum(counts.get(k, 0) for k in ("too large", "diverged", "negative", "below L_n(w*)"))
    if small and not large:
        return "every setting is too small or unconverged: move the grid to larger steps, or run more steps"
    if large and not small:
        return "every setting is too large or unhealthy: move the grid to smaller steps (or raise posterior.gamma)"
    return "no healthy setting: refine the grid between the largest too-small and the smallest too-large step, or run more steps"


def display(table: pd.DataFrame) -> pd.DataFrame:
    """The verdicts as strings, for the report."""
    d = pd.DataFrame(
        {
            "step": table["step_size"].map(lambda x: f"{x:.3g}"),
            "nβ": table["nbeta"].map(lambda x: f"{x:.4g}"),
            "γ": table["gamma"].map(lambda x: f"{x:g}"),
            "λ̂ ± se": [f"{m:.4g} ± {s:.2g}" if math.isfinite(m) else "" for m, s in zip(table["llc_mean"], table["llc_sem"])],
            "MALA": table["mala_accept"].map(lambda x: f"{x:.3f}" if math.isfinite(x) else ""),
            "R-hat": table["r_hat"].map(lambda x: f"{x:.3f}" if math.isfinite(x) else ""),
            "ESS": table["ess_bulk"].map(lambda x: f"{x:.0f}" if math.isfinite(x) else ""),
            "verdict": table["verdict"] + np.where(table["flat"], " (flat)", ""),
            "why": table["why"],
        }
    )
    return d


@dataclass
class Report:
    verdicts: pd.DataFrame
    recommended: dict[str, Any] | None
    paths: dict[str, Path]

    def summary_line(self) -> str:
        r = self.recommended
        if r is None:
            return f"calibration: no healthy setting — {advice(self.verdicts)}"
        return (
            f"calibration: recommended {r['use']} (λ̂ = {r['llc_mean']:.4g} ± {r['llc_sem']:.2g}, "
            f"MALA {r['mala_accept']:.2f}); {int((self.verdicts['verdict'] == HEALTHY).sum())} of "
            f"{len(self.verdicts)} settings healthy"
        )


def write_report(sweep_dir: Path, table: pd.DataFrame) -> Report | None:
    """calibration.md, calibration.png and calibration.csv beside the sweep table (None: not a
    calibration sweep)."""
    if not is_calibration(table):
        return None
    from lambda_hat.report import figures, page

    sweep_dir = Path(sweep_dir)
    v = verdicts(table)
    rec = recommend(v)
    paths: dict[str, Path] = {}
    chosen = (rec["beta0"], rec["gamma"]) if rec else (v["beta0"].iloc[0], v["gamma"].iloc[0])
    curves = {}
    for _, row in v[(v["beta0"] == chosen[0]) & (v["gamma"] == chosen[1])].iterrows():
        match = table[table["job_num"] == row["job_num"]]
        trace = _trace(match.iloc[0]) if len(match) and row["verdict"] != "diverged" else None
        if trace is not None:
            curves[float(row["step_size"])] = trace
    paths["calibration.png"] = figures.save(figures.calibration(v, rec, curves), sweep_dir / FIGURE)
    v.drop(columns=["output_dir"]).to_csv(sweep_dir / TABLE, index=False)
    paths["calibration.csv"] = sweep_dir / TABLE
    if rec is not None:
        intro = f"Recommended: `{rec['use']}` — {rec['why']}. λ̂ = {rec['llc_mean']:.4g} ± {rec['llc_sem']:.2g}."
    else:
        intro = f"No healthy setting: {advice(v)}."
    rules = (
        "Verdicts, first rule that fires: diverged (NaN/inf); negative λ̂; below L_n(w*) (a block of draws "
        f"below it by > 3 se); too large (MALA < {MALA_LOW}); too small / not converged (R-hat > {RHAT_MAX} or "
        f"bulk ESS < {ESS_MIN:.0f}; too small when MALA > {MALA_HIGH}); drifts (past √(d/γ)); else healthy. "
        f"Flat: the longest run of consecutive healthy steps whose λ̂ agree within {FLAT_REL:.0%} or 3 se. "
        "(lambda_hat/sweeps/calibration.py)"
    )
    sections = [
        page.Section("λ̂, MALA acceptance and loss traces against the step", rules, None, paths["calibration.png"]),
        page.Section("Settings", "", display(v)),
    ]
    if rec is not None:
        sections.append(
            page.Section(
                "Using it",
                f"Estimate along training with this one setting: python -m lambda_hat --multirun <your model> "
                f"sampler=sgld {rec['use']} sampler.num_steps=<as here or more> model.checkpoint=<folder>. "
                "Check it against a full-batch reference (NUTS, cached; small models): python -m lambda_hat.calibrate "
                f"{sweep_dir} --reference",
            )
        )
    paths["calibration.md"] = page.write_markdown(sweep_dir / REPORT, "Calibration", intro, sections)
    return Report(v, rec, paths)
