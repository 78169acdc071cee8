"""The runs a report is built from: a sweep table (llc_runs.parquet, or rebuilt from job folders, or
an MLflow experiment) with the columns every figure and table of the report reads.

Derived columns (added by ``prepare``):

* ``estimator``: the sampler / VI method name (``sampler`` column, else ``estimator``);
* ``family``: minibatch / full_batch / variational (from the run; "unknown" if absent);
* ``target``: a readable target label, e.g. ``DLN [5,8,6,4] r3`` (the architecture: seeds that draw
  different teachers of one architecture share a label, and a DLN's λ depends only on it);
* ``reference``: the λ a run is compared with: the analytic ``llc_true``, else the reference λ the
  Optuna objective used (``objective.json`` in the job folder), else NaN;
* ``rel_error`` = λ̂ / reference − 1 and ``abs_rel_error`` (inf for a run without an estimate, so a
  failure ranks last rather than disappearing);
* ``fge_per_chain``: (n_fge + n_fge_warmup) / num_chains, the work one chain spent, warm-up included;
* ``seconds``: the estimator's own time (warm-up + sampling; no compilation, imports or target);
* ``budget``: the row's budget level, a label of its ``budget.fge_per_chain`` (the sweep table's
  ``cfg.budget.fge_per_chain``, e.g. "3,000 FGE"), else None.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lambda_hat.sweeps import aggregate, mlflow_table

OK_STATUSES = ("ok", "some_chains_diverged")
BUDGET_COLUMN = "cfg.budget.fge_per_chain"  # the run's budget.fge_per_chain (lambda_hat/budget.py)


class ReportInputError(ValueError):
    """The report has nothing to read (the message is one line)."""


def load_dirs(dirs: list[Path]) -> pd.DataFrame:
    """The runs of one or more sweep folders: each folder's llc_runs.parquet when it has one (the
    table the sweep wrote), else a table rebuilt from its job folders."""
    frames = []
    for d in dirs:
        if not d.is_dir():
            raise ReportInputError(f"{d}: no such folder")
        table = d / aggregate.TABLE_NAME
        df = pd.read_parquet(table) if table.is_file() else aggregate.collect_rows(d)
        if not len(df):
            raise ReportInputError(f"{d}: no {aggregate.TABLE_NAME} and no job folders (.hydra/config.yaml) under it")
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def load_mlflow(experiment: str, tracking_uri: str | None) -> pd.DataFrame:
    """The runs of an MLflow experiment (the sweep parents left out: they hold no estimate)."""
    df = mlflow_table.from_mlflow(experiment, tracking_uri)
    if "llc_mean" not in df:
        raise ReportInputError(f"experiment {experiment!r} has no runs with an estimate (llc_mean)")
    return df[df["llc_mean"].notna() | df["status"].isin(["failed", "killed"])].reset_index(drop=True)


def _num(df: pd.DataFrame, col: str) -> pd.Series:
    if col not in df:
        return pd.Series(np.nan, index=df.index, dtype="float64")
    return pd.to_numeric(df[col], errors="coerce").astype("float64")


def target_label(row: pd.Series) -> str:
    """ "DLN [5,8,6,4] r3" / "DLN [10,20,20,10]" (full rank) / the model name for other targets."""
    model = str(row.get("model") or row.get("cfg.model.name") or "target")
    widths = aggregate.widths_of(row.get("cfg.model.widths"))
    if model == "dln" and widths:
        rank = row.get("cfg.model.true_rank")
        rank_txt = "" if pd.isna(rank) or int(rank) >= min(widths) else f" r{int(rank)}"
        teacher = row.get("cfg.model.teacher")
        extra = f" ({teacher})" if isinstance(teacher, str) and teacher != "top" else ""
        return f"DLN [{','.join(map(str, widths))}]{rank_txt}{extra}"
    if widths:
        return f"{model.upper()} [{','.join(map(str, widths))}]"
    return model


def _objective_reference(output_dir: Any) -> float:
    if not isinstance(output_dir, str):
        return math.nan
    try:
        ref = json.loads((Path(output_dir) / "objective.json").read_text()).get("reference") or {}
        return float(ref["llc"])
    except (OSError, ValueError, KeyError, TypeError):
        return math.nan


def budget_label(fge_per_chain: Any) -> str | None:
    """The budget level of a run with this budget.fge_per_chain ("3,000 FGE"), else None."""
    try:
        value = float(fge_per_chain)
    except (TypeError, ValueError):
        return None
    return f"{value:,.12g} FGE" if math.isfinite(value) else None


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """The table with the report's derived columns (see the module docstring)."""
    df = df.copy()
    name = df["sampler"] if "sampler" in df else pd.Series(None, index=df.index, dtype=object)
    if "estimator" in df:
        name = name.where(name.notna(), df["estimator"])
    df["estimator"] = name.fillna("unknown").astype(str)
    df["family"] = df["family"].fillna("unknown").astype(str) if "family" in df else "unknown"
    df["target"] = [target_label(r) for _, r in df.iterrows()]
    ref = _num(df, "llc_true")
    missing = ref.isna()
    if missing.any() and "output_dir" in df:
        ref[missing] = [_objective_reference(p) for p in df.loc[missing, "output_dir"]]
    df["reference"] = ref
    est = _num(df, "llc_mean")
    ok = df["status"].isin(OK_STATUSES) if "status" in df else pd.Series(True, index=df.index)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = est / df["reference"] - 1.0
    df["rel_error"] = rel.where(ok & est.notna())
    df["abs_rel_error"] = df["rel_error"].abs().where(ok & est.notna(), np.inf).where(df["reference"].notna())
    chains = _num(df, "num_chains").fillna(_num(df, "cfg.sampler.num_chains"))
    df["fge_per_chain"] = (_num(df, "n_fge") + _num(df, "n_fge_warmup").fillna(0.0)) / chains
    df["seconds"] = _num(df, "sampling_time_s") + _num(df, "warmup_time_s").fillna(0.0)
    df["budget"] = pd.Series([budget_label(v) for v in _num(df, BUDGET_COLUMN)], index=df.index, dtype=object)
    return df


def budget_order(df: pd.DataFrame) -> list[str]:
    """Budget levels, cheapest first (by their budget.fge_per_chain; else by the median work their
    rows spent)."""
    if "budget" not in df or df["budget"].isna().all():
        return []
    d = df.dropna(subset=["budget"])
    size = _num(d, BUDGET_COLUMN).fillna(d["fge_per_chain"] if "fge_per_chain" in d else np.nan)
    return list(size.groupby(d["budget"]).median().sort_values(kind="stable").index)
