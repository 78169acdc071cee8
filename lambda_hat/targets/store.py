"""Content-addressed, process-safe on-disk cache of built targets (npz + JSON, never pickle).

A target is identified by the hash of the spec that defines it. The first process to ask for a
target takes a file lock, builds it into a temporary folder and renames that folder into place
(atomic on POSIX), so concurrent jobs never build it twice nor read a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

# Bump when the meaning of a stored target changes, so stale entries are never reused.
FORMAT_VERSION = 2  # 2: DLN teachers on fiber components, llc_true = local λ, llc_global

Arrays = dict[str, np.ndarray]
Meta = dict[str, Any]


def default_cache_dir() -> Path:
    return Path(os.environ.get("LAMBDA_HAT_CACHE", Path.home() / ".cache" / "lambda_hat")).expanduser()


def target_id(spec: Mapping[str, Any]) -> str:
    """Stable short hash of a JSON-serialisable spec."""
    payload = json.dumps({"format": FORMAT_VERSION, "spec": spec}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _load(entry: Path) -> tuple[Arrays, Meta] | None:
    try:
        meta = json.loads((entry / "meta.json").read_text())
        with np.load(entry / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError):
        return None
    return arrays, meta


def get_or_build(
    cache_dir: Path, spec: Mapping[str, Any], build: Callable[[], tuple[Arrays, Meta]]
) -> tuple[str, Arrays, Meta, bool]:
    """Return (target_id, arrays, meta, was_cached), building and storing the target if needed."""
    tid = target_id(spec)
    root = Path(cache_dir) / "targets"
    root.mkdir(parents=True, exist_ok=True)
    entry = root / tid
    found = _load(entry)
    if found is not None:
        return tid, *found, True
    with FileLock(str(root / f"{tid}.lock")):
        found = _load(entry)  # another process may have built it while we waited
        if found is not None:
            return tid, *found, True
        if entry.exists():  # an unreadable leftover (e.g. from an older, non-atomic writer)
            shutil.rmtree(entry)
        arrays, meta = build()
        meta = {**meta, "target_id": tid, "spec": dict(spec)}
        tmp = Path(tempfile.mkdtemp(prefix=f".{tid}-", dir=root))
        try:
            np.savez(tmp / "arrays.npz", **arrays)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
            os.replace(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return tid, arrays, meta, False
