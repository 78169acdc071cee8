"""The examples' last step: λ̂ at every checkpoint of a folder, as one lambda_hat sweep, and its table.

``run_curve(factory, folder, extra)`` runs ``python -m lambda_hat --multirun model=user
model.factory=FACTORY model.checkpoint=FOLDER/ ...`` (one job per checkpoint, ordered by training
step; resumable with ``resume=true``) into multirun/<name>/, then prints λ̂ ± se and the losses by
step from its llc_runs.parquet. The figure is llc_over_training.png beside the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def run_curve(factory: str, folder: str, extra: list[str], sampler: list[str] | None = None) -> int:
    name = factory.split(":")[0].rsplit(".", 1)[-1]
    sweep = Path("multirun") / f"{name}_curve"
    args = [
        sys.executable,
        "-m",
        "lambda_hat",
        "--multirun",
        "model=user",
        f"model.factory={factory}",
        f"model.checkpoint={folder}/",
        *(sampler or []),
        f"hydra.sweep.dir={sweep}",
        "progress=false",
        *extra,
    ]
    print("$", " ".join(args[1:]), flush=True)
    rc = subprocess.run(args).returncode
    table = sweep / "llc_runs.parquet"
    if not table.is_file():
        return rc or 1
    import pandas as pd

    df = pd.read_parquet(table).sort_values("training_step")
    cols = [c for c in ("training_step", "llc_mean", "llc_sem", "train_loss", "test_loss", "r_hat", "status") if c in df]
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"table: {table}\nfigure: {sweep / 'llc_over_training.png'}")
    return rc


def save_checkpoint(folder: str, step: int, params: Any, info: dict[str, float]) -> None:
    """folder/step_000250.npz and its sidecar step_000250.json ({"step", losses, ...}), and a line."""
    import lambda_hat as lh

    Path(folder).mkdir(exist_ok=True)
    lh.save_npz(f"{folder}/step_{step:06d}.npz", params)
    Path(f"{folder}/step_{step:06d}.json").write_text(json.dumps({"step": step, **info}))
    print(f"step {step:5d}: " + ", ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in info.items()), flush=True)


def main(description: str, train: Callable[[int, int], None], factory: str, folder: str, sampler: list[str], steps: int, every: int) -> int:
    """An example's command line: `train` (checkpoints every --every steps), or `curve` (train,
    then λ̂ at each checkpoint); unknown arguments go to lambda_hat (e.g. mlflow.enabled=false)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("command", choices=["train", "curve"], nargs="?", default="curve")
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--every", type=int, default=every)
    args, more = ap.parse_known_args()
    train(args.steps, args.every)
    return run_curve(factory, folder, more, sampler=sampler) if args.command == "curve" else 0
