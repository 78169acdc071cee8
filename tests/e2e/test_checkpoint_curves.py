"""λ̂ over training: a folder or glob of checkpoints is one sweep job per checkpoint, ordered by
training step, with the step and losses in the table, a figure, the MLflow parent's metric
history and the report; resumable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lambda_hat as lh
from lambda_hat import app
from lambda_hat.sweeps import checkpoints
from tests import factories
from tests.conftest import run_cli

QUICK = ["sampler.num_chains=2", "sampler.num_steps=400", "sampler.until_converged=false", "sampler.num_tune=200", "sampler.batch_size=64", "progress=false"]


def _save_checkpoints(folder: Path, steps: list[int], sidecar: bool = True) -> list[Path]:
    """Weights of the test classifier scaled along a path (a stand-in for training), one per step."""
    folder.mkdir(parents=True, exist_ok=True)
    t = factories.classifier("jax")
    paths = []
    for s in steps:
        params = [{k: np.asarray(v) * (1 + s / 1000) for k, v in layer.items()} for layer in t.params]
        paths.append(lh.save_npz(folder / f"step_{s}.npz", params))
        if sidecar:
            (folder / f"step_{s}.json").write_text(json.dumps({"step": s, "train_loss": 1.0 / (1 + s), "test_loss": 2.0 / (1 + s)}))
    return paths


def test_training_info_from_a_sidecar_or_the_file_name(tmp_path: Path) -> None:
    (p,) = _save_checkpoints(tmp_path / "a", [200])
    assert checkpoints.training_info(p) == {"training_step": 200, "train_loss": 1 / 201, "test_loss": 2 / 201}
    (q,) = _save_checkpoints(tmp_path / "b", [30], sidecar=False)
    assert checkpoints.training_info(q) == {"training_step": 30, "train_loss": None, "test_loss": None}


def test_a_folder_or_glob_becomes_a_sweep_ordered_by_training_step(tmp_path: Path) -> None:
    paths = _save_checkpoints(tmp_path / "ckpts", [1000, 20, 300])
    (tmp_path / "ckpts" / "notes.txt").write_text("not a checkpoint")
    for value in (str(tmp_path / "ckpts"), str(tmp_path / "ckpts" / "step_*.npz")):
        argv, error = checkpoints.expand_argv(["model=user", f"model.checkpoint={value}"], multirun=True)
        assert error is None
        listed = argv[1].split("=", 1)[1].split(",")
        assert [Path(v.strip("'")).name for v in listed] == ["step_20.npz", "step_300.npz", "step_1000.npz"]
    assert checkpoints.expand_argv([f"model.checkpoint={paths[0]}"], multirun=True) == ([f"model.checkpoint={paths[0]}"], None)
    _, error = checkpoints.expand_argv([f"model.checkpoint={tmp_path}/ckpts"], multirun=False)
    assert error == f"model.checkpoint={tmp_path}/ckpts: names 3 checkpoints; add --multirun to estimate λ̂ at each (one job per checkpoint)"
    _, error = checkpoints.expand_argv([f"model.checkpoint={tmp_path}/none_*.npz"], multirun=True)
    assert error is not None and error.startswith(f"model.checkpoint={tmp_path}/none_*.npz: matches no checkpoint")


def test_without_multirun_it_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _save_checkpoints(tmp_path / "ckpts", [1, 2])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lambda_hat", "model=user", "model.factory=tests.factories:classifier", "model.checkpoint=ckpts"])
    with pytest.raises(SystemExit) as e:
        app.main()
    assert e.value.code == 2
    assert (
        capsys.readouterr().err.strip()
        == "lambda_hat: error: model.checkpoint=ckpts: names 2 checkpoints; add --multirun to estimate λ̂ at each (one job per checkpoint)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpts"]


def test_llc_over_training_end_to_end_with_mlflow_report_and_resume(tmp_path: Path) -> None:
    _save_checkpoints(tmp_path / "ckpts", [10, 100, 1000])
    sweep = tmp_path / "sweep"
    args = [
        "--multirun",
        "model=user",
        "model.factory=tests.factories:classifier",
        "+model.args.framework=jax",
        "model.checkpoint=ckpts/",
        *QUICK,
        f"hydra.sweep.dir={sweep}",
    ]
    proc = run_cli(args, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_parquet(sweep / "llc_runs.parquet")
    assert list(table.sort_values("job_num")["training_step"]) == [10, 100, 1000]
    assert list(table.sort_values("job_num")["train_loss"]) == pytest.approx([1 / 11, 1 / 101, 1 / 1001])
    assert table["target_id"].nunique() == 3 and (table["status"] == "ok").all()
    assert (sweep / "llc_over_training.png").stat().st_size > 10_000

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("lambda_hat")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`lambda_hat.kind` = 'sweep'")
    history = client.get_metric_history(parent.info.run_id, "llc")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [10, 100, 1000]
    by_step = dict(zip(table["training_step"], table["llc_mean"]))
    assert all(m.value == pytest.approx(by_step[m.step]) for m in history)
    assert "llc_over_training.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}

    from lambda_hat.report.build import build

    written = build(table, tmp_path / "report", source=str(sweep))
    assert "llc_over_training.png" in written and "λ̂ over training" in (tmp_path / "report" / "report.md").read_text()

    # training went on: a later checkpoint; resume runs only that one
    _save_checkpoints(tmp_path / "ckpts", [5000])
    proc = run_cli([*args, "resume=true"], cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_parquet(sweep / "llc_runs.parquet")
    assert list(table.sort_values("job_num")["training_step"]) == [10, 100, 1000, 5000]
    reused = (proc.stdout + proc.stderr).count("is complete (status ok); its results are reused")
    assert reused == 3, proc.stderr[-3000:]


def test_resume_finds_the_sweep_after_more_checkpoints_were_saved(tmp_path: Path) -> None:
    from lambda_hat.sweeps.resume import _same_sweep

    a = ["model=user", "model.checkpoint='c/s_1.npz','c/s_2.npz'", "seed=0"]
    assert _same_sweep(a, ["model=user", "model.checkpoint='c/s_1.npz','c/s_2.npz','c/s_3.npz'", "seed=0"])
    assert not _same_sweep(a, ["model=user", "model.checkpoint='c/s_0.npz','c/s_1.npz','c/s_2.npz'", "seed=0"])
    assert not _same_sweep(a, ["model=user", "model.checkpoint='c/s_1.npz','c/s_2.npz'", "seed=1"])
