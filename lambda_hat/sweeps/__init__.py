"""Sweep tables: one row per Hydra job folder (lambda_hat.sweeps.aggregate), written at the end of a
multirun by lambda_hat.sweeps.callbacks.AggregateCallback or rebuilt by ``python -m lambda_hat.aggregate``.

This package imports nothing heavy: the callback module is instantiated by Hydra for every run, and
pandas/mlflow are imported only when a table is actually built.
"""

from __future__ import annotations

from typing import Any

__all__ = ["collect_rows", "write_table", "from_mlflow", "finalize_orphan_runs", "summarize", "TABLE_NAME"]


def __getattr__(name: str) -> Any:  # lazy: `from lambda_hat.sweeps import collect_rows`
    if name in __all__:
        from lambda_hat.sweeps import aggregate, mlflow_table, orphans

        return getattr({"from_mlflow": mlflow_table, "finalize_orphan_runs": orphans}.get(name, aggregate), name)
    raise AttributeError(name)
