"""The examples' last step: λ̂ at every checkpoint of a folder, as one lambda_hat sweep, and its table.

``run_curve(factory, folder, extra)`` runs ``python -m lambda_hat --multirun model=user
model.factory=FACTORY model.checkpoint=FOLDER/ ...`` (one job per checkpoint, ordered by training
step; resumable with ``resume=true``) into multirun/<name>/, then prints λ̂ ± se and the losses by
step from its llc_runs.parquet. The figure is llc_over_training.png beside the table.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


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
