"""A sampler comparison printed from a sweep's table (``python -m lambda_hat.aggregate DIR --compare``).

Rows are grouped by target (``target_id``, the posterior's nβ and γ): only estimates of the same
λ are compared. Per group, one row per job:

  λ̂ ± se        pooled mean over healthy chains ± its Monte Carlo standard error (sd/√ESS)
  rel. error    λ̂ / λ − 1 against the target's known local λ (– when unknown)
  max |z| (vs)  the largest |λ̂_i − λ̂_j| / √(se_i² + se_j²) over the group's other rows, and which
  ESS bulk, ESS/FGE, ESS/s, R-hat   as in metrics.json (FGE and seconds include warm-up/burn-in)
  FGE/chain     full-gradient equivalents one chain spent, warm-up included
  health        ok, or the health warnings' subjects (r_hat, ess_bulk, mala_accept, chains) and the
                sampler's own signals (MALA / HMC acceptance, divergences, NUTS depth)

With several groups (seeds draw different teachers, several DLNs) a last table summarises each
sampler over them: median and worst |rel. error|, median ESS/FGE and ESS/s, worst R-hat, groups
with a health warning.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from lambda_hat.sweeps.aggregate import varying_overrides


def _names_sampler(key: str) -> bool:
    """An override that only says which sampler a row is (shown in its own column): sampler=..., or a
    per-sampler experiment entry such as +experiment/samplers_compared@_global_=hmc."""
    return key == "sampler" or (key.lstrip("+").startswith("experiment") and key.endswith("@_global_"))


def _num(value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return math.nan
    return x


def _fmt(value: Any, spec: str) -> str:
    x = _num(value)
    return format(x, spec) if math.isfinite(x) else "–"


def _warnings(row: pd.Series) -> list[str]:
    try:
        items = json.loads(row.get("warnings") or "[]")
    except (TypeError, ValueError):
        return []
    return [str(w).split(" ")[0] for w in items] if isinstance(items, list) else []


def health(row: pd.Series) -> str:
    """The row's health in a few words (see the module docstring)."""
    if row.get("status") in ("failed", "killed"):
        return f"{row.get('status')}: {row.get('error') or ''}".strip()
    parts = []
    if math.isfinite(_num(row.get("mala_accept"))):
        parts.append(f"MALA {_num(row['mala_accept']):.2f}")
    if math.isfinite(_num(row.get("acceptance_rate"))):
        parts.append(f"accept {_num(row['acceptance_rate']):.2f}")
    if _num(row.get("num_divergent")) > 0:
        parts.append(f"{int(_num(row['num_divergent']))} divergent")
    if math.isfinite(_num(row.get("tree_depth"))):
        parts.append(f"depth {_num(row['tree_depth']):.1f}")
    warned = _warnings(row)
    parts.append("warnings: " + ", ".join(warned) if warned else "ok")
    return "; ".join(parts)


def _z(a: pd.Series, b: pd.Series) -> float:
    den = math.hypot(_num(a.get("llc_sem")), _num(b.get("llc_sem")))
    diff = abs(_num(a.get("llc_mean")) - _num(b.get("llc_mean")))
    return diff / den if den > 0 else math.nan


def _labels(group: pd.DataFrame) -> list[str]:
    """sampler, plus the overrides that tell this row from the group's others (bar the sampler's)."""
    varying = varying_overrides(group) if len(group) > 1 else [""] * len(group)
    out = []
    for sampler, extra in zip(group["sampler"], varying):
        rest = [o for o in extra.split() if not _names_sampler(o.split("=", 1)[0])]
        out.append(" ".join([f"`{sampler}`", *rest]))
    return out


def _group_title(row: pd.Series) -> str:
    widths = row.get("cfg.model.widths")
    model = f"{row.get('model')} {widths}" if isinstance(widths, str) else str(row.get("model"))
    rank = row.get("true_rank")
    parts = [model + (f" rank {int(_num(rank))}" if math.isfinite(_num(rank)) else "")]
    parts.append(f"d = {_fmt(row.get('d'), '.0f')}, n = {_fmt(row.get('n'), '.0f')}")
    parts.append(f"nβ = {_fmt(row.get('nbeta'), '.4g')}, γ = {_fmt(row.get('gamma'), 'g')}")
    truth = _num(row.get("llc_true"))
    parts.append(f"true λ = {truth:g}" if math.isfinite(truth) else "true λ unknown")
    parts.append(f"target {row.get('target_id')}")
    return ", ".join(parts)


HEAD = ("sampler", "λ̂ ± se", "rel. error", "max \\|z\\| (vs)", "ESS bulk", "ESS/FGE", "ESS/s", "R-hat", "FGE/chain", "health")


def _group_table(group: pd.DataFrame) -> list[str]:
    labels = _labels(group)
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    rows = [r for _, r in group.iterrows()]
    for i, r in enumerate(rows):
        best, who = math.nan, ""
        for j, o in enumerate(rows):
            z = _z(r, o) if i != j else math.nan
            if math.isfinite(z) and not z <= best:
                best, who = z, labels[j].split(" ")[0]
        est = _num(r.get("llc_mean"))
        chains = _num(r.get("num_chains"))
        work = (_num(r.get("n_fge")) + _num(r.get("n_fge_warmup"))) / chains if chains > 0 else math.nan
        rel = _num(r.get("llc_rel_error"))
        cells = [
            labels[i],
            f"{est:.3f} ± {_fmt(r.get('llc_sem'), '.3f')}" if math.isfinite(est) else "n/a",
            f"{100 * rel:+.1f}%" if math.isfinite(rel) else "–",
            f"{best:.1f} ({who})" if math.isfinite(best) else "–",
            _fmt(r.get("ess_bulk"), ".0f"),
            _fmt(r.get("ess_per_fge"), ".2e"),
            _fmt(r.get("ess_per_s"), ".3g"),
            _fmt(r.get("r_hat"), ".3f"),
            _fmt(work, ",.0f"),
            health(r).replace("|", "/"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _summary(df: pd.DataFrame, groups: int) -> list[str]:
    head = ("sampler", "runs", "median \\|rel. error\\|", "worst rel. error", "median ESS/FGE", "median ESS/s", "worst R-hat", "runs with warnings")
    lines = [f"Per sampler over the {groups} targets:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sampler, rows in df.groupby("sampler", sort=False):
        rel = pd.to_numeric(rows.get("llc_rel_error"), errors="coerce")
        worst = rel.loc[rel.abs().idxmax()] if rel.notna().any() else math.nan
        warned = sum(1 for _, r in rows.iterrows() if _warnings(r) or r.get("status") in ("failed", "killed"))
        cells = [
            f"`{sampler}`",
            str(len(rows)),
            f"{100 * rel.abs().median():.1f}%" if rel.notna().any() else "–",
            f"{100 * worst:+.1f}%" if math.isfinite(worst) else "–",
            _fmt(pd.to_numeric(rows.get("ess_per_fge"), errors="coerce").median(), ".2e"),
            _fmt(pd.to_numeric(rows.get("ess_per_s"), errors="coerce").median(), ".3g"),
            _fmt(pd.to_numeric(rows.get("r_hat"), errors="coerce").max(), ".3f"),
            str(warned),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def compare_table(df: pd.DataFrame) -> str:
    """Markdown: one table per target (see the module docstring), then a per-sampler summary."""
    if not len(df):
        return "(no runs)"
    df = df.copy()
    for col in ("target_id", "nbeta", "gamma", "sampler", "job_num", "error"):
        if col not in df:
            df[col] = None
    ran = df["target_id"].notna()
    # nβ to 6 digits: a float32 run stores it rounded to float32, a float64 run of the same target does not
    keys = [f"{t}|{_num(b):.6g}|{_num(g):.6g}" for t, b, g in zip(df[ran]["target_id"], df[ran]["nbeta"], df[ran]["gamma"])]
    out: list[str] = []
    groups = 0
    for _, group in df[ran].groupby(pd.Series(keys, index=df[ran].index), sort=False):
        groups += 1
        out += [f"**{_group_title(group.iloc[0])}**", "", *_group_table(group), ""]
    if groups > 1:
        out += [*_summary(df[ran], groups), ""]
    if (~ran).any():  # no metrics.json: the job failed before its estimate, or was killed
        out.append("Jobs without an estimate:")
        for _, r in df[~ran].iterrows():
            num = "" if pd.isna(r["job_num"]) else f"#{int(r['job_num'])} "
            out.append(f"- {num}`{r['sampler']}` {r.get('status')}: {r['error'] or ''}".rstrip())
    return "\n".join(out).rstrip()
