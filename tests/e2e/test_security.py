"""Security: MLflow servers listen on localhost only; caches load without pickle; a config names
no code but lambda_hat's, Hydra's and its plugins' (the checks themselves: tests/e2e/test_bad_input.py
and tests/unit/test_cache_integrity.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from lambda_hat.command_line import check_overrides

ROOT = Path(__file__).resolve().parents[2]
LOCAL = {"127.0.0.1", "localhost", "::1"}


def test_mlflow_ui_and_server_listen_on_localhost_by_default() -> None:
    from mlflow.utils.cli_args import HOST  # the --host option of `mlflow ui` and `mlflow server`

    (option,) = HOST(lambda: None).__click_params__
    assert option.default in LOCAL and option.envvar == "MLFLOW_HOST"


def _documented_files() -> list[Path]:
    files = [ROOT / "README.md", *ROOT.glob("docs/**/*"), *ROOT.glob("scripts/**/*"), *ROOT.glob("conf/**/*.yaml")]
    return [f for f in files if f.is_file() and f.suffix in (".md", ".py", ".sh", ".yaml", ".txt", "")]


def test_every_mlflow_ui_or_server_command_in_docs_and_scripts_binds_to_localhost() -> None:
    commands = 0
    for path in _documented_files():
        for line in path.read_text(errors="replace").splitlines():
            for match in re.finditer(r"mlflow\s+(ui|server)\b([^`'\"\n]*)", line):
                commands += 1
                host = re.search(r"(?:--host|-h)[ =]+(\S+)", match.group(2))
                # a deliberate non-local bind (a tracking server the cluster's nodes must reach)
                # is allowed only where the same line warns that anyone who reaches it gets in
                allowed = host is None or host.group(1) in LOCAL or "no authentication" in line
                assert allowed, f"{path.name}: {line.strip()}"
    assert commands >= 1  # the README shows how to open the UI


def test_store_loads_arrays_without_pickle() -> None:
    source = (ROOT / "lambda_hat" / "targets" / "store.py").read_text()
    assert "allow_pickle=False" in source
    for path in (ROOT / "lambda_hat").rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "allow_pickle=True" not in text, path


@pytest.mark.parametrize(
    "override",
    [
        "+hydra.callbacks.evil._target_=subprocess.call",
        "+hydra.callbacks.evil._target_=builtins.exec",
        "hydra.callbacks.aggregate._target_=os.system",
        "+model._target_=os.system",
        "+posterior._target_=os.system",
    ],
)
def test_a_config_cannot_name_other_code(override: str) -> None:
    error = check_overrides([override])
    assert error is not None and "_target_" in error


@pytest.mark.slurm
def test_the_slurm_dev_cluster_writes_nothing_world_writable_and_mariadb_has_no_network_port() -> None:
    """scripts/slurm-dev-cluster.sh (started by CI before the tests): its configs, state, logs and
    run folders are not world-writable, slurmdbd.conf (it holds the DB password) is private, and
    MariaDB listens on its Unix socket only (no TCP port open on any address)."""
    import stat

    folders = [Path(p) for p in ("/etc/slurm", "/run/slurm", "/var/log/slurm", "/var/lib/slurm", "/run/munge", "/run/mysqld")]
    checked = 0
    for folder in (f for f in folders if f.exists()):
        for path in [folder, *folder.rglob("*")]:
            if path.is_symlink() or path.is_socket():
                continue
            mode = path.stat().st_mode
            checked += 1
            assert not mode & stat.S_IWOTH, f"{path} is world-writable ({stat.filemode(mode)})"
    assert checked > 0
    dbd = Path("/etc/slurm/slurmdbd.conf")
    assert dbd.is_file() and stat.S_IMODE(dbd.stat().st_mode) & 0o077 == 0, stat.filemode(dbd.stat().st_mode)
    # /proc/net/tcp{,6}: every listening socket (state 0A) and the inode that owns it; none is mariadbd's
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                listening.add(fields[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() not in ("mariadbd", "mysqld"):
                continue
            inodes = {os.readlink(fd).removeprefix("socket:[").rstrip("]") for fd in (proc / "fd").iterdir()}
        except OSError:
            continue
        assert not inodes & listening, f"mariadbd (pid {proc.name}) listens on a TCP port"
