"""The report's figures (matplotlib, Agg), sized for a paper column (3.4 in) or the page (7 in).

Each function takes the prepared table (lambda_hat.report.runs.prepare) or a table derived from
it and returns a Figure; ``save`` writes it as PNG. One colour and marker per estimator, the same
in every figure (``styles``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

COLUMN_IN = 3.4  # one column of a two-column paper
PAGE_IN = 7.0
RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 6.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "legend.frameon": False,
    "savefig.dpi": 200,
}
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "h", "p")
FLOOR = 1e-4  # |rel. error| drawn at 0.01% at least, so exact hits stay on a log axis


def styles(estimators: Iterable[str]) -> dict[str, dict[str, object]]:
    """estimator -> {"color", "marker"}: fixed by the sorted names, so figures agree."""
    cmap = plt.get_cmap("tab10")
    return {e: {"color": cmap(i % 10), "marker": MARKERS[i % len(MARKERS)]} for i, e in enumerate(sorted(set(estimators)))}


def _log_if_wide(values: np.ndarray, factor: float = 10.0) -> bool:
    v = values[np.isfinite(values) & (values > 0)]
    return len(v) > 0 and v.max() / v.min() > factor


def _plain(ax, axis: str = "both") -> None:
    """Log-axis tick labels as plain numbers (0.1, 1, 10, 1,000) rather than powers of ten, and no
    minor labels (a narrow log range otherwise prints 9.6×10² style labels)."""
    fmt = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    for which in ("x", "y") if axis == "both" else (axis,):
        a = ax.xaxis if which == "x" else ax.yaxis
        if (ax.get_xscale() if which == "x" else ax.get_yscale()) == "log":
            a.set_major_formatter(fmt)
            a.set_minor_formatter(NullFormatter())


def _finish(fig: Figure) -> Figure:
    fig.tight_layout(pad=0.4)
    return fig


def llc_vs_reference(summary: pd.DataFrame, style: dict[str, dict[str, object]], title: str = "") -> Figure:
    """λ̂ (mean ± se over the runs) against the reference λ per target, one marker per estimator,
    and the line y = x. summary: lambda_hat.report.ranking.summary rows of one budget level."""
    d = summary[summary["reference"].notna() & summary["llc_mean"].notna()]
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(COLUMN_IN, COLUMN_IN * 0.9))
        refs = d["reference"].to_numpy(float)
        log = _log_if_wide(np.concatenate([refs, d["llc_mean"].to_numpy(float)]))
        ests = sorted(d["estimator"].unique())
        for i, est in enumerate(ests):
            g = d[d["estimator"] == est]
            # spread the estimators sideways a little, so markers at one target do not hide each other
            shift = 1 + 0.02 * (i - (len(ests) - 1) / 2)
            x = g["reference"].to_numpy(float) * shift
            ax.errorbar(
                x,
                g["llc_mean"],
                yerr=g["llc_se"].fillna(0),
                ls="none",
                capsize=1.5,
                elinewidth=0.8,
                label=est,
                **style[est],
                markersize=3.5,
            )
        lo = 0.8 * float(np.nanmin(np.concatenate([refs, d["llc_mean"].to_numpy(float)]))) if len(d) else 0.1
        hi = 1.2 * float(np.nanmax(np.concatenate([refs, d["llc_mean"].to_numpy(float)]))) if len(d) else 1.0
        lo = max(lo, 1e-3) if log else min(lo, 0.0)
        ax.plot([lo, hi], [lo, hi], color="0.3", lw=0.8, ls="--", label="y = x", zorder=0)
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("reference λ (analytic)")
        ax.set_ylabel("estimated λ̂ (mean ± se over runs)")
        if title:
            ax.set_title(title)
        ax.legend(loc="upper left", ncol=2, handletextpad=0.3, columnspacing=0.8)
        return _finish(fig)


def _frontier(points: np.ndarray) -> np.ndarray:
    """The lower-left Pareto front of (work, error) points, sorted by work."""
    pts = points[np.all(np.isfinite(points), axis=1)]
    pts = pts[np.argsort(pts[:, 0], kind="stable")]
    front, best = [], math.inf
    for w, e in pts:
        if e < best:
            front.append((w, e))
            best = e
    return np.array(front).reshape(-1, 2)


def error_vs_work(df: pd.DataFrame, style: dict[str, dict[str, object]]) -> Figure:
    """|relative error| against work per chain (FGE) and against the estimator's seconds, log-log:
    every run as a faint point; per estimator and budget level the median, joined across levels;
    the black step line is the frontier (the lower-left envelope of those medians, or of the runs
    when there are no budget levels)."""
    d = df[np.isfinite(df["abs_rel_error"].astype(float))].copy()
    d["err"] = d["abs_rel_error"].clip(lower=FLOOR) * 100
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, 2, figsize=(PAGE_IN, 2.9), sharey=True)
        for ax, (col, label) in zip(
            axes, [("fge_per_chain", "work per chain (full-gradient equivalents)"), ("seconds", "estimator time per run (s, warm-up + sampling)")]
        ):
            medians = []
            for est in sorted(d["estimator"].unique()):
                g = d[(d["estimator"] == est) & (d[col] > 0)]
                if not len(g):
                    continue
                ax.scatter(g[col], g["err"], s=7, alpha=0.3, color=style[est]["color"], marker=style[est]["marker"], linewidths=0)
                if g["budget"].notna().any():
                    m = g.groupby("budget")[[col, "err"]].median().sort_values(col)
                else:
                    m = g[[col, "err"]].median().to_frame().T
                ax.plot(m[col], m["err"], label=est, **style[est], markersize=4, markeredgecolor="white", markeredgewidth=0.4)
                medians.append(m[[col, "err"]].to_numpy(float))
            pts = np.concatenate(medians) if medians and d["budget"].notna().any() else d[[col, "err"]].to_numpy(float)
            front = _frontier(pts)
            if len(front):
                ax.step(front[:, 0], front[:, 1], where="post", color="black", lw=0.9, ls=":", label="frontier")
            ax.set_xscale("log")
            ax.set_yscale("log")
            _plain(ax)
            if col == "fge_per_chain" and d["budget"].notna().any():  # tick the budget levels
                levels = d.groupby("budget")[col].median().sort_values().to_numpy(float)
                ax.set_xticks(levels, [f"{v:,.0f}" for v in levels])
            ax.set_xlabel(label)
        axes[0].set_ylabel("|λ̂ / λ − 1| (%)")
        axes[0].legend(loc="lower left", ncol=2, handletextpad=0.3, columnspacing=0.8)
        fig.suptitle("Accuracy against cost (points: runs; lines: medians per budget level)", fontsize=8)
        return _finish(fig)


def running_llc(curves: dict[str, pd.DataFrame], reference: float, target: str, style: dict[str, dict[str, object]]) -> Figure:
    """Running λ̂ (kept draws so far, chains pooled) against work per chain, one line per estimator
    on one target, the reference λ marked. curves: estimator -> (fge, llc) from traces.running_llc."""
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(COLUMN_IN, 3.1))
        for est, c in sorted(curves.items()):
            if len(c):
                ax.plot(c["fge"], c["llc"], label=est, color=style[est]["color"], lw=1.0)
        if reference == reference:
            ax.axhline(reference, color="black", ls="--", lw=0.8, label=f"reference λ = {reference:g}")
        ax.set_xscale("log")
        _plain(ax, "x")
        ax.set_xlabel("work per chain (full-gradient equivalents)")
        ax.set_ylabel("running λ̂ (mean of kept draws)")
        ax.set_title(target)
        if reference == reference:
            # the range the curves settle in (their last 80%), so early transients do not flatten them
            tails = [c["llc"].to_numpy(float)[len(c) // 5 :] for c in curves.values() if len(c)]
            vals = np.concatenate(tails or [np.array([reference])])
            spread = max(float(np.nanmax(np.abs(vals - reference))), 0.05 * abs(reference))
            ax.set_ylim(reference - 1.3 * spread, reference + 1.3 * spread)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, handletextpad=0.3, columnspacing=0.8)
        return _finish(fig)


def leaderboard(board: pd.DataFrame, style: dict[str, dict[str, object]], level: float = 0.9) -> Figure:
    """Median |relative error| (bootstrap interval) against median work per chain, one line per
    estimator across the budget levels, and the frontier over all of them."""
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(COLUMN_IN, 3.3))
        pts = []
        for est in sorted(board["estimator"].unique()):
            g = board[board["estimator"] == est].sort_values("fge_per_chain")
            y = g["median_abs_rel_error"].clip(lower=FLOOR).to_numpy(float) * 100
            lo = np.clip(y - g["ci_low"].clip(lower=FLOOR).to_numpy(float) * 100, 0, None)
            hi = np.clip(g["ci_high"].clip(lower=FLOOR).to_numpy(float) * 100 - y, 0, None)
            finite = np.isfinite(y)
            yerr = np.nan_to_num(np.vstack([lo, hi]), nan=0.0, posinf=0.0)[:, finite]
            ax.errorbar(
                g["fge_per_chain"].to_numpy(float)[finite],
                y[finite],
                yerr=yerr,
                label=est,
                capsize=1.5,
                elinewidth=0.7,
                **style[est],
                markersize=3.5,
            )
            pts.append(np.column_stack([g["fge_per_chain"].to_numpy(float), y]))
        front = _frontier(np.concatenate(pts)) if pts else np.empty((0, 2))
        if len(front):
            ax.step(front[:, 0], front[:, 1], where="post", color="black", lw=0.9, ls=":", label="frontier")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain(ax)
        levels = board.groupby("budget")["fge_per_chain"].median().sort_values().to_numpy(float)
        ax.set_xticks(levels, [f"{v:,.0f}" for v in levels])  # the budget levels themselves
        ax.set_xlabel("work per chain (full-gradient equivalents)")
        ax.set_ylabel(f"median |λ̂ / λ − 1| (%, {level:.0%} CI)")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, handletextpad=0.3, columnspacing=0.8)
        return _finish(fig)


def pareto_front(trials: pd.DataFrame, front_numbers: set[int]) -> Figure:
    """An Optuna two-objective study: error against work for every completed trial, the Pareto
    front joined. trials: study.trials_dataframe() (values_0 = error, values_1 = FGE)."""
    d = trials[(trials.get("state", "COMPLETE") == "COMPLETE")].dropna(subset=["values_0", "values_1"])
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.6))
        on = d["number"].isin(front_numbers)
        ax.scatter(d.loc[~on, "values_1"], d.loc[~on, "values_0"].clip(lower=FLOOR), s=10, color="0.6", label="trials")
        f = d[on].sort_values("values_1")
        ax.plot(f["values_1"], f["values_0"].clip(lower=FLOOR), "o-", color="tab:red", markersize=4, label="Pareto front")
        ax.set_xscale("log")
        if _log_if_wide(d["values_0"].to_numpy(float)):
            ax.set_yscale("log")
        ax.set_xlabel("work (full-gradient equivalents, all chains)")
        ax.set_ylabel("objective: error vs reference λ")
        ax.legend(loc="best")
        return _finish(fig)


def llc_over_training(rows: pd.DataFrame, title: str = "") -> Figure:
    """λ̂ ± 1.96 se against the training step of each checkpoint (one sweep job each), with the
    train and test loss on a second axis where the checkpoints recorded them."""
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(PAGE_IN / 1.4, 3.2))
        step = rows["training_step"].to_numpy(float)
        llc = rows["llc_mean"].to_numpy(float)
        se = rows["llc_sem"].to_numpy(float) if "llc_sem" in rows else np.zeros_like(llc)
        ax.errorbar(step, llc, yerr=1.96 * np.nan_to_num(se), color="C0", marker="o", capsize=2, label="λ̂ ± 1.96 se")
        ax.set_xlabel("training step")
        ax.set_ylabel("λ̂", color="C0")
        if len(step) > 1 and step.min() > 0 and step.max() / step.min() > 30:
            ax.set_xscale("log")
            _plain(ax, "x")
        losses = [(c, col) for c, col in (("train_loss", "C1"), ("test_loss", "C2")) if c in rows and rows[c].notna().any()]
        handles, labels = ax.get_legend_handles_labels()
        if losses:
            ax2 = ax.twinx()
            ax2.grid(False)
            for name, colour in losses:
                ax2.plot(step, rows[name].to_numpy(float), color=colour, ls="--", marker=".", label=name.replace("_", " "))
            values = np.concatenate([rows[n].to_numpy(float) for n, _ in losses])
            if _log_if_wide(values):
                ax2.set_yscale("log")
            ax2.set_ylabel("loss")
            h2, l2 = ax2.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3)
        ax.set_title(title or "λ̂ over training")
        return _finish(fig)


def save(fig: Figure, path: Path) -> Path:
    """PNG, written to a temporary name and renamed (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def calibration(verdicts: pd.DataFrame, recommended: dict | None, traces: dict[float, pd.DataFrame]) -> Figure:
    """A calibration sweep (lambda_hat.sweeps.calibration): λ̂ ± 1.96 se and MALA acceptance
    against the step, one line per (nβ, γ) — healthy settings filled, the others hollow, the flat
    region thick, the recommendation starred — and, at the recommended (nβ, γ), each step's loss
    trace as nβ(L − L_n(w*)) averaged over chains (below 0 = below L_n(w*))."""
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, 3, figsize=(PAGE_IN * 1.3, 2.8))
        groups = list(verdicts.groupby(["beta0", "gamma"], sort=True))
        for i, ((_, gamma), g) in enumerate(groups):
            colour = plt.get_cmap("tab10")(i % 10)
            label = f"nβ {g['nbeta'].iloc[0]:,.4g}" + (f", γ {gamma:g}" if verdicts["gamma"].nunique() > 1 else "")
            ok = g["verdict"] == "healthy"
            for ax, col in ((axes[0], "llc_mean"), (axes[1], "mala_accept")):
                ax.plot(g["step_size"], g[col], color=colour, lw=0.8, label=label if ax is axes[0] else None)
                ax.plot(g.loc[g["flat"], "step_size"], g.loc[g["flat"], col], color=colour, lw=2.5, alpha=0.5)
                ax.scatter(g.loc[ok, "step_size"], g.loc[ok, col], color=colour, s=14, zorder=3)
                ax.scatter(g.loc[~ok, "step_size"], g.loc[~ok, col], facecolors="none", edgecolors=colour, s=14, zorder=3)
            axes[0].errorbar(
                g["step_size"], g["llc_mean"], yerr=1.96 * np.nan_to_num(g["llc_sem"].to_numpy(float)), fmt="none", ecolor=colour, capsize=1.5, lw=0.6
            )
        if recommended is not None:
            for ax, col in ((axes[0], "llc_mean"), (axes[1], "mala_accept")):
                ax.scatter(
                    [recommended["step_size"]], [recommended[col]], marker="*", s=90, color="k", zorder=4, label="recommended" if ax is axes[0] else None
                )
        finite = verdicts["llc_mean"].to_numpy(float)
        finite = finite[np.isfinite(finite)]
        if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 30:
            axes[0].set_yscale("log")
        axes[1].axhspan(0.9, 0.98, color="0.85", alpha=0.5, lw=0)
        axes[1].set_ylim(-0.02, 1.02)
        for ax, ylabel in ((axes[0], "λ̂ ± 1.96 se"), (axes[1], "MALA acceptance")):
            ax.set_xscale("log")
            ax.set_xlabel("step size ε")
            ax.set_ylabel(ylabel)
        axes[0].legend(loc="best")
        cmap = plt.get_cmap("viridis")
        steps = sorted(traces)
        for j, step in enumerate(steps):
            t = traces[step]
            per_draw = t.groupby("step", sort=True)["llc"].mean()
            blocks = max(1, len(per_draw) // 100)  # block means: readable lines, same shape
            smooth = per_draw.rolling(blocks, min_periods=1).mean().iloc[::blocks]
            axes[2].plot(smooth.index, smooth.to_numpy(), color=cmap(j / max(1, len(steps) - 1)), lw=0.8, label=f"ε {step:.2g}")
        axes[2].axhline(0.0, color="k", lw=0.6, ls="--")
        axes[2].set_xlabel("step")
        axes[2].set_ylabel("nβ(L − L_n(w*)), chain mean")
        if steps:
            axes[2].legend(loc="best", ncol=2)
            values = np.concatenate([traces[s].groupby("step")["llc"].mean().to_numpy(float) for s in steps])
            values = values[np.isfinite(values)]
            if len(values):  # one runaway step must not flatten the others
                lo, hi = np.percentile(values, [1, 99])
                axes[2].set_ylim(min(lo, 0.0) - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        axes[2].set_title("loss traces" + (f" at nβ {recommended['nbeta']:,.4g}" if recommended else ""))
        return _finish(fig)
