"""The tracking store: its URI, a SQLite store created safely, the up-front check, experiments."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

# URI schemes MLflow 3 has a tracking store for (postgresql+psycopg2:// etc. count by their prefix).
MLFLOW_SCHEMES = frozenset({"sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc"})


def resolve_tracking_uri(configured: str | None, launch_dir: Path) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else MLflow 3's own default <launch dir>/mlflow.db."""
    if configured:
        return configured
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(launch_dir / 'mlflow.db').resolve()}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// tracking URI (None for other stores)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def artifact_root(db: Path) -> str:
    """Artifacts live beside the SQLite file (MLflow would use ./mlruns of whatever cwd a job has)."""
    return (db.parent / "mlruns").resolve().as_uri()


def prepare_sqlite_store(db: Path) -> None:
    """Create a fresh SQLite store once, atomically, however many jobs start at the same time.

    MLflow creates and migrates the tables on first use, and concurrent first uses of one file
    fail ("duplicate column name: step", alembic "expected to match one row"; mlflow#19943,
    hydraflow#245: 0-1 of 6 simultaneous jobs got a run here). A job killed mid-way would also
    leave a half-migrated store for all later jobs. So the first job builds the store in a
    temporary file under a file lock and renames it into place; the others find it ready.
    """
    if db.exists():
        return
    from filelock import FileLock

    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db.with_name(db.name + ".lock"))):
        if db.exists():
            return
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
        try:
            store = SqlAlchemyStore(f"sqlite:///{tmp}", artifact_root(db))
            store.engine.dispose()
            os.replace(tmp, db)
        finally:
            tmp.unlink(missing_ok=True)


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message is one line naming mlflow.tracking_uri."""


def check_store(uri: str) -> None:
    """Fail fast, before any computation, on a store that cannot work (one line, naming the URI).

    SQLite: its folder must exist or be creatable, and be writable. HTTP(S) servers: the port must
    accept a connection. Other schemes are left to MLflow.
    """
    where = f"mlflow.tracking_uri={uri}"
    db = sqlite_path(uri)
    if db is not None:
        folder = db.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrackingError(f"{where}: cannot create {folder} ({e.strerror}); point it elsewhere or set mlflow.enabled=false") from None
        if not os.access(folder, os.W_OK | os.X_OK) or (db.exists() and not os.access(db, os.R_OK | os.W_OK)):
            raise TrackingError(f"{where}: {db} is not writable; point it elsewhere or set mlflow.enabled=false")
        return
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else None
    if scheme is not None and scheme not in MLFLOW_SCHEMES:
        raise TrackingError(
            f"{where}: MLflow has no store for {scheme}://; use sqlite:///<path>/mlflow.db, http(s)://<host>:<port>, "
            "file:///<folder> or a database URL (postgresql://, mysql://, mssql://)"
        )
    if uri.startswith(("http://", "https://")):
        from urllib.parse import urlparse

        u = urlparse(uri)
        port = u.port or (443 if u.scheme == "https" else 80)
        try:
            socket.create_connection((u.hostname or "localhost", port), timeout=3).close()
        except OSError as e:
            raise TrackingError(f"{where}: no tracking server answers at {u.hostname}:{port} ({e}); start one or set mlflow.enabled=false") from None


def experiment_id(client: Any, name: str, uri: str) -> str:
    """The id of experiment `name`, created (artifacts beside a SQLite store) if it does not exist."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    db = sqlite_path(uri)
    artifact_location = None if db is None else artifact_root(db)
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # created concurrently by another job
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def sqlite_missing(uri: str) -> bool:
    """A sqlite:/// URI whose database file does not exist (reading it would create an empty store)."""
    db = sqlite_path(uri)
    return db is not None and not db.exists()
