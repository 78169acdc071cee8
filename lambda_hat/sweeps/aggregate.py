"""One table of a sweep's jobs: a row per Hydra job folder (or per MLflow run), written as parquet.

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
  ``finalize_orphan_runs``).

A column whose values mix types across rows (say a number in one job and a string in another) is
stored as strings (JSON for non-strings), so the table always writes to parquet.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from lambda_hat.files import atomic_path

log = logging.getLogger(__name__)

TABLE_NAME = "llc_runs.parquet"
MAIN_METRICS = ("llc_mean", "llc_sem", "llc_true", "llc_rel_error")
MAIN_COLUMNS = ("job_num", "overrides", "sampler", *MAIN_METRICS, "status")
SKIPPED_METRICS = frozenset({"timing_notes"})  # documentation, identical in every job
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
_RESERVED = frozenset({*LEAD, *TAIL}) - {"sampler", "model"}
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


def _read_json(path: Path) -> dict[str, Any] | None:
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


def _to_json(value: Any) -> str:
    return json.dumps(value, default=str)


def _flatten(node: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _flatten(v, f"{prefix}{k}.", out)
    elif isinstance(node, (list, tuple)):
        out[prefix[:-1]] = _to_json(list(node))
    else:
        out[prefix[:-1]] = node


def _job_config(job: Path) -> dict[str, Any]:
    """The job's composed config as a plain dict, interpolations resolved where they can be."""
    path = job / ".hydra" / "config.yaml"
    try:
        from omegaconf import OmegaConf

        from lambda_hat.config import register_resolvers

        register_resolvers()  # model=dln_random's widths/true_rank are ${random_dln:...}
        conf = OmegaConf.load(path)
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
    multirun = hydra.get("mode") != "RUN" and isinstance(num, int) and not isinstance(num, bool)
    overrides = _read_yaml(job / ".hydra" / "overrides.yaml")
    overrides = [str(o) for o in overrides] if isinstance(overrides, list) else []
    cfg = _job_config(job)
    metrics = _read_json(job / "metrics.json")
    failure = _read_json(job / "failure.json")
    record = _read_json(job / "mlflow_run.json") or {}

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
        name = f"metrics.{key}" if key in _RESERVED else key
        row[name] = _to_json(value) if isinstance(value, (list, tuple, dict)) else value
        if key == "warnings" and isinstance(value, list):
            row["n_warnings"] = len(value)
    flat: dict[str, Any] = {}
    _flatten(cfg, "", flat)
    row.update({f"cfg.{k}": v for k, v in flat.items()})
    row.update(
        {
            "overrides_json": _to_json(overrides),
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


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "num"
    return "str" if isinstance(value, str) else "other"


def _isnull(value: Any) -> bool:
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


def _typed(col: str, values: list[Any], index: pd.Index) -> pd.Series:
    """One column with one type: ints (nullable Int64 if some are missing), floats, bools (nullable
    "boolean" if some are missing), strings; anything mixed becomes strings (JSON for non-strings)."""
    values = [None if _isnull(v) else v for v in values]
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
        values = [v if v is None or isinstance(v, str) else _to_json(v) for v in values]
    return pd.Series(values, index=index, dtype=object).infer_objects()


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> a DataFrame with stable column order and parquet-safe column types."""
    metric_names = {k for r in rows for k in r if not k.startswith("cfg.") and k not in _RESERVED}
    columns: dict[str, None] = {}
    for r in rows:
        columns.update(dict.fromkeys(r))
    for c in TAIL + LEAD:
        columns.setdefault(c, None)
    order = _order(columns, metric_names)
    index = pd.RangeIndex(len(rows))
    return pd.DataFrame({c: _typed(c, [r.get(c) for r in rows], index) for c in order}, index=index)


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
    if _isnull(value):
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


# ------------------------------------------------------------------------------------------ MLflow


def _sqlite_missing(uri: str) -> bool:
    # MlflowClient would create an empty store rather than fail.
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists()


def _parse_param(text: str) -> Any:
    """A param string (lambda_hat.tracking.flatten_config: str(value)) back to a table value."""
    if text == "None":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    if isinstance(value, (list, tuple, dict)):
        return _to_json(list(value) if isinstance(value, tuple) else value)
    return value if isinstance(value, (int, float)) else text


# Statuses of jobs that ended without finishing their MLflow run (SIGKILL, scancel, time limit).
ENDED_BY_SIGNAL = ("killed", "cancelled", "timeout")
_RUN_STATUS = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed", "RUNNING": "running", "SCHEDULED": "running"}


def _mlflow_row(run: Any, uri: str) -> dict[str, Any]:
    info, data = run.info, run.data
    tags, params = data.tags, data.params
    metrics = dict(data.metrics)
    chains = {int(k.rsplit("_", 1)[1]): metrics.pop(k) for k in list(metrics) if k.startswith("llc_chain_") and k[10:].isdigit()}
    row: dict[str, Any] = {
        "job_num": None,
        "status": tags.get("status") or _RUN_STATUS.get(info.status, str(info.status).lower()),
        "error": None,
        "overrides": None,
        "sampler": tags.get("sampler") or params.get("sampler.name"),
        "model": tags.get("model") or params.get("model.name"),
        "target_id": tags.get("target_id"),
        "health": tags.get("health"),
    }
    for key, value in metrics.items():
        row[f"metrics.{key}" if key in _RESERVED else key] = value
    if chains:
        size = max(int(metrics.get("num_chains") or 0), max(chains) + 1)
        row["llc_per_chain"] = _to_json([chains.get(i) for i in range(size)])
    row.update({f"cfg.{k}": _parse_param(v) for k, v in params.items()})
    row.update(
        {
            "run_name": info.run_name,
            "start_time": pd.Timestamp(info.start_time, unit="ms", tz="UTC") if info.start_time else None,
            "end_time": pd.Timestamp(info.end_time, unit="ms", tz="UTC") if info.end_time else None,
            "mlflow_run_id": info.run_id,
            "mlflow_tracking_uri": uri,
            "mlflow_status": info.status,
        }
    )
    return row


def from_mlflow(experiment: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """The same kind of table from an MLflow experiment's runs (oldest first): params -> cfg.*,
    metrics under their names (llc_chain_<i> folded back into llc_per_chain), tags status /
    sampler / model / target_id / health, run id, status, name, start and end time (UTC).
    tracking_uri: as the app resolves it (None: $MLFLOW_TRACKING_URI, else ./mlflow.db).
    Raises ValueError when the store or the experiment does not exist."""
    from lambda_hat.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, Path.cwd())
    if _sqlite_missing(uri):
        raise ValueError(f"{uri}: no such MLflow store")
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"{uri}: no experiment named {experiment!r}")
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token, order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            break
    return to_frame([_mlflow_row(run, uri) for run in runs])


def _last_change(folder: Path) -> float:
    """The newest modification time of the job's files (about when a killed job died)."""
    times = [folder.stat().st_mtime]
    for sub in (folder, folder / ".hydra"):
        try:
            times += [e.stat().st_mtime for e in os.scandir(sub) if e.is_file()]
        except OSError:
            pass
    return max(times)


def _job_alive(record: dict[str, Any]) -> bool:
    """Whether the process that wrote mlflow_run.json still runs (only known when the record names
    its pid and host, and the host is this one). This process itself does not count: a callback
    at the end of a sweep runs in the process that ran the basic launcher's jobs."""
    pid, host = record.get("pid"), record.get("host")
    if not isinstance(pid, int) or host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


def finalize_orphan_runs(df: pd.DataFrame, *, min_idle_s: float = 0.0) -> pd.DataFrame:
    """End the MLflow runs of killed jobs that their store still shows RUNNING.

    For each row with status killed (or cancelled, timeout) whose folder holds mlflow_run.json: if
    the run is RUNNING (and the job's process is not known to be alive, and nothing in its folder
    changed in the last min_idle_s seconds, a guard for tables built while a sweep still runs),
    tag it with the row's status and set it KILLED, its end time the folder's last change. Returns a copy of df with
    mlflow_run_id and mlflow_status (the run's status afterwards) filled in for those rows.
    Errors are logged, never raised. mlflow is imported only if there is such a run.
    """
    df = df.copy()
    for col in ("mlflow_run_id", "mlflow_tracking_uri", "mlflow_status"):
        df[col] = pd.Series(list(df[col]) if col in df else [None] * len(df), index=df.index, dtype=object)
    if not len(df) or "output_dir" not in df or "status" not in df:
        return df
    clients: dict[str, Any] = {}
    now = time.time()
    for idx in df.index[df["status"].isin(ENDED_BY_SIGNAL)]:
        out_dir = df.at[idx, "output_dir"]
        if _isnull(out_dir):
            continue
        folder = Path(out_dir)
        record = _read_json(folder / "mlflow_run.json")
        if not record or not record.get("run_id") or not record.get("tracking_uri"):
            continue
        run_id, uri = str(record["run_id"]), str(record["tracking_uri"])
        df.at[idx, "mlflow_run_id"], df.at[idx, "mlflow_tracking_uri"] = run_id, uri
        try:
            if _sqlite_missing(uri):
                log.warning("run %s of %s: its store %s is gone", run_id, folder, uri)
                continue
            if uri not in clients:
                from mlflow import MlflowClient

                clients[uri] = MlflowClient(tracking_uri=uri)
            client = clients[uri]
            run = client.get_run(run_id)
            status = run.info.status
            last = _last_change(folder)
            if status == "RUNNING" and not _job_alive(record) and now - last >= min_idle_s:
                end_ms = max(int(1000 * last), int(run.info.start_time or 0))
                client.set_tag(run_id, "status", str(df.at[idx, "status"]))
                client.set_terminated(run_id, "KILLED", end_time=end_ms)
                status = client.get_run(run_id).info.status
                log.info("MLflow run %s of killed job %s: RUNNING -> %s", run_id, folder, status)
            df.at[idx, "mlflow_status"] = status
        except Exception as e:
            log.warning("could not finalize MLflow run %s of %s: %s", run_id, folder, " ".join(str(e).split())[:300])
    for col in ("mlflow_run_id", "mlflow_tracking_uri", "mlflow_status"):
        df[col] = _typed(col, list(df[col]), df.index)
    return df


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
