"""A whole run: the files it leaves behind and what it logs to MLflow (a real SQLite store)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lambda_hat.runner import RunFailed, run
from tests.conftest import TINY

REQUIRED = {
    "llc_mean",
    "llc_std",
    "llc_sem",
    "llc_ci95",
    "llc_ci95_bias",
    "llc_ci95_covers",
    "llc_bias_corrected",
    "llc_per_chain",
    "llc_true",
    "ess_bulk",
    "r_hat",
    "n_fge",
    "n_fge_warmup",
    "sampling_time_s",
    "compile_time_s",
    "status",
    "sampler",
    "n",
    "d",
    "nbeta",
    "gamma",
    "L0",
    "target_id",
}


def _mlflow_runs(tmp_path: Path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("lambda_hat")
    return client, client.search_runs([exp.experiment_id])


def test_run_writes_outputs_and_logs_to_mlflow(make_cfg, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = make_cfg(*TINY, "sampler.num_steps=1000", "sampler.num_burnin=500", "sampler.until_converged=false", mlflow=True)
    m = run(cfg, out, tmp_path)

    on_disk = json.loads((out / "metrics.json").read_text())
    assert REQUIRED <= on_disk.keys()
    assert on_disk == json.loads(json.dumps(m))
    assert m["n"] == 10000 and m["d"] == 4 * 6 + 6 * 4 and m["sampler"] == "sgld"
    assert m["nbeta"] == pytest.approx(10000 / __import__("math").log(10000), rel=1e-6)
    assert len(m["llc_per_chain"]) == 4 and m["llc_true"] == 8.0
    assert m["sampling_time_s"] > 0 and m["compile_time_s"] > 0

    trace = pd.read_parquet(out / "trace.parquet")
    assert len(trace) == 4 * 1000 and set(trace["chain"]) == {0, 1, 2, 3}
    kept = trace[~trace["burnin"]]
    assert len(kept) == 4 * 500
    assert kept["llc"].mean() == pytest.approx(m["llc_mean"], rel=1e-6)
    for name in ("trace.png", "llc_running.png", "config_resolved.yaml"):
        assert (out / name).stat().st_size > 0
    assert "step_size: 5.0e-07" in (out / "config_resolved.yaml").read_text()

    client, runs = _mlflow_runs(tmp_path)
    assert len(runs) == 1
    r = runs[0]
    assert r.info.status == "FINISHED"
    assert r.data.params["sampler.name"] == "sgld" and r.data.params["model.widths"] == "[4, 6, 4]"
    assert r.data.metrics["llc_mean"] == pytest.approx(m["llc_mean"])
    assert r.data.metrics["llc_chain_0"] == pytest.approx(m["llc_per_chain"][0])
    assert r.data.tags["target_id"] == m["target_id"] and r.data.tags["sampler"] == "sgld"
    assert r.data.tags["health"] == ("; ".join(m["warnings"]) or "ok")
    # why sampling stopped and how long it ran (tests/unit/test_driver_convergence.py: until converged)
    assert r.data.tags["stop_reason"] == m["stop_reason"] == "fixed length" and r.data.metrics["num_steps"] == 1000
    # the device the run actually used (tests run with two CPU devices, see conftest)
    assert (m["device_platform"], m["device_count"]) == ("cpu", 2) and r.data.tags["device_platform"] == "cpu"
    assert r.data.metrics["device_count"] == 2 and r.data.tags["device_kind"] == m["device_kind"]
    artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert (tmp_path / "mlruns").is_dir()  # artifacts live beside the SQLite store
    assert {"metrics.json", "trace.parquet", "trace.png", "llc_running.png", "config_resolved.yaml"} <= artifacts


def test_failing_run_is_marked_failed_in_mlflow(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(*TINY, "sampler=sgld_lau", "sampler.step_size=1.0", "sampler.num_steps=100", "sampler.num_burnin=50", "plots=false", mlflow=True)
    with pytest.raises(RunFailed):
        run(cfg, tmp_path / "out", tmp_path)
    _, runs = _mlflow_runs(tmp_path)
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].data.tags["status"] == "failed"


def test_interrupted_run_is_not_left_running(make_cfg, tmp_path: Path, monkeypatch) -> None:
    import lambda_hat.runner as runner

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_chains", boom)
    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(*TINY, mlflow=True), tmp_path / "out", tmp_path)
    _, runs = _mlflow_runs(tmp_path)
    assert [r.info.status for r in runs] == ["KILLED"]


def test_short_run_warns_that_its_error_bar_is_unreliable(make_cfg, tmp_path: Path, caplog) -> None:
    cfg = make_cfg(*TINY, "sampler.num_steps=40", "sampler.num_burnin=20", "plots=false")
    with caplog.at_level("WARNING", logger="lambda_hat.runner"):
        m = run(cfg, tmp_path / "out", tmp_path)
    assert m["ess_bulk"] < 100
    assert any(w.startswith("ess_bulk") for w in m["warnings"]), m["warnings"]
    assert "health: ess_bulk" in caplog.text
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["warnings"] == m["warnings"]


def test_summary_line_shows_warmup_time_when_there_was_one() -> None:
    from lambda_hat.summary import summary_line

    m = {
        "llc_mean": 8.1,
        "llc_sem": 0.2,
        "llc_true": 8,
        "llc_rel_error": 0.0125,
        "sampler": "nuts",
        "model": "dln",
        "d": 48,
        "chains_ok": 4,
        "num_chains": 4,
        "sampling_time_s": 105.8,
        "compile_time_s": 3.8,
        "status": "ok",
    }
    assert "warm-up" not in summary_line(m)
    line = summary_line({**m, "warmup_time_s": 98.4})
    assert "warm-up 98.40s + sampling 105.80s + compile 3.80s" in line and line.startswith("λ̂ = 8.100 ± 0.200")
    assert summary_line({**m, "llc_ci95": [7.62, 8.49]}).startswith("λ̂ = 8.100 ± 0.200 (95% CI 7.620–8.490) | true λ = 8")


def test_run_names_tell_targets_apart(make_cfg) -> None:
    """A sweep's children over several targets differ by name in MLflow's runs list."""
    from lambda_hat.summary import target_name

    assert target_name(make_cfg("model.widths=[5,8,6,4]", "model.true_rank=3").model) == "dln[5,8,6,4]r3"
    assert target_name(make_cfg("model.widths=[6,10,10,6]", "model.true_rank=null").model) == "dln[6,10,10,6]"
    assert target_name(make_cfg("model=mlp").model) == "mlp"
