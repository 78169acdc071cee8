"""Atomic file writes: every file lambda_hat writes goes to a temporary name beside it, then is
renamed onto its name (os.replace, atomic on POSIX), so a reader, or a process killed at any
moment, sees the old complete file or the new complete one, never half of one.

The temporary name is unique per writer (pid + random), so two processes writing the same file
(two jobs, a job and ``python -m lambda_hat.aggregate``) never write into each other's
temporary file. A writer killed outright leaves only a hidden ``.<name>.*.tmp`` beside the file.
(No fsync: this guards against killed processes, not against power loss.)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path to write `path`'s new content to; renamed onto `path` if the block succeeds
    (removed if it raises). Writers that infer a format from the suffix must be told it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path | str, text: str) -> Path:
    """Text, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: Path | str, obj: Any, **dumps: Any) -> Path:
    """A small JSON record, written atomically (indent 2, sorted keys unless told otherwise)."""
    return write_text(path, json.dumps(obj, **{"indent": 2, "sort_keys": True, **dumps}) + "\n")
