"""The sweep table (lambda_hat.sweeps, python -m lambda_hat.aggregate): one row per job folder."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from lambda_hat import aggregate as cli
from lambda_hat.sweeps import callbacks
from lambda_hat.sweeps.aggregate import collect_rows, write_table
from lambda_hat.sweeps.mlflow_table import from_mlflow
from lambda_hat.sweeps.orphans import finalize_orphan_runs

ROOT = Path(__file__).resolve().parents[2]
# "++": works whether or not conf/config.yaml registers the callback already.
CALLBACK = "++hydra.callbacks.aggregate._target_=lambda_hat.sweeps.callbacks.AggregateCallback"
# 2 x 2: posterior.gamma=-1 passes the app's up-front check (it checks only the first value of a
# sweep) and fails validation inside jobs 1 and 3, which write failure.json.
SWEEP = [
    "model.widths=[3,4,3]",
    "model.true_rank=1",
    "data.n=2000",
    "sampler=sgld",
    "sampler.batch_size=100",
    "sampler.num_steps=400",
    "sampler.until_converged=false",  # the table is under test, not the run length
    "sampler.num_tune=100",
    "sampler.num_chains=2",
    "seed=0,1",
    "posterior.gamma=1,-1",
    "progress=false",
    "mlflow.enabled=false",
]  # plots left at its default: off inside a sweep


# ------------------------------------------------------------------------- a real 2x2 multirun


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    base = tmp_path_factory.mktemp("multirun")
    sweep_dir = base / "sweep"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "lambda_hat", "--multirun", *SWEEP, f"hydra.sweep.dir={sweep_dir}", CALLBACK],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return sweep_dir, proc


def test_every_job_of_the_sweep_ran(sweep: tuple[Path, subprocess.CompletedProcess]) -> None:
    # Hydra's basic launcher runs the whole batch even when a job raises (it re-raises afterwards).
    sweep_dir, proc = sweep
    for num in range(4):
        assert (sweep_dir / str(num) / ".hydra" / "config.yaml").is_file(), proc.stderr[-3000:]
    assert (sweep_dir / "0" / "metrics.json").is_file() and (sweep_dir / "2" / "metrics.json").is_file()
    assert (sweep_dir / "1" / "failure.json").is_file() and (sweep_dir / "3" / "failure.json").is_file()


def test_cli_builds_the_sweep_table(sweep: tuple[Path, subprocess.CompletedProcess], tmp_path: Path, capsys: Any) -> None:
    sweep_dir, _ = sweep
    out = tmp_path / "rebuilt.parquet"
    assert cli.main([str(sweep_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"4 jobs: 2 ok, 2 failed, 0 killed -> {out.resolve()}"
    assert printed[1].startswith("| job_num | overrides | sampler | llc_mean | llc_sem | llc_true | llc_rel_error | status |")
    assert "| 1 | seed=0 posterior.gamma=-1 | sgld |" in printed[4]  # only the overrides that vary

    df = pd.read_parquet(out)
    assert list(df["job_num"]) == [0, 1, 2, 3]
    assert {"cfg.seed", "cfg.sampler.name", "cfg.posterior.gamma", "cfg.model.widths", "cfg.data.n"} <= set(df.columns)
    assert not any(c.startswith("cfg.hydra") for c in df.columns)
    failed = df[df["cfg.posterior.gamma"] < 0]
    ok = df[df["cfg.posterior.gamma"] > 0]
    assert list(failed["job_num"]) == [1, 3] and set(failed["status"]) == {"failed"}
    assert all("posterior.gamma" in e for e in failed["error"])
    assert failed["llc_mean"].isna().all() and set(failed["sampler"]) == {"sgld"}
    assert set(ok["status"]) == {"ok"} and ok["error"].isna().all()
    assert all(math.isfinite(v) for v in ok["llc_mean"]) and (ok["llc_true"] == 4.5).all()
    assert [len(json.loads(v)) for v in ok["llc_per_chain"]] == [2, 2]
    assert list(df["cfg.seed"]) == [0, 0, 1, 1] and set(df["cfg.model.widths"]) == {"[3, 4, 3]"}
    assert list(df["overrides"])[1].split()[-3:-2] == ["posterior.gamma=-1"]
    assert set(df["sweep_dir"]) == {str(sweep_dir.resolve())}
    assert list(df["output_dir"]) == [str((sweep_dir / str(i)).resolve()) for i in range(4)]
    assert "timing_notes" not in df.columns and "n_warnings" in df.columns
    # Inside a sweep plots default to off (plots: null in the composed config; each job's
    # config_resolved.yaml records the choice), and the second job with the same shapes reuses the
    # first one's compiled programs (one process, basic launcher).
    assert list(ok["cfg.plots"]) == [None, None] and not list(sweep_dir.glob("*/trace.png"))
    assert "plots: false" in (sweep_dir / "0" / "config_resolved.yaml").read_text()
    assert list(ok["compile_time_s"])[1] == 0 and list(ok["warmup_compile_time_s"])[1] == 0
    assert list(ok["compile_time_s"])[0] > 0


def test_cli_compares_the_samplers_of_a_sweep(sweep: tuple[Path, subprocess.CompletedProcess], tmp_path: Path, capsys: Any) -> None:
    sweep_dir, _ = sweep
    assert cli.main([str(sweep_dir), "--out", str(tmp_path / "t.parquet"), "--compare"]) == 0
    printed = capsys.readouterr().out
    df = pd.read_parquet(tmp_path / "t.parquet")
    ok = df[df["status"] == "ok"]
    # seeds 0 and 1 draw different teachers: one group per target, then a per-sampler summary
    for target, mean, sem in zip(ok["target_id"], ok["llc_mean"], ok["llc_sem"]):
        assert f"true λ = 4.5, target {target}**" in printed
        assert f"| `sgld` | {mean:.3f} ± {sem:.3f} |" in printed
    assert "Per sampler over the 2 targets:" in printed
    assert "| `sgld` | 2 |" in printed
    assert "- #1 `sgld` failed: posterior.gamma=-1" in printed and "- #3 `sgld` failed" in printed


def test_callback_writes_the_table_and_the_sweep_exits_nonzero(sweep: tuple[Path, subprocess.CompletedProcess], tmp_path: Path) -> None:
    # NEEDS THE APP CHANGE: with Hydra 1.3's basic sweeper, a job that raises makes the sweep
    # re-raise after the batch, so on_multirun_end (this callback) never runs. The app's task
    # function must, in a multirun, write failure.json and return instead of raising, and main()
    # exit non-zero after the sweep.
    sweep_dir, proc = sweep
    table = sweep_dir / "llc_runs.parquet"
    assert table.is_file(), "no llc_runs.parquet: on_multirun_end did not run (see the comment)\n" + proc.stderr[-3000:]
    assert proc.returncode != 0  # two jobs failed
    assert "sweep table: 4 jobs: 2 ok, 2 failed, 0 killed" in proc.stdout + proc.stderr
    out = tmp_path / "rebuilt.parquet"
    assert cli.main([str(sweep_dir), "--out", str(out)]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(table), pd.read_parquet(out))
    assert not list(sweep_dir.glob(".*.tmp"))


def test_killed_job_and_its_orphan_mlflow_run(sweep: tuple[Path, subprocess.CompletedProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow import MlflowClient

    sweep_dir, _ = sweep
    # A job killed with SIGKILL: only .hydra/, app.log and (tracking on) mlflow_run.json remain.
    killed = tmp_path / "sweep" / "0"
    shutil.copytree(sweep_dir / "0", killed)
    shutil.copy(sweep_dir / "multirun.yaml", killed.parent)
    for p in killed.iterdir():
        if p.name not in (".hydra", "app.log"):
            p.unlink()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("sweeps")).info.run_id
    (killed / "mlflow_run.json").write_text(json.dumps({"run_id": run_id, "tracking_uri": uri}))
    params = {"model.widths": "[3, 4, 3]", "sampler.step_size": "1e-06", "sampler.name": "sgld", "plots": "False", "target_seed": "None"}
    for key, value in params.items():
        client.log_param(run_id, key, value)

    df = collect_rows(tmp_path)
    assert len(df) == 1 and df.at[0, "status"] == "killed" and pd.isna(df.at[0, "error"])
    assert df.at[0, "job_num"] == 0 and df.at[0, "mlflow_run_id"] == run_id
    assert "llc_mean" not in df  # no metrics.json, no metric columns

    # A job that may still run is left alone: its folder changed recently, or its process lives.
    assert finalize_orphan_runs(df, min_idle_s=3600).at[0, "mlflow_status"] == "RUNNING"
    alive = {"run_id": run_id, "tracking_uri": uri, "pid": os.getppid(), "host": socket.gethostname()}
    (killed / "mlflow_run.json").write_text(json.dumps(alive))
    assert finalize_orphan_runs(df).at[0, "mlflow_status"] == "RUNNING"
    assert client.get_run(run_id).info.status == "RUNNING"

    (killed / "mlflow_run.json").write_text(json.dumps({"run_id": run_id, "tracking_uri": uri}))
    done = finalize_orphan_runs(df)
    assert done.at[0, "mlflow_status"] == "KILLED"
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and run.info.end_time >= run.info.start_time
    assert run.data.tags["status"] == "killed"
    assert finalize_orphan_runs(df).at[0, "mlflow_status"] == "KILLED"  # idempotent

    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    before = mlflow.get_tracking_uri()
    runs = from_mlflow("sweeps", uri)
    # the URI given wins over $MLFLOW_TRACKING_URI, which stays as it was (nothing global is switched)
    assert os.environ["MLFLOW_TRACKING_URI"] == elsewhere and mlflow.get_tracking_uri() == before
    assert not (tmp_path / "elsewhere.db").exists()
    assert list(runs["mlflow_run_id"]) == [run_id] and list(runs["status"]) == ["killed"]
    assert list(runs["mlflow_status"]) == ["KILLED"] and runs["end_time"].dt.tz is not None
    assert (runs["end_time"] >= runs["start_time"]).all()
    # params as lambda_hat.tracking.values logs them (str of the value) come back typed, lists as JSON
    assert runs.at[0, "cfg.model.widths"] == "[3, 4, 3]" and runs.at[0, "cfg.sampler.step_size"] == 1e-6
    assert runs.at[0, "sampler"] == "sgld" and not runs.at[0, "cfg.plots"] and pd.isna(runs.at[0, "cfg.target_seed"])
    out = tmp_path / "from_mlflow.parquet"
    assert cli.main(["--mlflow-experiment", "sweeps", "--tracking-uri", uri, "--out", str(out)]) == 0
    assert len(pd.read_parquet(out)) == 1
    assert cli.main(["--mlflow-experiment", "nope", "--tracking-uri", uri, "--out", str(out)]) == 2


# --------------------------------------------------------------------- synthetic job folders


def _job(
    folder: Path,
    *,
    num: int | None = None,
    overrides: tuple[str, ...] = (),
    cfg: dict | None = None,
    metrics: dict | None = None,
    failure: dict | None = None,
) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    cfg = cfg or {"sampler": {"name": "sgld", "step_size": 1e-6}, "model": {"name": "dln", "widths": [3, 4, 3]}, "seed": 0}
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    hydra = {"mode": "RUN" if num is None else "MULTIRUN", "job": {"num": "???" if num is None else num}}
    hydra["job"]["override_dirname"] = ",".join(sorted(overrides))
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    if failure is not None:
        (folder / "failure.json").write_text(json.dumps(failure))
    return folder


OK = {
    "status": "ok",
    "llc_mean": 4.2,
    "llc_sem": 0.1,
    "llc_true": 4.5,
    "llc_rel_error": -0.07,
    "sampler": "sgld",
    "llc_per_chain": [4.1, 4.3],
    "warnings": [],
    "timing_notes": {"x": "y"},
    "hessian_check": {"rank": 3},
    "num_chains": 2,
    "gram_loss": True,
}


def test_statuses_and_errors_of_every_kind_of_job(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun" / "a"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("{}\n")
    _job(sweep / "0", num=0, overrides=("seed=0",), metrics=OK)
    diverged = {**OK, "status": "failed", "llc_mean": None, "llc_per_chain": [None, None], "warnings": ["all diverged"]}
    _job(sweep / "1", num=1, overrides=("seed=1",), metrics=diverged, failure={"status": "failed", "error": "all 2 chains produced NaN/inf"})
    _job(sweep / "2", num=2, overrides=("seed=2",), failure={"status": "failed", "error": "posterior.gamma=-1.0 is invalid"})
    _job(sweep / "3", num=3, overrides=("seed=3",), failure={"status": "killed", "error": "interrupted (SystemExit 143)"})
    _job(sweep / "4", num=4, overrides=("seed=4",))  # SIGKILL: only .hydra/
    _job(sweep / "5", num=5, overrides=("seed=5",), metrics={**OK, "status": "some_chains_diverged", "num_chains": 2.5})
    no_sampler = {k: v for k, v in OK.items() if k != "sampler"}
    single = _job(
        tmp_path / "outputs" / "2026-01-01" / "10-00-00", metrics=no_sampler, cfg={"sampler": {"name": "hmc", "step_size": "auto"}, "model": {"name": "mlp"}}
    )

    df = collect_rows(tmp_path)
    by_seed = {o: r for o, r in zip(df["overrides"], df.to_dict("records"))}
    assert by_seed["seed=0"]["status"] == "ok" and pd.isna(by_seed["seed=0"]["error"])
    assert by_seed["seed=1"]["status"] == "failed" and "NaN" in by_seed["seed=1"]["error"]  # metrics.json wins
    assert by_seed["seed=2"]["status"] == "failed" and "posterior.gamma" in by_seed["seed=2"]["error"]
    assert by_seed["seed=3"]["status"] == "killed" and "SystemExit" in by_seed["seed=3"]["error"]
    assert by_seed["seed=4"]["status"] == "killed" and pd.isna(by_seed["seed=4"]["error"])
    assert by_seed["seed=5"]["status"] == "some_chains_diverged"
    assert pd.isna(by_seed[""]["job_num"]) and pd.isna(by_seed[""]["sweep_dir"]) and by_seed[""]["sampler"] == "hmc"
    assert by_seed["seed=2"]["sampler"] == "sgld"  # from the config when there is no metrics.json
    swept = df[df["sweep_dir"].notna()]
    assert list(swept["job_num"]) == [0, 1, 2, 3, 4, 5] and set(swept["sweep_dir"]) == {str(sweep)}
    assert json.loads(by_seed["seed=0"]["llc_per_chain"]) == [4.1, 4.3]
    assert json.loads(by_seed["seed=0"]["hessian_check"]) == {"rank": 3} and "timing_notes" not in df
    assert by_seed["seed=1"]["n_warnings"] == 1
    assert df["cfg.model.widths"].iloc[0] == "[3, 4, 3]"
    # mixed types across jobs: strings (sampler.step_size 1e-06 vs "auto"); ints and floats: floats
    assert list(swept["cfg.sampler.step_size"]) == ["1e-06"] * 6 and by_seed[""]["cfg.sampler.step_size"] == "auto"
    assert df["num_chains"].dtype == "float64" and df["gram_loss"].dtype == "boolean"

    path = write_table(tmp_path, df)
    assert path == tmp_path / "llc_runs.parquet" and not list(tmp_path.glob(".*.tmp"))
    pd.testing.assert_frame_equal(pd.read_parquet(path), df)
    assert len(collect_rows(sweep)) == 6 and len(collect_rows(single)) == 1  # one sweep; one job folder
    assert len(collect_rows(sweep, single, sweep)) == 7  # several roots, each job once


def test_cli_exits_2_in_one_line_when_there_is_nothing_to_aggregate(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert cli.main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no job folders" in err
    assert cli.main([str(tmp_path / "missing")]) == 2
    assert cli.main([str(tmp_path), str(tmp_path)]) == 2  # several DIRs need --out
    assert not (tmp_path / "empty" / "llc_runs.parquet").exists()


def test_callback_writes_the_table_and_never_raises(tmp_path: Path, caplog: Any) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("{}\n")
    _job(sweep / "0", num=0, overrides=("seed=0",), metrics=OK)
    _job(sweep / "1", num=1, overrides=("seed=1",), failure={"status": "failed", "error": "boom"})
    cb = callbacks.AggregateCallback()
    cb.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    df = pd.read_parquet(sweep / "llc_runs.parquet")
    assert list(df["status"]) == ["ok", "failed"]
    from lambda_hat.sweeps import outcome

    assert outcome.current().table == {"jobs": 2, "ok": 1, "failed": 1, "killed": 0, "path": str(sweep / "llc_runs.parquet")}
    # nothing to aggregate, a broken config, an unwritable folder: a warning, never an exception
    cb.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "none")}}}))
    cb.on_multirun_end(OmegaConf.create({}))
    callbacks.AggregateCallback(filename="multirun.yaml/t.parquet").on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert caplog.text.count("sweep table not written") == 2 and "no job folders" in caplog.text


def test_a_failing_addition_to_the_table_is_one_line_and_the_rest_still_happens(tmp_path: Path, caplog: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from lambda_hat.sweeps import calibration, outcome, parent

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("{}\n")
    _job(sweep / "0", num=0, overrides=("seed=0",), metrics=OK)

    def broken(*args: Any) -> None:
        raise ValueError("Data cannot be log-scaled")

    finished = []
    monkeypatch.setattr(calibration, "write_report", broken)
    monkeypatch.setattr(parent, "finish", lambda *args: finished.append(args))
    callbacks.AggregateCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert (sweep / "llc_runs.parquet").is_file() and "sweep table not written" not in caplog.text
    assert "sweep table written, but the calibration report failed (ValueError: Data cannot be log-scaled)" in caplog.text
    assert len(finished) == 1 and outcome.current().table["ok"] == 1  # the parent run still ends


def test_a_job_killed_while_hydra_wrote_its_folder_keeps_its_number(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("{}\n")
    _job(sweep / "0", num=0, overrides=("seed=0",), metrics=OK)
    _job(sweep / "2", num=2, overrides=("seed=2",), metrics=OK)
    half = sweep / "1" / ".hydra"
    half.mkdir(parents=True)
    (half / "config.yaml").write_text(yaml.safe_dump({"sampler": {"name": "sgld"}, "seed": 1}))  # Hydra writes it first
    (half / "hydra.yaml").write_text("")  # killed here: hydra.yaml empty, no overrides.yaml
    df = collect_rows(sweep)
    assert list(df["job_num"]) == [0, 1, 2] and list(df["status"]) == ["ok", "killed", "ok"]


def test_a_calibration_grids_diverged_steps_do_not_fail_the_command() -> None:
    from lambda_hat.sweeps.outcome import SweepOutcome

    counts = {"jobs": 4, "ok": 3, "failed": 1, "killed": 0, "path": "t.parquet"}
    assert SweepOutcome(table=counts).exit_status()[0] == 1
    assert SweepOutcome(table={**counts, "diverged_verdicts": 1}).exit_status() == (0, None)
    code, message = SweepOutcome(table={**counts, "failed": 2, "diverged_verdicts": 1}).exit_status()
    assert code == 1 and "1 job(s) of the sweep failed" in message  # a crash is still a failure


def test_compare_groups_by_target_across_precisions() -> None:
    """A float32 and a float64 run of one target (nβ stored in each precision) are one group; |z|
    is the difference over the combined standard error."""
    from lambda_hat.sweeps.compare import compare_table

    rows = [
        {
            "job_num": 0,
            "status": "ok",
            "sampler": "sgld",
            "model": "dln",
            "target_id": "t1",
            "nbeta": float(np.float32(263.1)),
            "gamma": 1.0,
            "llc_mean": 8.4,
            "llc_sem": 0.3,
            "llc_true": 8.0,
            "llc_rel_error": 0.05,
            "num_chains": 4,
            "n_fge": 100.0,
            "n_fge_warmup": 20.0,
            "warnings": json.dumps(["ess_bulk = 50 < 100: ..."]),
            "mala_accept": 0.92,
        },
        {
            "job_num": 1,
            "status": "ok",
            "sampler": "hmc",
            "model": "dln",
            "target_id": "t1",
            "nbeta": 263.1,
            "gamma": 1.0,
            "llc_mean": 8.0,
            "llc_sem": 0.4,
            "llc_true": 8.0,
            "llc_rel_error": 0.0,
            "num_chains": 4,
            "n_fge": 400.0,
            "n_fge_warmup": 0.0,
            "warnings": "[]",
            "acceptance_rate": 0.9,
        },
    ]
    text = compare_table(pd.DataFrame(rows))
    assert text.count("**dln") == 1 and "Per sampler" not in text  # one target
    assert "| `sgld` | 8.400 ± 0.300 | +5.0% | 0.8 (`hmc`) |" in text  # 0.4 / 0.5
    assert "| 30 | MALA 0.92; warnings: ess_bulk |" in text  # FGE per chain, health
    assert "| `hmc` | 8.000 ± 0.400 | +0.0% | 0.8 (`sgld`) |" in text and "accept 0.90; ok" in text
