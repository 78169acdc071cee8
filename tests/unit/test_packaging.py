"""Configs ship inside the wheel, so an installed package works from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from hatchling.builders.wheel import WheelBuilder

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_conf_and_runs_from_elsewhere(tmp_path: Path) -> None:
    wheel = Path(next(iter(WheelBuilder(str(ROOT)).build(directory=str(tmp_path / "dist"), versions=["standard"]))))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(site)
    repo_confs = {f"lambda_hat/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert repo_confs and repo_confs <= names

    # Run the unpacked wheel (dependencies from this environment) from an unrelated directory.
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = "import lambda_hat.app as a; print(a.CONF_DIR)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Path(proc.stdout.strip()) == site / "lambda_hat" / "conf"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lambda_hat",
            "model.widths=[3,4,3]",
            "data.n=2000",
            "sampler.batch_size=50",
            "sampler.num_steps=400",
            "sampler.num_burnin=200",
            "sampler.num_chains=2",
            "mlflow.enabled=false",
            "plots=false",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "status ok" in proc.stdout.strip().splitlines()[-1]
    assert list((work / "outputs").glob("*/*/metrics.json"))


def test_no_import_cycles_among_lambda_hat_modules() -> None:
    """Every import (function-level ones too) between lambda_hat's modules forms a DAG."""
    import ast

    root = Path(__file__).resolve().parents[2]
    modules = {}
    for path in (root / "lambda_hat").rglob("*.py"):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module in modules:
                graph[name].add(node.module)
                graph[name] |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules}
    graph["lambda_hat"] = set()  # the package's lazy re-exports import on attribute access only
    for name in graph:
        graph[name].discard(name)  # a package importing its own submodules
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(n) :], n]))
            if n not in state:
                visit(n, [*stack, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
