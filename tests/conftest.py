"""Shared fixtures: an isolated target cache and a config composer using the real conf/ tree."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import DictConfig

from lambda_hat.composition import compose_config
from lambda_hat.devices import configure_cpu_devices

# Two XLA CPU devices whatever the machine, before any JAX operation: every test then runs with
# the chains split over two devices, as the app does on a 2-core machine.
configure_cpu_devices(2)

# Small, fast target and sampler settings shared by the end-to-end tests.
TINY = [
    "model.widths=[4,6,4]",
    "model.true_rank=2",
    "data.n=10000",
    "sampler.batch_size=100",
    "sampler.num_steps=4000",
    "sampler.num_burnin=2000",
    "progress=false",
]


@pytest.fixture(autouse=True, scope="session")
def _isolated_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = tmp_path_factory.mktemp("cache")
    os.environ["LAMBDA_HAT_CACHE"] = str(cache)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_RUN_ID", None)


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """compose the real config with overrides; MLflow goes to a SQLite store under tmp_path."""

    def _make(*overrides: str, mlflow: bool = False) -> DictConfig:
        extra = [f"mlflow.enabled={str(mlflow).lower()}", f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db"]
        return compose_config([*extra, *overrides])

    return _make


ROOT = Path(__file__).resolve().parent.parent


def run_cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m lambda_hat ARGS` as a user runs it, in cwd, with this checkout on the path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "lambda_hat", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)


def slurm_missing() -> str | None:
    """Why SLURM cannot run jobs here (None when a node is up)."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return f"sinfo: {e}"
    states = out.stdout.split()
    # "completing": the node is still cleaning up the previous test's jobs; it takes new ones after
    if out.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mixed", "allocated", "completing") for s in states):
        return f"no SLURM node up (sinfo: {' '.join((out.stdout + out.stderr).split())[:200]})"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked slurm need the cluster: in CI (CI=true) its absence is a failure, never a skip."""
    if item.get_closest_marker("slurm") is None:
        return
    reason = slurm_missing()
    if reason is None:
        return
    hint = "start it with: sudo scripts/slurm-dev-cluster.sh start"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must run the slurm tests ({hint})", pytrace=False)
    pytest.skip(f"{reason}; {hint}")


@dataclass(frozen=True)
class Sweep:
    dir: Path  # the sweep folder (llc_runs.parquet, job folders)
    tracking_uri: str  # its MLflow store (sqlite)
    experiment: str


@pytest.fixture(scope="session")
def small_sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    """A real multirun logged to MLflow, shared by the report and MLflow-UI tests: the smoke
    preset's tiny DLN (λ = 8), SGLD and HMC, seeds 0 and 1 (4 jobs, a few seconds each)."""
    root = tmp_path_factory.mktemp("small_sweep")
    sweep = root / "sweep"
    proc = run_cli(
        ["--multirun", "+experiment=smoke", "sampler=sgld,hmc", "seed=0,1", "sampler.num_chains=2", f"hydra.sweep.dir={sweep}"],
        cwd=root,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Sweep(sweep, f"sqlite:///{root / 'mlflow.db'}", "lambda_hat_smoke")
