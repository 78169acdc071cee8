"""The report's tables: the summary per estimator and target, and the leaderboard (estimators ranked
by median |relative error| at each budget level, with bootstrap intervals).

Both take the table of ``lambda_hat.report.runs.prepare``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lambda_hat.report.runs import OK_STATUSES, budget_order


def bootstrap_median(values: np.ndarray, *, level: float = 0.9, resamples: int = 4000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the median. Written with numpy rather than
    scipy.stats.bootstrap because failed runs enter as +inf, and scipy's interpolated percentiles
    turn an interval touching inf into NaN; "inverted_cdf" quantiles keep inf. (nan, nan) for
    fewer than two values."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    medians = np.median(x[rng.integers(0, len(x), size=(resamples, len(x)))], axis=1)
    lo, hi = np.quantile(medians, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return float(lo), float(hi)


def leaderboard(df: pd.DataFrame, *, level: float = 0.9, seed: int = 0) -> pd.DataFrame:
    """One row per (budget, estimator): runs, failed runs, median |rel. error| and its bootstrap
    interval, median FGE per chain and seconds; ranked by the median within each budget (rank 1 =
    most accurate). Rows without a reference λ are left out; without budget levels, one level "all"."""
    d = df[df["reference"].notna()].copy()
    d["budget"] = d["budget"].fillna("all") if "budget" in d else "all"
    order = budget_order(d) or ["all"]
    rows = []
    for budget in order:
        part = d[d["budget"] == budget]
        for est, g in part.groupby("estimator", sort=True):
            err = g["abs_rel_error"].to_numpy(dtype=float)
            lo, hi = bootstrap_median(err, level=level, seed=seed)
            rows.append(
                {
                    "budget": budget,
                    "estimator": est,
                    "family": g["family"].iloc[0],
                    "runs": len(g),
                    "failed": int((~g["status"].isin(OK_STATUSES)).sum()) if "status" in g else 0,
                    "median_abs_rel_error": float(np.median(err)) if len(err) else math.nan,
                    "ci_low": lo,
                    "ci_high": hi,
                    "fge_per_chain": float(g["fge_per_chain"].median()),
                    "seconds": float(g["seconds"].median()),
                }
            )
    out = pd.DataFrame(rows)
    if not len(out):
        return out
    out["rank"] = out.groupby("budget", sort=False)["median_abs_rel_error"].rank(method="min").astype(int)
    out["budget"] = pd.Categorical(out["budget"], categories=order, ordered=True)
    out = out.sort_values(["budget", "rank", "estimator"], kind="stable").reset_index(drop=True)
    out["budget"] = out["budget"].astype(str)
    return out[["budget", "rank", *[c for c in out.columns if c not in ("budget", "rank")]]]


def _health(g: pd.DataFrame) -> str:
    bad = int((~g["status"].isin(OK_STATUSES)).sum()) if "status" in g else 0
    diverged = int((g["status"] == "some_chains_diverged").sum()) if "status" in g else 0
    warned = int((pd.to_numeric(g["n_warnings"], errors="coerce").fillna(0) > 0).sum()) if "n_warnings" in g else 0
    parts = [f"{bad} failed"] if bad else []
    parts += [f"{diverged} with diverged chains"] if diverged else []
    parts += [f"{warned} with warnings"] if warned else []
    return ", ".join(parts) or "ok"


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (budget, target, estimator): runs, mean λ̂ and its standard error (spread over
    the runs when there are several, else the run's own llc_sem), reference λ, relative error of
    the mean, median |rel. error|, median ESS/FGE, largest R-hat and a health note."""
    d = df.copy()
    d["budget"] = d["budget"].fillna("") if "budget" in d else ""
    order = {b: i for i, b in enumerate(budget_order(df))}
    rows = []
    for (budget, target, est), g in d.groupby(["budget", "target", "estimator"], sort=False):
        ok = g[g["status"].isin(OK_STATUSES)] if "status" in g else g
        lam = pd.to_numeric(ok["llc_mean"], errors="coerce").dropna()
        if len(lam) >= 2:
            se = float(lam.std(ddof=1) / math.sqrt(len(lam)))
        elif len(lam) == 1 and "llc_sem" in ok:
            se = float(pd.to_numeric(ok["llc_sem"], errors="coerce").iloc[0])
        else:
            se = math.nan
        ref = float(g["reference"].iloc[0]) if g["reference"].notna().any() else math.nan
        mean = float(lam.mean()) if len(lam) else math.nan
        rows.append(
            {
                "budget": budget,
                "target": target,
                "estimator": est,
                "runs": len(g),
                "llc_mean": mean,
                "llc_se": se,
                "reference": ref,
                "rel_error": mean / ref - 1 if ref == ref and ref != 0 else math.nan,
                "median_abs_rel_error": float(g["abs_rel_error"].median()) if g["abs_rel_error"].notna().any() else math.nan,
                "ess_per_fge": float(pd.to_numeric(ok.get("ess_per_fge"), errors="coerce").median()) if "ess_per_fge" in ok else math.nan,
                "r_hat_max": float(pd.to_numeric(ok.get("r_hat"), errors="coerce").max()) if "r_hat" in ok else math.nan,
                "health": _health(g),
            }
        )
    out = pd.DataFrame(rows)
    if len(out):
        out["_b"] = out["budget"].map(order).fillna(-1)
        out = out.sort_values(["_b", "target", "estimator"], kind="stable").drop(columns="_b").reset_index(drop=True)
        if (out["budget"] == "").all():
            out = out.drop(columns="budget")
    return out
