#!/usr/bin/env python3
"""Bootstrap the environment and run lambda_hat or its tests, on a machine with only Python + pip.

    python scripts/dev.py run [hydra overrides...]   # one LLC estimate (python -m lambda_hat ...)
    python scripts/dev.py test [pytest args...]      # the test suite
    python scripts/dev.py sync                       # only the environment (.venv)

It finds uv (on PATH, or importable by this Python), else installs it into .cache/uv-bootstrap
with pip, then `uv sync`s the locked environment into .venv and runs the command there.
Standard library only: this script runs before any dependency is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = ROOT / ".cache" / "uv-bootstrap"


def _bin(env: Path, name: str) -> Path:
    return env / ("Scripts" if os.name == "nt" else "bin") / name


def find_uv() -> list[str]:
    """A command that runs uv, installing it into a private venv if needed."""
    if shutil.which("uv"):
        return ["uv"]
    if subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True).returncode == 0:
        return [sys.executable, "-m", "uv"]
    uv = _bin(BOOTSTRAP, "uv")
    if not uv.exists():
        print("dev.py: installing uv into .cache/uv-bootstrap ...", file=sys.stderr, flush=True)
        try:
            venv.EnvBuilder(with_pip=True, clear=True).create(BOOTSTRAP)
            subprocess.run([str(_bin(BOOTSTRAP, "python")), "-m", "pip", "install", "-q", "uv"], check=True)
        except (subprocess.CalledProcessError, OSError):
            # Some system Pythons ship without ensurepip (Debian without python3-venv).
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--user", "uv"], check=True)
            return [sys.executable, "-m", "uv"]
    return [str(uv)]


EXTRAS = ("dev", "sweep", "vi", "browser", "flax", "checkpoints", "examples", "docs")
# The torch extra's CPU build: PyPI's Linux torch wheels pull CUDA (~5 GB), so torch is installed
# only from a find-links folder that holds a CPU wheel (PIP_FIND_LINKS, as pip reads it).
TORCH = ("torch==2.13.0+cpu", "torchax==0.0.13")


def _install_torch(uv: list[str], python: Path) -> None:
    links = os.environ.get("PIP_FIND_LINKS", "").split()
    if not links or subprocess.run([str(python), "-c", "import torch, torchax"], capture_output=True).returncode == 0:
        return
    flags = [arg for link in links for arg in ("--find-links", link)]
    done = subprocess.run([*uv, "pip", "install", "--quiet", "--python", str(python), *flags, *TORCH], cwd=ROOT)
    if done.returncode != 0:
        print("dev.py: could not install the CPU build of torch; the from_torch tests will skip (fail under CI)", file=sys.stderr)


def sync(uv: list[str]) -> Path:
    """Create/refresh .venv from uv.lock (EXTRAS; torch's CPU build where a find-links folder
    has it); return its python. --inexact keeps that torch, which the lock does not pin to CPU."""
    lock_flag = ["--locked"] if (ROOT / "uv.lock").exists() and os.environ.get("CI") else []
    extras = [arg for e in EXTRAS for arg in ("--extra", e)]
    subprocess.run([*uv, "sync", "--inexact", *extras, "--quiet", *lock_flag], cwd=ROOT, check=True)
    python = _bin(ROOT / ".venv", "python")
    _install_torch(uv, python)
    return python


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test", "sync"):
        print(__doc__, file=sys.stderr)
        return 2
    python = sync(find_uv())
    if argv[0] == "sync":
        return 0
    env = dict(os.environ)
    if argv[0] == "run":
        cmd = [str(python), "-m", "lambda_hat", *argv[1:]]
    else:
        cmd = [str(python), "-m", "pytest", *argv[1:]]
        # The suite starts ~30 Python processes that import JAX, MLflow, pandas and Hydra; without
        # cached bytecode (PYTHONDONTWRITEBYTECODE=1, common in containers) each one compiles that
        # source again: ~13 s of CPU per process instead of ~4.5 s on a 2-core machine. The cache
        # goes to .cache/pycache, not into the source tree.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.setdefault("PYTHONPYCACHEPREFIX", str(ROOT / ".cache" / "pycache"))
    return subprocess.run(cmd, cwd=ROOT if argv[0] == "test" else None, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
