"""One table of a sweep's jobs: a row per Hydra job folder, written as parquet (the same table from
an MLflow experiment's runs: lambda_hat.sweeps.mlflow_table).

A job folder is any folder holding ``.hydra/config.yaml``; ``collect_rows(root)`` finds them all
under root (one sweep, a folder of sweeps, or single runs under ``outputs/``) and reads what each
job left:

* ``job_num`` (hydra.job.num; None for single runs), ``overrides`` ("a=1 b=2"), ``overrides_json``
  (the list as JSON), ``override_dirname``, ``output_dir`` (absolute), ``sweep_dir`` (the folder
  holding the sweep's multirun.yaml; None for single runs);
* ``status``: metrics.json's status (ok, some_chains_diverged, failed), else failure.json's
  (failed, killed; cancelled or timeout when a launcher's scheduler says so), else ``killed`` (a job killed with SIGKILL, or one still running, leaves only
  .hydra/); ``error``: failure.json's one-line message, None otherwise;
* ``sampler``, ``model``: from metrics.json, else from the config (so failed rows have them too);
* every metric of metrics.json under its own name. Rule for non-scalars: lists and dicts are JSON
  strings (``llc_per_chain``, ``warnings``, ``hessian_check``, ...), plus ``n_warnings``; only
  ``timing_notes`` is skipped (the same explanatory text in every job). A metric whose name clashes
  with a bookkeeping column is stored as ``metrics.<name>``;
* ``cfg.<dotted key>``: the job's config (.hydra/config.yaml, resolved when it can be), lists as
  JSON strings;
* ``mlflow_run_id``, ``mlflow_tracking_uri`` (from mlflow_run.json) and ``mlflow_status`` (filled by
  ``finalize_orphan_runs``, lambda_hat.sweeps.orphans).

A column whose values mix types across rows (say a number in one job and a string in another) is
stored as strings (JSON for non-strings), so the table always writes to parquet (column order and
types: lambda_hat.sweeps.frame).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from lambda_hat.files import atomic_path
from lambda_hat.sweeps.frame import MAIN_METRICS, RESERVED, isnull, to_frame, to_json

log = logging.getLogger(__name__)

TABLE_NAME = "llc_runs.parquet"
MAIN_COLUMNS = ("job_num", "overrides", "sampler", *MAIN_METRICS, "status")
SKIPPED_METRICS = frozenset({"timing_notes"})  # documentation, identical in every job
_SKIP_DIRS = frozenset({"mlruns", "__pycache__", "node_modules"})


# ----------------------------------------------------------------------------- reading job folders


def find_job_dirs(root: Path | str) -> list[Path]:
    """Every folder under root (root included) holding .hydra/config.yaml; a job's own subfolders
    and hidden folders are not searched."""
    root = Path(root).resolve()
    found: list[Path] = []
    if not root.is_dir():
        return found
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if (here / ".hydra" / "config.yaml").is_file():
            found.append(here)
            dirnames[:] = []
            continue
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and n not in _SKIP_DIRS)
    return found


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _flatten(node: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _flatten(v, f"{prefix}{k}.", out)
    elif isinstance(node, (list, tuple)):
        out[prefix[:-1]] = to_json(list(node))
    else:
        out[prefix[:-1]] = node


def _job_config(job: Path) -> dict[str, Any]:
    """The job's composed config as a plain dict, interpolations resolved where they can be."""
    path = job / ".hydra" / "config.yaml"
    try:
        from omegaconf import OmegaConf

        from lambda_hat.budget import apply_budget
        from lambda_hat.config import register_resolvers

        register_resolvers()  # model=dln_random's widths/true_rank are ${random_dln:...}
        conf = OmegaConf.load(path)
        apply_budget(conf)  # the sampler keys the job's budget set, as its run did (lambda_hat.budget)
        try:
            data = OmegaConf.to_container(conf, resolve=True)
        except Exception:  # e.g. ${hydra:...}, whose resolver only exists inside the job
            data = OmegaConf.to_container(conf, resolve=False)
    except Exception:
        data = _read_yaml(path)
    return data if isinstance(data, dict) else {}


def _sweep_dir_of(job: Path) -> Path:
    """The nearest folder above a multirun job holding multirun.yaml (else the job's parent)."""
    for parent in job.parents:
        if (parent / "multirun.yaml").is_file():
            return parent
    return job.parent


def read_job(job: Path | str) -> dict[str, Any]:
    """One row of the table: what the job folder holds (see the module docstring)."""
    job = Path(job).resolve()
    hydra = (_read_yaml(job / ".hydra" / "hydra.yaml") or {}).get("hydra") or {}
    hjob = hydra.get("job") or {}
    num = hjob.get("num")
    if not hydra and job.name.isdigit() and (job.parent / "multirun.yaml").exists():
        # a job killed while Hydra wrote its .hydra/ (hydra.yaml empty): its folder is its number
        # (the default hydra.sweep.subdir), so the row still sorts in its place
        hydra, num = {"mode": "MULTIRUN"}, int(job.name)
    multirun = hydra.get("mode") != "RUN" and isinstance(num, int) and not isinstance(num, bool)
    overrides = _read_yaml(job / ".hydra" / "overrides.yaml")
    overrides = [str(o) for o in overrides] if isinstance(overrides, list) else []
    cfg = _job_config(job)
    metrics = read_json(job / "metrics.json")
    failure = read_json(job / "failure.json")
    record = read_json(job / "mlflow_run.json") or {}

    if metrics is not None and metrics.get("status"):
        status = str(metrics["status"])
    elif failure is not None and failure.get("status"):
        status = str(failure["status"])
    else:
        status = "killed"
    error = failure.get("error") if failure is not None else None

    def from_cfg(group: str) -> Any:
        node = cfg.get(group)
        return node.get("name") if isinstance(node, dict) else None

    row: dict[str, Any] = {
        "job_num": int(num) if multirun else None,
        "status": status,
        "error": None if error is None else str(error),
        "overrides": " ".join(overrides),
        "sampler": (metrics or {}).get("sampler") or from_cfg("sampler"),
        "model": (metrics or {}).get("model") or from_cfg("model"),
    }
    for key, value in (metrics or {}).items():
        if key in SKIPPED_METRICS or key in ("status", "sampler", "model"):
            continue
        name = f"metrics.{key}" if key in RESERVED else key
        row[name] = to_json(value) if isinstance(value, (list, tuple, dict)) else value
        if key == "warnings" and isinstance(value, list):
            row["n_warnings"] = len(value)
    flat: dict[str, Any] = {}
    _flatten(cfg, "", flat)
    row.update({f"cfg.{k}": v for k, v in flat.items()})
    row.update(
        {
            "overrides_json": to_json(overrides),
            "override_dirname": hjob.get("override_dirname"),
            "output_dir": str(job),
            "sweep_dir": str(_sweep_dir_of(job)) if multirun else None,
            "mlflow_run_id": record.get("run_id"),
            "mlflow_tracking_uri": record.get("tracking_uri"),
            "mlflow_status": None,
        }
    )
    return row


# ------------------------------------------------------------------------------------- the table


def collect_rows(root: Path | str, *more_roots: Path | str) -> pd.DataFrame:
    """The table of every job folder under root (and more_roots): one row per job, sorted by
    sweep folder, job number, output folder. Empty (no rows) if there are no job folders."""
    jobs: dict[Path, None] = {}
    for r in (root, *more_roots):
        jobs.update(dict.fromkeys(find_job_dirs(r)))
    rows = []
    for job in jobs:
        try:
            rows.append(read_job(job))
        except Exception as e:  # an unreadable folder must not hide the others
            log.warning("skipping %s: %s", job, e)
    rows.sort(key=lambda r: (r["sweep_dir"] or str(Path(r["output_dir"]).parent), -1 if r["job_num"] is None else r["job_num"], r["output_dir"]))
    return to_frame(rows)


def write_table(root: Path | str, df: pd.DataFrame, name: str = TABLE_NAME) -> Path:
    """Write df to root/name (name may be an absolute path) atomically: a temporary file in the
    same folder, then a rename, so a reader never sees half a table. Returns the path."""
    path = Path(root) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return path


def summarize(df: pd.DataFrame) -> dict[str, int]:
    """Counts: {"jobs": N, "ok": k, "failed": f, "killed": x, <other status>: m, ...}."""
    counts = Counter(str(s) for s in df["status"]) if "status" in df and len(df) else Counter()
    out = {"jobs": int(len(df)), "ok": counts.pop("ok", 0), "failed": counts.pop("failed", 0), "killed": counts.pop("killed", 0)}
    out.update(sorted(counts.items()))
    return out


def summary_line(df: pd.DataFrame, path: Path | str | None = None) -> str:
    """ "4 jobs: 2 ok, 1 failed, 1 killed -> /abs/llc_runs.parquet" (other statuses listed too)."""
    s = summarize(df)
    parts = [f"{s['ok']} ok"] + [f"{v} {k}" for k, v in s.items() if k not in ("jobs", "ok", "failed", "killed") and v]
    parts += [f"{s['failed']} failed", f"{s['killed']} killed"]
    return f"{s['jobs']} job{'s' if s['jobs'] != 1 else ''}: {', '.join(parts)}" + (f" -> {path}" if path else "")


def _cell(value: Any) -> str:
    if isnull(value):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 60 else text[:59] + "…"


def varying_overrides(df: pd.DataFrame) -> list[str]:
    """Each row's overrides without those every row shares ("seed=1 posterior.gamma=-1")."""
    lists = []
    for text, js in zip(df.get("overrides", [None] * len(df)), df.get("overrides_json", [None] * len(df))):
        try:
            lists.append([str(o) for o in json.loads(js)])
        except (TypeError, ValueError):
            lists.append(str(text or "").split())
    per_key: dict[str, set[str | None]] = {}
    maps = [dict(o.split("=", 1) if "=" in o else (o, "") for o in items) for items in lists]
    for key in {k for m in maps for k in m}:
        per_key[key] = {m.get(key) for m in maps}
    return [" ".join(o for o in items if len(per_key[o.split("=", 1)[0]]) > 1) for items in lists]


def markdown_table(df: pd.DataFrame, columns: Iterable[str] = MAIN_COLUMNS, max_rows: int = 50) -> str:
    """A compact markdown table of the main columns (those df has), at most max_rows rows; the
    overrides column shows only the overrides that differ between rows."""
    cols = [c for c in columns if c in df.columns]
    if "overrides" in cols and len(df) > 1:
        df = df.assign(overrides=varying_overrides(df))
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.head(max_rows).iterrows():
        lines.append("| " + " | ".join(_cell(row[c]) for c in cols) + " |")
    if len(df) > max_rows:
        lines.append(f"... {len(df) - max_rows} more rows")
    return "\n".join(lines)


def widths_of(value: Any) -> list[int] | None:
    """A row's cfg.model.widths as a list of ints (the table stores lists as JSON text), or None."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        return [int(w) for w in value]
    return None
