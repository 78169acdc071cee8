"""Optuna searches (+hparams_search=...): the resumable sweeper, the objective and cached references.

The end-to-end tests run the real CLI in a subprocess on a tiny target; the sweeper's interruption
logic and the reference cache's locking are also tested in-process / with a fake reference run,
which needs no JAX.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
optuna = pytest.importorskip("optuna")
pd = pytest.importorskip("pandas")

ROOT = Path(__file__).resolve().parents[2]

DLN = [
    "model.widths=[3,4,3]",
    "sampler.until_converged=false",  # as the hparams_search presets: trials of one length
    "model.true_rank=1",
    "data.n=2000",
    "sampler.num_steps=400",
    "sampler.num_chains=2",
    "plots=false",
    "progress=false",
    "mlflow.enabled=false",
]
MLP = [
    "model=mlp",
    "model.widths=[2,3,1]",
    "data.n=500",
    "training.max_steps=200",
    "sampler.num_steps=400",
    "sampler.num_chains=2",
    "sampler.batch_size=100",
    "sampler.target_mala_accept=null",
    "posterior.gamma=1.0",
    "objective.reference.num_chains=2",
    "objective.reference.num_warmup=100",
    "objective.reference.num_steps=200",
    "plots=false",
    "progress=false",
    "mlflow.enabled=false",
]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "lambda_hat", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=400)
    proc.output = proc.stdout + proc.stderr  # type: ignore[attr-defined]
    return proc


def _sweep_args(tmp: Path, study: str, *extra: str) -> list[str]:
    return [
        "--multirun",
        "+hparams_search=sgld",
        f"hydra.sweep.dir={tmp}/sweep",
        f"hydra.sweeper.storage=sqlite:///{tmp}/optuna.db",
        f"hydra.sweeper.study_name={study}",
        *extra,
    ]


def _trials(sweep: Path) -> Any:
    return pd.read_parquet(sweep / "trials.parquet")


def test_search_writes_trials_and_best_then_resumes_to_the_total(tmp_path: Path) -> None:
    space = ["sampler.step_size=tag(log,interval(1e-5,1e-4))", "sampler.batch_size=choice(100,200)", "posterior.gamma=1.0"]
    t0 = time.perf_counter()
    first = _run(_sweep_args(tmp_path, "resume", *DLN, *space, "hydra.sweeper.n_trials=4"), tmp_path)
    t1 = time.perf_counter()
    assert first.returncode == 0, first.output[-3000:]
    sweep = tmp_path / "sweep"
    df = _trials(sweep)
    assert len(df) == 4 and set(df["state"]) == {"COMPLETE"}
    assert {"params_sampler.step_size", "params_sampler.batch_size", "value", "user_attrs_job_dir"} <= set(df.columns)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(df["value"].min())
    assert set(best["best_params"]) == {"sampler.step_size", "sampler.batch_size"}
    obj = json.loads((sweep / "0" / "objective.json").read_text())
    assert obj["reference"]["source"] == "analytic" and obj["reference"]["llc"] == 4.5
    assert obj["value"] == pytest.approx(abs(obj["llc_mean"] - 4.5) / 4.5)
    stamps = {n: (sweep / str(n) / "objective.json").stat().st_mtime_ns for n in range(4)}

    # The same command with n_trials=6 (the study's total) runs only the two missing trials,
    # into new job folders 4 and 5 (folder = trial number: nothing is overwritten).
    second = _run(_sweep_args(tmp_path, "resume", *DLN, *space, "hydra.sweeper.n_trials=6"), tmp_path)
    t2 = time.perf_counter()
    assert second.returncode == 0, second.output[-3000:]
    assert "4 of 6 trials done, 2 to run" in second.output
    assert second.output.count("Launching 1 jobs locally") == 2
    df2 = _trials(sweep)
    assert len(df2) == 6 and set(df2["state"]) == {"COMPLETE"}
    assert df2["value"].iloc[:4].tolist() == df["value"].tolist()
    assert all((sweep / str(n) / "objective.json").stat().st_mtime_ns == stamps[n] for n in range(4))
    assert (sweep / "4" / "objective.json").exists() and (sweep / "5" / "objective.json").exists()
    print(f"search 4 trials {t1 - t0:.1f}s, resume +2 {t2 - t1:.1f}s")


@pytest.mark.slow  # 32 s on CI; trials, resume and the shared reference run in the tests around it
def test_failed_trial_pareto_front_and_reference_computed_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    xla = Path(os.environ["LAMBDA_HAT_CACHE"]) / "xla"  # the session's compilation cache
    common = [*MLP, f"cache_dir={cache}", f"compilation_cache_dir={xla}"]
    t0 = time.perf_counter()
    # Two objectives (error, FGE); a grid of two steps, the second diverges: a FAIL trial, and the
    # sweep still finishes. The target (an MLP) has no analytic λ: the reference run is built here.
    proc = _run(
        _sweep_args(
            tmp_path,
            "pareto",
            *common,
            "hydra/sweeper/sampler=grid",
            "sampler.step_size=choice(1e-4,1e3)",
            "objective.with_work=true",
            "hydra.sweeper.direction=[minimize,minimize]",
            "hydra.sweeper.n_trials=2",
        ),
        tmp_path,
    )
    t1 = time.perf_counter()
    sweep = tmp_path / "sweep"
    # the app exits 1 after a sweep with a failed job; the search itself finished
    assert proc.returncode in (0, 1), proc.output[-3000:]
    df = _trials(sweep)
    assert sorted(df["state"]) == ["COMPLETE", "FAIL"], proc.output[-3000:]
    failed = df[df["state"] == "FAIL"].iloc[0]
    assert failed["params_sampler.step_size"] == 1e3
    assert "None" in failed["user_attrs_fail_reason"]
    assert (Path(failed["user_attrs_job_dir"]) / "failure.json").exists()
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert len(results["solutions"]) == 1
    solution = results["solutions"][0]
    assert solution["params"] == {"sampler.step_size": 1e-4} and len(solution["values"]) == 2
    ok = df[df["state"] == "COMPLETE"].iloc[0]
    obj = json.loads((Path(ok["user_attrs_job_dir"]) / "objective.json").read_text())
    assert obj["reference"]["source"] == "reference-run" and obj["values"] == solution["values"]
    assert obj["values"][1] == pytest.approx(obj["n_fge_total"]) and obj["n_fge_total"] > 0

    refs = [p for p in (cache / "references").iterdir() if p.is_dir()]
    assert len(refs) == 1, refs
    ref_file = refs[0] / "reference.json"
    ref = json.loads(ref_file.read_text())
    assert ref["key"] == refs[0].name == obj["reference"]["key"]
    assert ref["llc"] == obj["reference"]["llc"] and ref["se"] > 0
    assert ref["sampler"]["name"] == "nuts" and ref["sampler"]["num_steps"] == 200
    assert {"ess_bulk", "r_hat", "lambda_hat_version", "target_id", "posterior"} <= set(ref)
    assert (refs[0] / "run" / "metrics.json").exists()
    assert proc.output.count(f"reference {ref['key']}: building") == 1
    before = (ref_file.read_bytes(), ref_file.stat().st_mtime_ns)

    # A second invocation on the same target and posterior reuses it (a single run this time).
    again = _run([*common, "objective.enabled=true", "sampler.step_size=5e-5", f"hydra.run.dir={tmp_path}/single"], tmp_path)
    t2 = time.perf_counter()
    assert again.returncode == 0, again.output[-3000:]
    assert f"reference {ref['key']}: reused" in again.output and "building" not in again.output
    assert (ref_file.read_bytes(), ref_file.stat().st_mtime_ns) == before
    assert len([p for p in (cache / "references").iterdir() if p.is_dir()]) == 1
    single = json.loads((tmp_path / "single" / "objective.json").read_text())
    assert single["reference"]["key"] == ref["key"] and single["reference"]["llc"] == ref["llc"]
    print(f"pareto + failed trial + reference build {t1 - t0:.1f}s, reuse {t2 - t1:.1f}s")


# ---------------------------------------------------------------- the reference cache (fake run)

_FAKE_REFERENCE = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from lambda_hat.composition import compose_config
    from lambda_hat.sweeps import references

    cache, counter = sys.argv[1], Path(sys.argv[2])

    def fake_run(ref_cfg, run_dir):  # counts its builds; slow enough for the other process to wait
        with counter.open("a") as f:
            f.write("build\\n")
        time.sleep(1.5)
        run_dir.mkdir(parents=True)
        return {"target_id": "t0", "llc_mean": 3.0, "llc_sem": 0.1, "ess_bulk": 900.0, "r_hat": 1.0, "status": "ok"}

    references.run_reference = fake_run
    cfg = compose_config(["model=mlp", "model.widths=[2,3,1]", f"cache_dir={cache}", "objective.reference.num_steps=50"])
    print(json.dumps(references.get_reference(cfg, target_id="t0", llc_true=None)))
    """
)


def _fake_reference(tmp: Path, n: int = 1) -> list[dict[str, Any]]:
    script = tmp / "fake_reference.py"
    script.write_text(_FAKE_REFERENCE)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, str(script), str(tmp / "cache"), str(tmp / "builds.txt")]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(n)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def _builds(tmp: Path) -> int:
    return len((tmp / "builds.txt").read_text().splitlines())


def test_reference_built_once_by_concurrent_processes_and_rebuilt_when_corrupt(tmp_path: Path) -> None:
    a, b = _fake_reference(tmp_path, n=2)  # two processes need the same missing reference at once
    assert _builds(tmp_path) == 1
    assert a["key"] == b["key"] and a["llc"] == b["llc"] == 3.0 and a["source"] == "reference-run"
    entry = tmp_path / "cache" / "references" / a["key"]
    assert [p.name for p in (tmp_path / "cache" / "references").iterdir() if p.is_dir()] == [a["key"]]
    ref = json.loads((entry / "reference.json").read_text())
    assert ref["sampler"]["num_steps"] == 50 and ref["converged"] and ref["se"] == 0.1
    (entry / "reference.json").write_text('{"format": 1, "key": "')  # torn / corrupted
    (c,) = _fake_reference(tmp_path)
    assert _builds(tmp_path) == 2 and c["llc"] == 3.0  # rebuilt, never used
    (d,) = _fake_reference(tmp_path)
    assert _builds(tmp_path) == 2 and d["key"] == a["key"]  # and now reused


def test_reference_key_depends_on_posterior_and_reference_sampler() -> None:
    from lambda_hat.composition import compose_config
    from lambda_hat.sweeps.references import get_reference, reference_config, reference_key

    base = ["model=mlp", "model.widths=[2,3,1]", "seed=3"]
    key = reference_key(compose_config(base), "t")[0]
    assert reference_key(compose_config([*base, "sampler=sghmc", "seed=4"]), "t")[0] == key  # not the trial's sampler
    for other in ("posterior.gamma=10", "posterior.beta0=2", "objective.reference.num_steps=10", "objective.reference.sampler=hmc"):
        assert reference_key(compose_config([*base, other]), "t")[0] != key, other
    assert reference_key(compose_config(base), "u")[0] != key
    ref_cfg = reference_config(compose_config([*base, "sampler=sgld"]))
    assert ref_cfg.sampler.name == "nuts" and ref_cfg.target_seed == 3 and ref_cfg.seed == 0
    assert not ref_cfg.mlflow.enabled and not ref_cfg.plots and not ref_cfg.objective.enabled
    assert get_reference(compose_config(base), target_id="t", llc_true=2.5) == {
        "llc": 2.5,
        "se": 0.0,
        "source": "analytic",
        "key": "t",
    }
    with pytest.raises(ValueError, match="full-batch"):
        reference_key(compose_config([*base, "objective.reference.sampler=sgld"]), "t")


def test_objective_metrics_and_failed_run(tmp_path: Path) -> None:
    from lambda_hat.composition import compose_config
    from lambda_hat.sweeps.objective import error, objective_value

    assert error(5.0, 4.0, "abs_rel_error") == (0.25, "abs_rel_error")
    assert error(3.0, 4.0, "rel_error") == (-0.25, "rel_error")
    assert error(3.0, 4.0, "abs_error") == (1.0, "abs_error")
    assert error(3.0, 4.0, "sq_error") == (1.0, "sq_error")
    assert error(0.5, 0.0, "abs_rel_error") == (0.5, "abs_error")  # λ = 0: relative is undefined
    m = {"llc_mean": 9.0, "llc_sem": 0.5, "llc_true": 10.0, "n_fge": 100.0, "n_fge_warmup": 20.0, "status": "ok", "target_id": "t"}
    cfg = compose_config(["objective.enabled=true", "objective.metric=sq_error"])
    assert objective_value(cfg, m, tmp_path / "a") == 1.0
    rec = json.loads((tmp_path / "a" / "objective.json").read_text())
    assert rec["reference"] == {"llc": 10.0, "se": 0.0, "source": "analytic", "key": "t", "converged": None, "path": None}
    cfg = compose_config(["objective.enabled=true", "objective.with_work=true"])
    assert objective_value(cfg, m, tmp_path / "b") == (pytest.approx(0.1), 120.0)
    assert objective_value(cfg, {**m, "llc_mean": None, "status": "failed"}, tmp_path / "c") is None
    assert json.loads((tmp_path / "c" / "objective.json").read_text())["value"] is None


# ---------------------------------------------------------------- the sweeper's loop (fake launcher)


class _Launcher:
    """Runs 'jobs' instantly: value (x - 0.3)^2; None for x > 0.9; Ctrl-C at the given call."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.calls, self.jobs, self.interrupt_at = 0, [], interrupt_at

    def launch(self, overrides: Any, initial_job_idx: int) -> list[Any]:
        from hydra.core.utils import JobReturn, JobStatus

        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        out = []
        for i, ov in enumerate(overrides):
            x = float(dict(o.split("=", 1) for o in ov)["x"])
            self.jobs.append((initial_job_idx + i, x))
            out.append(JobReturn(status=JobStatus.COMPLETED, _return_value=None if x > 0.9 else (x - 0.3) ** 2))
        return out


def _sweeper(tmp: Path, n_trials: int, launcher: _Launcher) -> Any:
    from omegaconf import OmegaConf

    from lambda_hat.sweeps.optuna_sweeper import _impl_class

    impl = _impl_class()(
        optuna.samplers.RandomSampler(seed=0),
        "minimize",
        f"sqlite:///{tmp}/o.db",
        "fake",
        n_trials,
        1,
        1.0,
        None,
        None,
        None,
    )
    impl.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp / "sweep")}}, "objective": {"enabled": True, "with_work": False}})
    impl.launcher = launcher
    return impl


def test_interrupted_study_resumes_with_the_interrupted_trial_first(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        _sweeper(tmp_path, 5, _Launcher(interrupt_at=3)).sweep(["x=interval(0.0,1.0)"])
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{tmp_path}/o.db")
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "WAITING"]  # the interrupted one is re-enqueued
    assert study.user_attrs["lambda_hat_interrupted"] == [2]
    assert len(_trials(tmp_path / "sweep")) == 4  # the table is written on the way out too

    # The re-run is killed outright mid-trial (no clean-up): its RUNNING trial (the retry of 2,
    # dead pid, this host) is treated the same way when the study resumes again.
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = study.ask()  # takes the WAITING trial 3
    stale._suggest("x", optuna.distributions.UniformDistribution(0.0, 1.0))  # as the plugin does
    stale.set_user_attr("host", socket.gethostname())
    stale.set_user_attr("pid", dead.pid)

    launcher = _Launcher()
    _sweeper(tmp_path, 5, launcher).sweep(["x=interval(0.0,1.0)"])
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{tmp_path}/o.db")
    assert study.user_attrs["lambda_hat_interrupted"] == [2, 3]
    counted = [t for t in study.trials if t.number not in study.user_attrs["lambda_hat_interrupted"]]
    assert len(counted) == 5 and all(t.state.name in ("COMPLETE", "FAIL") for t in study.trials)
    # the re-run starts with the interrupted parameters; job folders are trial numbers
    assert launcher.jobs[0][1] == study.trials[2].params["x"] == study.trials[4].params["x"]
    assert study.trials[4].user_attrs["retry_of"] == 3
    assert [j[0] for j in launcher.jobs] == [4, 5, 6]
    # a finished study runs nothing more
    again = _Launcher()
    _sweeper(tmp_path, 5, again).sweep(["x=interval(0.0,1.0)"])
    assert again.calls == 0
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert results["n_trials"] == 5 and results["best_value"] == min(t.value for t in study.trials if t.value is not None)


# ---------------------------------------------------------------- the presets


@pytest.mark.parametrize(
    "preset, sampler", [("sgld", "sgld"), ("sgld", "rmsprop_sgld"), ("sgld", "adam_sgld"), ("sghmc", "sghmc"), ("sghmc", "sgnht"), ("hmc", "hmc")]
)
def test_presets_search_only_keys_the_sampler_has(preset: str, sampler: str) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from lambda_hat.composition import CONF_DIR
    from lambda_hat.registry import validate
    from lambda_hat.sweeps.optuna_sweeper import sgld_family_space

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"+hparams_search={preset}", f"sampler={sampler}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.lambda_hat_optuna.ResumableOptunaSweeper"
    assert sweeper.max_failure_rate == 1.0 and sweeper.n_trials == 20 and sweeper.study_name
    assert "lambda_hat_optuna" not in cfg.hydra.callbacks  # found by Hydra's plugin scan, no callback
    assert cfg.objective.enabled and cfg.sampler.name == sampler
    validate(cfg)
    for key, value in sweeper.params.items():
        group, leaf = key.split(".", 1)
        assert leaf in cfg[group], key
        assert OverridesParser.create().parse_override(f"{key}={value}").is_sweep_override(), key
    if preset == "sgld":
        assert cfg.sampler.target_mala_accept is None  # the searched step is the step used
        trial = optuna.create_study().ask()
        sgld_family_space(cfg, trial)
        extra = {"sgld": set(), "rmsprop_sgld": {"sampler.decay", "sampler.eps"}, "adam_sgld": {"sampler.beta2", "sampler.eps"}}
        assert set(trial.params) == extra[sampler]
        assert all(k.split(".", 1)[1] in cfg.sampler for k in trial.params)
