"""Rows -> the sweep table's DataFrame: a stable column order and one parquet-safe type per column.

Shared by the table of job folders (lambda_hat.sweeps.aggregate) and the table of MLflow runs
(lambda_hat.sweeps.mlflow_table), so both come out with the same columns, order and types.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pandas as pd

MAIN_METRICS = ("llc_mean", "llc_sem", "llc_true", "llc_rel_error")
LEAD = ("job_num", "status", "error", "overrides", "sampler", "model")
TAIL = (
    "overrides_json",
    "override_dirname",
    "output_dir",
    "sweep_dir",
    "mlflow_run_id",
    "mlflow_tracking_uri",
    "mlflow_status",
)
# Bookkeeping columns: a metric of this name is stored as metrics.<name>.
RESERVED = frozenset({*LEAD, *TAIL}) - {"sampler", "model"}


def to_json(value: Any) -> str:
    return json.dumps(value, default=str)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "num"
    return "str" if isinstance(value, str) else "other"


def isnull(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or value is pd.NA


def _order(columns: Iterable[str], metric_names: set[str]) -> list[str]:
    cols = list(columns)
    lead = [c for c in LEAD if c in cols]
    main = [c for c in MAIN_METRICS if c in cols]
    tail = [c for c in TAIL if c in cols]
    taken = {*lead, *main, *tail}
    metrics = sorted(c for c in cols if c in metric_names and c not in taken)
    cfg = sorted(c for c in cols if c.startswith("cfg.") and c not in taken)
    rest = [c for c in cols if c not in taken and c not in metrics and c not in cfg]
    return [*lead, *main, *metrics, *rest, *cfg, *tail]


def typed(col: str, values: list[Any], index: pd.Index) -> pd.Series:
    """One column with one type: ints (nullable Int64 if some are missing), floats, bools (nullable
    "boolean" if some are missing), strings; anything mixed becomes strings (JSON for non-strings)."""
    values = [None if isnull(v) else v for v in values]
    present = [v for v in values if v is not None]
    kinds = {_kind(v) for v in present}
    missing = len(present) < len(values)
    if col == "job_num" or (kinds == {"num"} and all(isinstance(v, int) for v in present) and present):
        return pd.Series(values, index=index, dtype="Int64" if missing or not present else "int64")
    if not present:
        return pd.Series(values, index=index, dtype=object)
    if all(isinstance(v, pd.Timestamp) for v in present):
        return pd.Series(pd.to_datetime(values, utc=True), index=index)
    if kinds == {"num"}:
        return pd.Series([float("nan") if v is None else float(v) for v in values], index=index, dtype="float64")
    if kinds == {"bool"}:
        return pd.Series(values, index=index, dtype="boolean" if missing else "bool")
    if kinds != {"str"}:
        values = [v if v is None or isinstance(v, str) else to_json(v) for v in values]
    return pd.Series(values, index=index, dtype=object).infer_objects()


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> a DataFrame with stable column order and parquet-safe column types."""
    metric_names = {k for r in rows for k in r if not k.startswith("cfg.") and k not in RESERVED}
    columns: dict[str, None] = {}
    for r in rows:
        columns.update(dict.fromkeys(r))
    for c in TAIL + LEAD:
        columns.setdefault(c, None)
    order = _order(columns, metric_names)
    index = pd.RangeIndex(len(rows))
    return pd.DataFrame({c: typed(c, [r.get(c) for r in rows], index) for c in order}, index=index)
