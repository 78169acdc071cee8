"""A writer killed (SIGKILL) at random moments leaves every file it writes either absent, the old
complete version or the new complete one: metrics.json, trace.parquet, plots, the sweep table,
objective.json, cached targets and references.

One subprocess imports everything once, then forks writers that write version after version of
every file, kills each at a random moment and snapshots the folder; the test checks every
snapshot here.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
ROWS = 20_000  # big enough that a write takes a while (more chances to be killed mid-way)
KILLS = 8
PNG_END = b"IEND\xaeB`\x82"


def _write_all(folder: Path, version: int, ref_cfg: Any, rng: random.Random, tick: int) -> None:
    """Every kind of file lambda_hat writes, at this version, in a random order (so that kills
    land in each writer at every stage)."""
    from lambda_hat import outputs
    from lambda_hat.sweeps import aggregate, objective, references
    from lambda_hat.targets import store

    frame = pd.DataFrame({"version": np.full(ROWS, version), "x": np.arange(ROWS, dtype=np.float64)})
    plot = pd.DataFrame({"chain": 0, "step": np.arange(50), "llc": np.full(50, float(version)), "burnin": False})
    _CURRENT["target_id"] = f"t{version}"
    writers = [
        lambda: outputs.write_metrics(folder, {"version": version, "payload": [version] * ROWS}),
        lambda: outputs.write_trace(folder, frame),
        lambda: aggregate.write_table(folder, frame),
        lambda: objective._write(folder, {"version": version, "payload": [version] * 1000}),
        lambda: outputs.write_plots(folder, plot, None, f"v{version}"),
        lambda: store.get_or_build(folder / "cache", {"v": version}, lambda: ({"a": np.full(ROWS, version)}, {"kind": "test"})),
        lambda: references.get_reference(ref_cfg, target_id=_CURRENT["target_id"], llc_true=None),
    ]
    rng.shuffle(writers)
    for write in writers:
        os.write(tick, b".")  # tells the killer a write starts now
        write()


_CURRENT: dict[str, str] = {}


def _fake_reference_run(ref_cfg: Any, run_dir: Path) -> dict[str, Any]:
    """Stands in for a long reference run: writes a file of its own, returns fixed metrics."""
    run_dir.mkdir(parents=True)
    pd.DataFrame({"x": np.arange(ROWS)}).to_parquet(run_dir / "trace.parquet")
    return {"target_id": _CURRENT["target_id"], "llc_mean": 3.0, "llc_sem": 0.1, "ess_bulk": 900.0, "r_hat": 1.0, "status": "ok"}


def harness(folder: str, kills: int, seed: int) -> None:
    """Run in a subprocess: fork a writer, kill it at a random moment, snapshot; `kills` times."""
    import traceback

    from lambda_hat import outputs  # noqa: F401  (imported once here, not in every writer)
    from lambda_hat.composition import compose_config
    from lambda_hat.sweeps import aggregate, objective, references  # noqa: F401
    from lambda_hat.targets import store  # noqa: F401

    outputs._pyplot()
    references.run_reference = _fake_reference_run
    base = Path(folder)
    ref_cfg = compose_config(["model=mlp", "model.widths=[2,3,1]", f"cache_dir={base / 'work' / 'cache'}"])
    sampler = references.reference_sampler(ref_cfg)  # composed once here (Hydra), not in every writer
    references.reference_sampler = lambda cfg: sampler.copy()
    rng = random.Random(seed)
    for i in range(kills):
        work = base / "work"
        work.mkdir(exist_ok=True)
        read_tick, tick = os.pipe()
        pid = os.fork()
        if pid == 0:  # the writer: versions 1, 2, ... until killed
            try:
                os.close(read_tick)
                version = int((work / "version").read_text()) if (work / "version").exists() else 0
                while True:
                    version += 1
                    (work / "version").write_text(str(version))
                    _write_all(work, version, ref_cfg, random.Random(seed * 1000 + version), tick)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(0)
        os.close(tick)
        # kill a few ms after the start of a random write: inside it, or between two
        for _ in range(rng.randint(1, 14)):
            os.read(read_tick, 1)
        time.sleep(rng.uniform(0.0, 0.03))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_tick)
        shutil.copytree(work, base / f"snap{i}", symlinks=True)
    print("done", flush=True)


def _check_snapshot(snap: Path) -> dict[str, int]:
    """Every file present is a complete version; returns the version each one holds."""
    from lambda_hat.sweeps.references import _load as load_reference
    from lambda_hat.targets import store

    seen: dict[str, int] = {}
    for name in ("metrics.json", "objective.json"):
        if (snap / name).exists():
            record = json.loads((snap / name).read_text())
            assert set(record["payload"]) == {record["version"]}, name
            seen[name] = record["version"]
    for name in ("trace.parquet", "llc_runs.parquet"):
        if (snap / name).exists():
            frame = pd.read_parquet(snap / name)
            assert len(frame) == ROWS and frame["version"].nunique() == 1, name
            seen[name] = int(frame["version"].iloc[0])
    for name in ("trace.png", "llc_running.png"):
        if (snap / name).exists():
            data = (snap / name).read_bytes()
            assert data.startswith(b"\x89PNG") and data.endswith(PNG_END), name
            seen[name] = 1
    targets = snap / "cache" / "targets"
    entries = [p for p in targets.iterdir() if p.is_dir() and not p.name.startswith(".")] if targets.exists() else []
    for entry in entries:
        meta = json.loads((entry / "meta.json").read_text())
        loaded = store._load(entry, entry.name, meta["spec"])
        assert not isinstance(loaded, str), (entry, loaded)
        assert loaded[0]["a"].shape == (ROWS,) and set(loaded[0]["a"]) == {meta["spec"]["v"]}
    seen["targets"] = len(entries)
    refs = snap / "cache" / "references"
    ref_entries = [p for p in refs.iterdir() if p.is_dir() and not p.name.startswith(".")] if refs.exists() else []
    for entry in ref_entries:
        assert load_reference(entry, entry.name) is not None, entry
    seen["references"] = len(ref_entries)
    return seen


def test_a_writer_killed_at_random_moments_leaves_old_or_new_complete_files(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    code = f"import tests.e2e.test_atomic_writes as t; t.harness({str(tmp_path)!r}, {KILLS}, 1)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "done" in proc.stdout, proc.stderr[-3000:]
    seen = [_check_snapshot(tmp_path / f"snap{i}") for i in range(KILLS)]
    # the kills did land mid-way through the files: versions advanced and every kind was written
    assert max(s.get("metrics.json", 0) for s in seen) >= 3, seen
    assert all(any(name in s for s in seen) for name in ("trace.parquet", "llc_runs.parquet", "trace.png", "objective.json"))
    assert max(s["targets"] for s in seen) >= 2 and max(s["references"] for s in seen) >= 2, seen
    # a temporary file left in a snapshot = a kill that landed inside a write
    mid_write = sum(1 for i in range(KILLS) if any((tmp_path / f"snap{i}").rglob(".*[!k]")))  # not a .lock
    print(f"{KILLS} kills, metrics versions {[s.get('metrics.json') for s in seen]}, {mid_write} inside a write")
