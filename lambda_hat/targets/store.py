"""Content-addressed, process-safe on-disk cache of built targets (npz + JSON, never pickle).

A target is identified by the hash of the spec that defines it. The first process to ask for a
target takes a file lock, builds it into a temporary folder and renames that folder into place
(atomic on POSIX), so concurrent jobs never build it twice nor read a half-written entry. An entry
is used only if it names the same spec and its arrays hash to the sha256 in its meta.json;
anything else (truncated, edited, an older format) is rebuilt, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from lambda_hat.config import default_cache_dir  # noqa: F401  (re-exported: where the cache lives)

# Bump when the meaning of a stored target changes, so stale entries are never reused.
FORMAT_VERSION = 2  # 2: DLN teachers on fiber components, llc_true = local λ, llc_global

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
Meta = dict[str, Any]


def target_id(spec: Mapping[str, Any]) -> str:
    """Stable short hash of a JSON-serialisable spec."""
    payload = json.dumps({"format": FORMAT_VERSION, "spec": spec}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """Hash of the arrays' names, dtypes, shapes and bytes (recorded in meta.json, checked on load)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _spec_text(spec: Any) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def _load(entry: Path, tid: str, spec: Mapping[str, Any]) -> tuple[Arrays, Meta] | str:
    """The entry's arrays and meta, or why it cannot be used (missing, unreadable, not ours).

    npz without pickle (an object array is refused); the entry must name this target id and spec,
    and its arrays must hash to the recorded sha256, so a truncated, edited or swapped file is
    rebuilt, never used.
    """
    if not entry.exists():
        return "missing"
    try:
        meta = json.loads((entry / "meta.json").read_text())
        with np.load(entry / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        return f"unreadable ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
    if not isinstance(meta, dict) or meta.get("target_id") != tid or _spec_text(meta.get("spec")) != _spec_text(spec):
        return "its meta.json names another target"
    if "arrays_sha256" not in meta:
        return "it records no sha256 of its arrays (written by an older lambda_hat)"
    if meta["arrays_sha256"] != arrays_sha256(arrays):
        return "its arrays do not match the recorded sha256"
    return arrays, meta


def get_or_build(cache_dir: Path, spec: Mapping[str, Any], build: Callable[[], tuple[Arrays, Meta]]) -> tuple[str, Arrays, Meta, bool]:
    """Return (target_id, arrays, meta, was_cached), building and storing the target if needed."""
    tid = target_id(spec)
    root = Path(cache_dir) / "targets"
    root.mkdir(parents=True, exist_ok=True)
    entry = root / tid
    found = _load(entry, tid, spec)
    if not isinstance(found, str):
        return tid, *found, True
    with FileLock(str(root / f"{tid}.lock")):
        found = _load(entry, tid, spec)  # another process may have built it while we waited
        if not isinstance(found, str):
            return tid, *found, True
        if entry.exists():  # corrupted, edited, or from an older writer: rebuilt, never used
            log.warning("target cache entry %s: %s; rebuilding it", entry, found)
            shutil.rmtree(entry)
        arrays, meta = build()
        meta = {**meta, "target_id": tid, "spec": dict(spec), "arrays_sha256": arrays_sha256(arrays)}
        tmp = Path(tempfile.mkdtemp(prefix=f".{tid}-", dir=root))
        try:
            np.savez(tmp / "arrays.npz", **arrays)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
            os.replace(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return tid, arrays, meta, False
