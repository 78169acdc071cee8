"""The shipped examples run as documented (trimmed budgets): train with checkpoints, then the λ̂
curve over them as one sweep; the transformer's parameter groups name each head's slices."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT

TINY = ["sampler.num_steps=60", "sampler.num_tune=20", "sampler.num_chains=1", "sampler.batch_size=32", "mlflow.enabled=false"]


# Both are `slow` (CI stays under 20 min): the λ̂-over-training sweep they run is
# tests/e2e/test_checkpoint_curves.py's, end to end; these check the examples' own command lines.
@pytest.mark.parametrize(
    "script, sweep",
    [pytest.param("grokking.py", "grokking_curve", marks=pytest.mark.slow), pytest.param("digits_cnn.py", "digits_cnn_curve", marks=pytest.mark.slow)],
)
def test_example_curve_command(tmp_path: Path, script: str, sweep: str) -> None:
    pytest.importorskip("sklearn") if script.startswith("digits") else None
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "curve", "--steps", "20", "--every", "10", *TINY],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    table = pd.read_parquet(tmp_path / "multirun" / sweep / "llc_runs.parquet")
    assert sorted(table["training_step"]) == [10, 20]
    assert table["train_loss"].notna().all() and table["test_loss"].notna().all()
    assert np.isfinite(table["llc_mean"]).all()
    assert (tmp_path / "multirun" / sweep / "llc_over_training.png").is_file()
    assert "training_step" in proc.stdout and "figure:" in proc.stdout


def test_grokking_groups_are_each_heads_slices() -> None:
    from examples import grokking
    from lambda_hat.posterior import expand_groups, select

    t = grokking.target()
    dh = grokking.D // grokking.HEADS
    heads = [set(select(t.params, expand_groups([f"h{i}"], t.groups)).tolist()) for i in range(grokking.HEADS)]
    assert all(len(h) == 4 * grokking.D * dh for h in heads)
    assert not set.intersection(*heads[:2])  # heads do not overlap
    attn = set(select(t.params, expand_groups(["attn"], t.groups)).tolist())
    assert set.union(*heads) == attn
