"""Assemble a report folder from a runs table: figures (PNG), report.md, index.html and the two
tables as CSV (summary.csv, leaderboard.csv). Everything comes from the table and the runs'
trace.parquet files, so a report can be rebuilt at any time without rerunning anything."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd
import yaml

from lambda_hat.report import figures, page, ranking, runs, traces
from lambda_hat.sweeps import calibration, checkpoints

log = logging.getLogger(__name__)

TRIALS_FILE = "trials.parquet"  # written by lambda_hat.sweeps.optuna_sweeper
RESULTS_FILE = "optimization_results.yaml"


def pick_target(df: pd.DataFrame, wanted: str | None = None) -> str | None:
    """The target of the running-λ̂ figure: the one asked for, else the one most estimators ran on
    (ties: the first by name) among targets with a reference λ."""
    d = df[df["reference"].notna()] if df["reference"].notna().any() else df
    if not len(d):
        return None
    if wanted is not None:
        if wanted not in set(df["target"]):
            raise runs.ReportInputError(f"--target {wanted!r}: not a target of these runs; there are: {', '.join(sorted(set(df['target'])))}")
        return wanted
    counts = d.groupby("target")["estimator"].nunique()
    return str(sorted(counts.index, key=lambda t: (-counts[t], t))[0])


def running_curves(df: pd.DataFrame, target: str, budget: str | None, download_dir: Path | None) -> dict[str, pd.DataFrame]:
    """estimator -> running λ̂ curve of one of its runs on target (at budget if given; the lowest
    seed among runs that finished)."""
    d = df[(df["target"] == target) & df["status"].isin(runs.OK_STATUSES)]
    if budget is not None:
        d = d[d["budget"] == budget]
    curves = {}
    for est, g in d.groupby("estimator"):
        if "seed" in g:
            g = g.sort_values("seed", kind="stable")
        for _, row in g.iterrows():
            path = traces.find_trace(row, download_dir)
            if path is not None:
                curves[str(est)] = traces.running_llc(pd.read_parquet(path), row)
                break
    return curves


def optuna_front(sweep_dirs: list[Path]) -> tuple[pd.DataFrame, set[int]] | None:
    """The trials of a two-objective Optuna study in the first folder holding one, and the trial
    numbers of its Pareto front; None when there is none."""
    for d in sweep_dirs:
        trials_path, results_path = d / TRIALS_FILE, d / RESULTS_FILE
        if not trials_path.is_file():
            continue
        trials = pd.read_parquet(trials_path)
        if "values_1" not in trials:
            continue
        try:
            results = yaml.safe_load(results_path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            results = {}
        front = {int(s["trial"]) for s in results.get("solutions") or [] if "trial" in s}
        return trials, front
    return None


def build(
    table: pd.DataFrame,
    out: Path,
    *,
    source: str,
    sweep_dirs: list[Path] | None = None,
    target: str | None = None,
    level: float = 0.9,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the report into out (created); returns name -> path of what was written."""
    out.mkdir(parents=True, exist_ok=True)
    df = runs.prepare(table)
    budgets = runs.budget_order(df)
    top_budget = budgets[-1] if budgets else None
    summary = ranking.summary(df)
    board = ranking.leaderboard(df, level=level, seed=seed)
    style = figures.styles(df["estimator"])
    written: dict[str, Path] = {}
    sections: list[page.Section] = []
    counts = df["status"].value_counts().to_dict() if "status" in df else {}

    if len(board) and board["budget"].nunique() > 1:
        written["leaderboard.png"] = figures.save(figures.leaderboard(board, style, level), out / "leaderboard.png")
    if len(board):
        sections.append(
            page.Section(
                "Leaderboard",
                f"Estimators ranked by the median of |λ̂/λ − 1| over all runs at each budget level "
                f"(targets × seeds; a failed run counts as an infinite error), {level:.0%} percentile-bootstrap "
                "interval of the median. Work is full-gradient equivalents (FGE) per chain, warm-up included; "
                "seconds are the estimator's warm-up + sampling time.",
                page.leaderboard_display(board, level),
                written.get("leaderboard.png"),
            )
        )
    ref_rows = summary[summary["budget"] == top_budget] if top_budget is not None and "budget" in summary else summary
    if len(ref_rows) and ref_rows["reference"].notna().any():
        title = f"budget {top_budget}" if top_budget else ""
        written["llc_vs_reference.png"] = figures.save(figures.llc_vs_reference(ref_rows, style, title), out / "llc_vs_reference.png")
        sections.append(
            page.Section(
                "λ̂ against the reference λ",
                "Mean over runs ± standard error" + (f", budget level {top_budget}." if top_budget else "."),
                None,
                written["llc_vs_reference.png"],
            )
        )
    if df["abs_rel_error"].notna().any():
        written["error_vs_work.png"] = figures.save(figures.error_vs_work(df, style), out / "error_vs_work.png")
        sections.append(page.Section("Accuracy against cost", "", None, written["error_vs_work.png"]))
    chosen = pick_target(df, target)
    if chosen is not None:
        curves = running_curves(df, chosen, top_budget, out / ".traces")
        if curves:
            ref = df.loc[df["target"] == chosen, "reference"].dropna()
            written["running_llc.png"] = figures.save(
                figures.running_llc(curves, float(ref.iloc[0]) if len(ref) else math.nan, chosen, style), out / "running_llc.png"
            )
            sections.append(
                page.Section(
                    f"Running λ̂ on {chosen}",
                    "One run per estimator (lowest seed" + (f", budget {top_budget}" if top_budget else "") + "); chains pooled, burn-in excluded.",
                    None,
                    written["running_llc.png"],
                )
            )
    over_training = checkpoints.curve(table)
    if over_training is not None:
        for model, rows in over_training.groupby(over_training["model"] if "model" in over_training else 0):
            name = f"llc_over_training_{model}.png" if over_training["model"].nunique() > 1 else "llc_over_training.png"
            written[name] = figures.save(figures.llc_over_training(rows, f"λ̂ over training: {model}"), out / name)
            sections.append(
                page.Section(
                    f"λ̂ over training: {model}",
                    "One run per checkpoint with the same sampler setting; λ̂ ± 1.96 standard errors against the "
                    "checkpoint's training step, and the losses it recorded.",
                    None,
                    written[name],
                )
            )
    calibrated = calibration.write_report(out, table)
    if calibrated is not None:
        written.update(calibrated.paths)
        sections.append(
            page.Section(
                "Calibration",
                f"{calibrated.summary_line()}. Verdicts and rules: calibration.md.",
                calibration.display(calibrated.verdicts),
                calibrated.paths["calibration.png"],
            )
        )
    front = optuna_front(sweep_dirs or [])
    if front is not None:
        written["pareto_front.png"] = figures.save(figures.pareto_front(*front), out / "pareto_front.png")
        sections.append(
            page.Section(
                "Optuna: Pareto front",
                "Error against work of every completed trial; the front from optimization_results.yaml.",
                None,
                written["pareto_front.png"],
            )
        )
    sections.append(page.Section("Summary per estimator and target", "", page.summary_display(summary)))

    summary.to_csv(out / "summary.csv", index=False)
    written["summary.csv"] = out / "summary.csv"
    if len(board):
        board.to_csv(out / "leaderboard.csv", index=False)
        written["leaderboard.csv"] = out / "leaderboard.csv"
    intro = f"{len(df)} runs from {source}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + "."
    title = "lambda_hat report"
    written["report.md"] = page.write_markdown(out / "report.md", title, intro, sections)
    written["index.html"] = page.write_html(out / "index.html", title, intro, sections)
    return written
