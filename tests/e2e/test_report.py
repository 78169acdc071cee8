"""python -m lambda_hat.report: the files it writes from a real sweep (and from its MLflow
experiment), that every figure has data in it, and the leaderboard's ranking and bootstrap."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from lambda_hat.report import build, figures, ranking, runs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ("llc_vs_reference.png", "error_vs_work.png", "running_llc.png")


def report_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "lambda_hat.report", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _points(ax) -> int:
    """Data points drawn on an axes: line vertices and scatter/errorbar offsets."""
    n = sum(len(line.get_xdata()) for line in ax.get_lines() if line.get_label() != "y = x")
    return n + sum(len(c.get_offsets()) for c in ax.collections)


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, path


def test_report_of_a_real_sweep(small_sweep, tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = report_cli([str(small_sweep.dir), "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in (*FIGURES, "report.md", "index.html", "summary.csv", "leaderboard.csv"):
        assert (out / name).is_file(), (name, proc.stdout)
    for name in FIGURES:
        _check_png(out / name)
    html = (out / "index.html").read_text()
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', html)) == len(FIGURES)  # self-contained
    assert "<table" in html and "sgld" in html and "hmc" in html
    md = (out / "report.md").read_text()
    assert "| DLN [4,6,4] r2 | 8 | hmc | 2 |" in md and "| DLN [4,6,4] r2 | 8 | sgld | 2 |" in md
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["estimator"]) == ["hmc", "sgld"] and (summary["runs"] == 2).all()
    assert (summary["rel_error"].abs() < 0.3).all(), summary  # the smoke preset's λ̂ are within 10%

    # every figure has data: the same table and traces, drawn in-process
    df = runs.prepare(pd.read_parquet(small_sweep.dir / "llc_runs.parquet"))
    style = figures.styles(df["estimator"])
    ref_fig = figures.llc_vs_reference(ranking.summary(df), style)
    work_fig = figures.error_vs_work(df, style)
    curves = build.running_curves(df, "DLN [4,6,4] r2", None, None)
    assert set(curves) == {"sgld", "hmc"} and all(len(c) >= 50 for c in curves.values())
    run_fig = figures.running_llc(curves, 8.0, "DLN [4,6,4] r2", style)
    assert _points(ref_fig.axes[0]) >= 2
    assert all(_points(ax) >= 4 for ax in work_fig.axes)  # 4 runs in each panel
    assert _points(run_fig.axes[0]) >= 100
    for c in curves.values():  # work grows along the curve; running λ̂ ends near the truth
        assert np.all(np.diff(c["fge"]) > 0) and abs(c["llc"].iloc[-1] / 8 - 1) < 0.3


def test_report_from_the_mlflow_experiment(small_sweep, tmp_path: Path) -> None:
    """The same report from MLflow only: traces come from the runs' artifacts."""
    out = tmp_path / "report"
    proc = report_cli(["--mlflow-experiment", small_sweep.experiment, "--tracking-uri", small_sweep.tracking_uri, "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in FIGURES:
        _check_png(out / name)
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["estimator"]) == ["hmc", "sgld"] and (summary["runs"] == 2).all()


def test_report_rejects_what_it_cannot_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lambda_hat.report.__main__ import main

    (tmp_path / "empty").mkdir()
    for args, says in (
        ([str(tmp_path / "nope")], "no such folder"),
        ([str(tmp_path / "empty")], "no job folders"),
        ([], "give sweep folder(s) DIR or --mlflow-experiment"),
        ([str(tmp_path / "empty"), "--level", "2"], "--level=2.0: must be in (0, 1)"),
    ):
        assert main([*args, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert says in err and err.strip().count("\n") == 0, err  # one line


def _synthetic(errors: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    """A prepared-looking table: rows of (budget.fge_per_chain, estimator) with the given signed errors (NaN = failed)."""
    rows = []
    for (fge, est), errs in errors.items():
        for i, e in enumerate(errs):
            failed = e != e
            rows.append(
                {
                    "sampler": est,
                    "family": "variational" if est == "vi" else "minibatch",
                    "model": "dln",
                    "cfg.model.widths": "[4, 6, 4]",
                    "cfg.model.true_rank": 2,
                    "status": "failed" if failed else "ok",
                    "llc_true": 8.0,
                    "llc_mean": None if failed else 8.0 * (1 + e),
                    "llc_sem": 0.1,
                    "seed": i,
                    "n_fge": 3 * fge,
                    "n_fge_warmup": fge,
                    "num_chains": 4,
                    "sampling_time_s": 1.0,
                    "warmup_time_s": 0.5,
                    "overrides": f"sampler={est} budget.fge_per_chain={fge:g} seed={i}",
                    "cfg.budget.fge_per_chain": fge,
                }
            )
    return runs.prepare(pd.DataFrame(rows))


def test_leaderboard_ranks_by_median_error_with_bootstrap_intervals() -> None:
    rng = np.random.default_rng(1)
    df = _synthetic(
        {
            (1e4, "a"): list(rng.normal(0, 0.02, 30)),  # |error| median ~1.3%
            (1e4, "b"): list(rng.normal(0.10, 0.02, 30)),  # ~10%
            (1e4, "vi"): list(rng.normal(-0.05, 0.01, 29)) + [float("nan")],  # ~5%, one failed run
            (1e3, "a"): list(rng.normal(0.3, 0.05, 30)),
            (1e3, "b"): list(rng.normal(0.02, 0.01, 30)),
        }
    )
    # the budget level is the run's budget.fge_per_chain (a column of the sweep table), not its overrides
    assert list(df["budget"].unique()) == ["10,000 FGE", "1,000 FGE"] and runs.budget_order(df) == ["1,000 FGE", "10,000 FGE"]
    board = ranking.leaderboard(df, level=0.9, seed=0)
    assert list(zip(board["budget"], board["rank"], board["estimator"])) == [
        ("1,000 FGE", 1, "b"),
        ("1,000 FGE", 2, "a"),
        ("10,000 FGE", 1, "a"),
        ("10,000 FGE", 2, "vi"),
        ("10,000 FGE", 3, "b"),
    ]
    for _, r in board.iterrows():
        errs = df[(df["budget"] == r["budget"]) & (df["estimator"] == r["estimator"])]["abs_rel_error"]
        assert r["median_abs_rel_error"] == pytest.approx(np.median(errs))
        assert r["ci_low"] <= r["median_abs_rel_error"] <= r["ci_high"]
        assert r["ci_high"] - r["ci_low"] < 0.05  # 30 runs pin a median down to a few percent
        assert r["fge_per_chain"] == pytest.approx({"1,000 FGE": 1e3, "10,000 FGE": 1e4}[r["budget"]])
    vi = board[board["estimator"] == "vi"].iloc[0]
    assert vi["failed"] == 1 and vi["runs"] == 30 and vi["family"] == "variational"  # a VI row is just a row
    # the interval is a real bootstrap: wider with fewer runs, reproducible by seed
    few = _synthetic({(1e3, "a"): [0.01, 0.05, 0.2, 0.02, 0.08]})
    lo, hi = ranking.bootstrap_median(few["abs_rel_error"].to_numpy(), level=0.9, seed=3)
    assert (lo, hi) == ranking.bootstrap_median(few["abs_rel_error"].to_numpy(), level=0.9, seed=3)
    assert lo < 0.05 < hi and hi - lo > 0.03
    # a failed run is an infinite error: the median survives it, the upper bound may not
    lo, hi = ranking.bootstrap_median(np.array([0.01, 0.02, np.inf]), seed=0)
    assert lo == 0.01 and hi == np.inf
    assert np.isnan(ranking.bootstrap_median(np.array([0.1]))[0])


def test_summary_table_per_estimator_and_target() -> None:
    df = _synthetic({(1e3, "a"): [0.1, 0.3], (1e3, "vi"): [0.0, float("nan")]})
    s = ranking.summary(df).set_index("estimator")
    assert s.loc["a", "llc_mean"] == pytest.approx(8 * 1.2) and s.loc["a", "rel_error"] == pytest.approx(0.2)
    assert s.loc["a", "llc_se"] == pytest.approx(np.std([8.8, 10.4], ddof=1) / np.sqrt(2))
    assert s.loc["vi", "llc_se"] == pytest.approx(0.1) and s.loc["vi", "health"] == "1 failed"  # one run left: its own se
    assert s.loc["a", "target"] == "DLN [4,6,4] r2" and s.loc["a", "reference"] == 8.0
