"""Calibration without a known λ: the step × nβ preset on a DLN whose λ is known, the verdict
rules one by one, the flat region and the recommendation, and `python -m lambda_hat.calibrate`."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lambda_hat.sweeps import calibration
from tests.conftest import ROOT, run_cli


def _row(**kw) -> pd.Series:
    base = {
        "status": "ok",
        "llc_mean": 50.0,
        "llc_sem": 0.5,
        "mala_accept": 0.95,
        "r_hat": 1.01,
        "ess_bulk": 400.0,
        "chains_diverged": "[]",
        "gamma": 1.0,
        "d": 800,
        "nbeta": 8686.0,
        "cfg.sampler.step_size": 1e-6,
        "cfg.posterior.beta0": 1.0,
        "cfg.posterior.gamma": 1.0,
        "cfg.sampler.target_mala_accept": None,
        "job_num": 0,
    }
    return pd.Series({**base, **kw})


def _trace(llc_per_step: np.ndarray, chains: int = 2) -> pd.DataFrame:
    n = len(llc_per_step)
    return pd.DataFrame(
        {
            "chain": np.repeat(np.arange(chains), n),
            "draw": np.tile(np.arange(n), chains),
            "step": np.tile(np.arange(1, n + 1), chains),
            "burnin": np.tile(np.arange(n) < n // 2, chains),
            "llc": np.tile(llc_per_step, chains),
            "distance": 0.1,
        }
    )


def test_each_rule_gives_its_verdict() -> None:
    rng = np.random.default_rng(0)
    assert calibration.verdict(_row())[0] == "healthy"
    assert calibration.verdict(_row(status="failed", llc_mean=math.nan))[0] == "diverged"
    assert calibration.verdict(_row(status="some_chains_diverged", chains_diverged="[1]"))[0] == "diverged"
    assert calibration.verdict(_row(llc_mean=-3.0))[0] == "negative"
    dipping = np.concatenate([rng.normal(5, 1, 1000), rng.normal(5, 1, 900), rng.normal(-20, 1, 100)])
    assert calibration.verdict(_row(), _trace(dipping))[0] == "below L_n(w*)"
    assert calibration.verdict(_row(), _trace(rng.normal(5, 1, 2000)))[0] == "healthy"
    assert calibration.verdict(_row(mala_accept=0.85))[0] == "too large"
    assert calibration.verdict(_row(mala_accept=0.999, r_hat=1.3))[0] == "too small"
    assert calibration.verdict(_row(mala_accept=0.95, ess_bulk=40.0))[0] == "not converged"
    far = _trace(rng.normal(5, 1, 2000)).assign(distance=np.tile(np.linspace(1, 100, 2000), 2))
    assert calibration.verdict(_row(), far)[0] == "drifts"


def _settings(points: list[tuple[float, float, str, float]], beta0: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "step_size": s,
                "beta0": beta0,
                "gamma": 1.0,
                "nbeta": 100 * beta0,
                "llc_mean": llc,
                "llc_sem": 0.2,
                "mala_accept": mala,
                "verdict": v,
                "job_num": i,
            }
            for i, (s, llc, v, mala) in enumerate(points)
        ]
    )


def test_the_flat_region_is_the_longest_run_of_agreeing_healthy_steps() -> None:
    g = _settings(
        [
            (1e-8, 30.0, "too small", 1.0),
            (1e-7, 49.0, "healthy", 0.99),
            (3e-7, 50.0, "healthy", 0.96),
            (1e-6, 51.0, "healthy", 0.92),
            (3e-6, 60.0, "healthy", 0.91),
            (1e-5, 90.0, "too large", 0.6),
        ]
    )
    assert [g.at[i, "step_size"] for i in calibration.flat_region(g)] == [1e-7, 3e-7, 1e-6]
    g["flat"] = g.index.isin(calibration.flat_region(g))
    rec = calibration.recommend(g)
    assert rec["step_size"] == 3e-7  # MALA 0.96: the closest to 0.95 in the flat region
    assert "1e-07–1e-06" in rec["why"] and "sampler.step_size=3e-07" in rec["use"]


def test_the_recommendation_prefers_the_longest_flat_region_then_the_default_nbeta() -> None:
    a = _settings([(1e-7, 50.0, "healthy", 0.95), (3e-7, 50.5, "healthy", 0.93)], beta0=3.0)
    b = _settings([(1e-7, 50.0, "healthy", 0.97), (3e-7, 50.5, "healthy", 0.94)], beta0=1.0)
    c = _settings([(1e-7, 50.0, "healthy", 0.95), (3e-7, 50.3, "healthy", 0.95), (1e-6, 50.6, "healthy", 0.9)], beta0=0.3)
    for both in (pd.concat([a, b], ignore_index=True), pd.concat([a, b, c], ignore_index=True)):
        both["flat"] = True
        rec = calibration.recommend(both)
        assert rec["beta0"] == (0.3 if len(both) == 7 else 1.0)
    nothing = _settings([(1e-8, 30.0, "too small", 1.0), (1e-7, 40.0, "not converged", 0.99)]).assign(flat=False)
    assert calibration.recommend(nothing) is None
    assert calibration.advice(nothing).startswith("every setting is too small")


def test_calibration_sweep_on_a_dln_recommends_a_step_within_5_percent(tmp_path: Path) -> None:
    """The preset on the default DLN (d 800, λ 50): a step far too small, a good one, one too large
    and one that diverges. The recommendation lands within 5% of λ."""
    sweep = tmp_path / "cal"
    args = [
        "--multirun",
        "+experiment=calibration",
        "sampler.step_size=1e-8,3e-7,3e-6,1e-1",
        "posterior.beta0=1",
        f"hydra.sweep.dir={sweep}",
        "mlflow.enabled=false",
    ]
    proc = run_cli(args, cwd=tmp_path, timeout=600)
    # the diverging step is a verdict of the grid (it tries too-large steps on purpose), not a failure
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "calibration: recommended" in proc.stdout + proc.stderr
    for name in ("calibration.md", "calibration.png", "calibration.csv"):
        assert (sweep / name).is_file()
    table = pd.read_csv(sweep / "calibration.csv")
    by_step = dict(zip(table["step_size"], table["verdict"]))
    assert by_step == {1e-8: "too small", 3e-7: "healthy", 3e-6: "too large", 1e-1: "diverged"}
    (llc_true,) = set(pd.read_parquet(sweep / "llc_runs.parquet")["llc_true"])
    rec = calibration.recommend(table.assign(flat=table["flat"].astype(bool)))
    assert rec["step_size"] == 3e-7
    assert abs(rec["llc_mean"] / llc_true - 1) < 0.05
    assert "sampler.step_size=3e-07" in (sweep / "calibration.md").read_text()
    from lambda_hat.report import build

    written = build.build(pd.read_parquet(sweep / "llc_runs.parquet"), tmp_path / "report", source="test")
    assert "calibration.png" in written and "## Calibration" in (tmp_path / "report" / "report.md").read_text()

    out = subprocess.run(
        [sys.executable, "-m", "lambda_hat.calibrate", str(sweep), "--reference"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"reference (analytic): λ = {llc_true:.4g}" in out.stdout
    assert "| 3e-07 |" in out.stdout and "healthy (flat)" in out.stdout


def test_calibrate_on_a_folder_without_a_calibration_sweep_is_one_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lambda_hat.calibrate", str(tmp_path)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "no calibration sweep there" in out.stderr


@pytest.mark.parametrize("target_mala_accept, steps, expected", [(None, [1e-7, 1e-6], True), (0.95, [1e-7, 1e-6], False), (None, [1e-7, 1e-7], False)])
def test_is_calibration(target_mala_accept, steps, expected) -> None:
    t = pd.DataFrame({"cfg.sampler.step_size": steps, "cfg.sampler.target_mala_accept": [target_mala_accept] * 2})
    assert calibration.is_calibration(t) is expected
    # an Optuna search draws γ with the step: no (nβ, γ) at two steps, not a calibration grid
    search = t.assign(**{"cfg.posterior.beta0": 1.0, "cfg.posterior.gamma": [0.6, 166.0]})
    assert calibration.is_calibration(search) is False


@pytest.mark.slow  # ~30 s (a 2-job sweep and a NUTS reference run); CI stays under 20 min
def test_reference_check_of_a_user_target_runs_nuts_once_and_caches_it(tmp_path: Path) -> None:
    """No known λ: --reference runs the recommended setting's target and posterior with NUTS, caches
    it, and a second call reuses it. Of two healthy steps that disagree, the smaller is kept."""
    sweep, cache = tmp_path / "cal", tmp_path / "cache"
    args = [
        "--multirun", "+experiment=calibration", "model=user", "model.factory=tests.factories:linear",
        "sampler.step_size=1e-4,1e-3", "posterior.beta0=1", "sampler.batch_size=200",
        f"hydra.sweep.dir={sweep}", f"cache_dir={cache}", "mlflow.enabled=false",
    ]  # fmt: skip
    proc = run_cli(args, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-m", "lambda_hat.calibrate", str(sweep), "--reference"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert "reference (reference-run): λ = " in out.stdout
        assert "sampler.step_size=0.0001" in out.stdout  # the smaller of two disagreeing healthy steps
    assert len(list((cache / "references").glob("*/reference.json"))) == 1
