"""The accuracy table of a sweep against a known λ (``python -m lambda_hat.aggregate --accuracy``).

Reads a sweep table (llc_runs.parquet, one row per job) and summarizes the relative error
|λ̂/λ − 1| per size class (``cfg.model.size_class`` of model=dln_random; one group otherwise),
then its full-rank and reduced-rank nets apart: count, parameter range, median, mean, p90, max,
share within 5% and 10%, median signed error, diverged, and how often the reported 95% interval
(``llc_ci95``) covers λ with its median half-width relative to λ, and the median error of
``llc_bias_corrected`` (λ̂ with the step's predicted bias taken out); n/a for runs without them;
then the work: the median FGE per chain (warm-up included) and, for runs until converged, the share
that converged before the work cap. A job without an estimate (every chain
diverged, or the job failed) counts as an infinite error and as diverged; it is never dropped.
Jobs without a known λ (``llc_true`` null) and killed jobs (interrupted or still running: not a
result of the estimator) are left out and counted in the heading line.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from lambda_hat.sweeps.aggregate import widths_of

HEAD = (
    "| class | nets | d range | median | mean | p90 | max | ≤5% | ≤10% | median signed | diverged | 95% CI covers | CI half-width "
    "| median, bias-corrected | FGE per chain | converged |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)
LABELS = {"1k": "~1k params", "10k": "~10k params"}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%" if math.isfinite(x) else "inf"


def _full_rank(row: pd.Series) -> bool | None:
    """Whether the teacher built has full product rank (its rank = the narrowest width)."""
    widths = widths_of(row.get("cfg.model.widths"))
    rank = row.get("true_rank")
    if widths is None or rank is None or pd.isna(rank):
        requested = row.get("cfg.model.true_rank")
        return None if widths is None else (requested is None or pd.isna(requested) or requested == min(widths))
    return int(rank) == min(widths)


def summary_row(label: str, part: pd.DataFrame) -> str:
    """One markdown row of the statistics of rel_error (signed; NaN = no estimate) over part."""
    signed = part["rel_error"].to_numpy(float)
    err = np.where(np.isfinite(signed), np.abs(signed), np.inf)
    finite = signed[np.isfinite(signed)]
    p90 = float(np.quantile(err, 0.9, method="inverted_cdf"))  # an observed value; safe with inf
    d = part["d"].dropna()
    d_range = f"{int(d.min())}–{int(d.max())}" if len(d) else "?"
    return (
        f"| {label} | {len(part)} | {d_range} | {_pct(float(np.median(err)))} | {_pct(float(np.mean(err)))} "
        f"| {_pct(p90)} | {_pct(float(err.max()))} | {np.mean(err <= 0.05):.0%} | {np.mean(err <= 0.10):.0%} "
        f"| {_pct(float(np.median(finite))) if finite.size else 'n/a'} | {int((~np.isfinite(signed)).sum())} "
        f"| {_coverage(part)} | {_corrected(part)} | {_work(part)} |"
    )


def _work(part: pd.DataFrame) -> str:
    """'median FGE per chain | share converged' ('n/a' where no run says)."""
    fge = part["fge_per_chain"].dropna()
    stopped = part["stop_reason"].isin(["converged", "work cap"])
    converged = int((part["stop_reason"] == "converged").sum())
    share = f"{converged / stopped.sum():.0%} ({converged}/{int(stopped.sum())})" if stopped.any() else "n/a"
    return f"{float(fge.median()):,.0f} | {share}" if len(fge) else f"n/a | {share}"


def _corrected(part: pd.DataFrame) -> str:
    err = part["corrected_error"].dropna().abs()
    return _pct(float(err.median())) if len(err) else "n/a"


def _coverage(part: pd.DataFrame) -> str:
    """'covers | median half-width' of the runs with an interval ('n/a | n/a' without any)."""
    with_ci = part[part["ci_half"].notna()]
    if with_ci.empty:
        return "n/a | n/a"
    covers = with_ci["covers"].astype(bool)
    return f"{covers.mean():.0%} ({int(covers.sum())}/{len(with_ci)}) | {_pct(float(with_ci['ci_half'].median()))}"


def _interval(row: pd.Series) -> tuple[bool, float] | None:
    """(covers λ?, half-width / λ) of a row's llc_ci95 (a JSON list in the sweep table), else None."""
    ci, truth = row.get("llc_ci95"), row.get("llc_true")
    if isinstance(ci, str):
        ci = json.loads(ci)
    if ci is None or not isinstance(ci, (list, tuple)) or len(ci) != 2 or truth is None or pd.isna(truth) or not truth:
        return None
    low, high = float(ci[0]), float(ci[1])
    return bool(low <= truth <= high), (high - low) / 2 / abs(float(truth))


def accuracy_frame(df: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """Per job: size class, d, full rank (bool or None), signed relative error (NaN = none) and,
    with ``by``, that column's value (the group)."""
    rows = []
    for _, row in df.iterrows():
        truth = row.get("llc_true")
        if truth is None or pd.isna(truth) or row.get("status") == "killed":
            continue
        rel = row.get("llc_rel_error")
        ok = row.get("status") in ("ok", "some_chains_diverged") and rel is not None and not pd.isna(rel)
        size_class = row.get("cfg.model.size_class")
        interval = _interval(row) if ok else None
        corrected = row.get("llc_bias_corrected")
        corrected = float(corrected) / float(truth) - 1.0 if ok and corrected is not None and not pd.isna(corrected) else math.nan
        fge, warm, chains = (row.get(k) for k in ("n_fge", "n_fge_warmup", "num_chains"))
        known = all(v is not None and not pd.isna(v) for v in (fge, warm, chains)) and chains > 0
        fge_per_chain = (float(fge) + float(warm)) / float(chains) if known else math.nan  # warm-up included
        rows.append(
            {
                "size_class": "all" if size_class is None or pd.isna(size_class) else str(size_class),
                "d": row.get("d"),
                "full_rank": _full_rank(row),
                "rel_error": float(rel) if ok else math.nan,
                "group": None if by is None else row.get(by),
                "covers": None if interval is None else interval[0],
                "ci_half": math.nan if interval is None else interval[1],
                "corrected_error": corrected,
                "fge_per_chain": fge_per_chain,
                "stop_reason": row.get("stop_reason"),
            }
        )
    columns = ["size_class", "d", "full_rank", "rel_error", "group", "covers", "ci_half", "corrected_error", "fge_per_chain", "stop_reason"]
    return pd.DataFrame(rows, columns=columns)


def accuracy_table(df: pd.DataFrame, by: str | None = None) -> str:
    """Markdown: per size class one row for all nets, then full-rank and reduced-rank nets apart;
    with ``by`` (a table column, e.g. cfg.model.generator_seed), then one row per value of it."""
    if by is not None and by not in df.columns:
        raise ValueError(f"--by {by}: no such column in the table (columns: {', '.join(sorted(map(str, df.columns)))[:400]})")
    acc = accuracy_frame(df, by)
    killed = int((df["status"] == "killed").sum()) if "status" in df else 0
    unknown = len(df) - len(acc) - killed
    left_out = [f"{unknown} without a known λ"] * bool(unknown) + [f"{killed} killed or unfinished"] * bool(killed)
    lines = [f"{len(acc)} jobs with a known λ" + (f" ({', '.join(left_out)}: left out)" if left_out else ""), "", HEAD]
    for key in sorted(acc["size_class"].unique(), key=lambda k: (k not in LABELS, list(LABELS).index(k) if k in LABELS else 0, k)):
        part = acc[acc["size_class"] == key]
        lines.append(summary_row(f"**{LABELS.get(key, key)}**", part))
        for label, mask in (("full rank", part["full_rank"] == True), ("reduced rank", part["full_rank"] == False)):  # noqa: E712
            if mask.any():
                lines.append(summary_row(f"… {label}", part[mask]))
        if by is not None:
            name = by.rsplit(".", 1)[-1]
            for value in sorted(part["group"].dropna().unique()):
                lines.append(summary_row(f"… {name} = {value}", part[part["group"] == value]))
    return "\n".join(lines)
