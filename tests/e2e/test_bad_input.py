"""Every kind of bad input, through the real entry point (lambda_hat.app.main, in-process: these
errors are found before JAX is imported): exit code 2, one line on stderr naming the key (or file)
and what is allowed, no traceback (unless HYDRA_FULL_ERROR=1), nothing written where it ran."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from lambda_hat import app

OPTUNA = ["-m", "+hparams_search=sgld"]
FILE = "/etc/hostname"  # a file: a folder "under" it can never be created, whoever runs the test

# (command line, what the line must name (the key or file), what it must say is allowed)
CASES: list[tuple[list[str], str, str]] = [
    # unknown group options
    (["sampler=nope"], "sampler=nope", "available: adam_sgld"),
    (["model=cnn"], "model=cnn", "available: dln, "),
    (["data=gauss"], "data=gauss", "normal, uniform"),
    (["posterior=flat"], "posterior=flat", "available: default"),
    (["training=lbfgs"], "training=lbfgs", "available: adam"),
    (["hydra/launcher=nope"], "hydra/launcher=nope", "available: basic"),
    # unknown keys (also when added with '+', which Hydra lets through)
    (["sampler.stepsize=1e-6"], "sampler.stepsize", "step_size"),
    (["model.width=[1,2]"], "model.width", "widths"),
    (["data.N=5"], "data.N", "allowed keys here: n,"),
    (["posterior.beta=1"], "posterior.beta", "beta0"),
    (["training.lr=0.1"], "training.lr", "learning_rate"),
    (["+sampler.stepsize=1e-6"], "sampler.stepsize", "step_size"),
    (["+foo=1"], "foo", "allowed keys here: model"),
    (["sampler=sghmc", "sampler.target_mala_accept=0.9"], "sampler.target_mala_accept", "friction"),
    # wrong types
    (["seed=abc"], "seed", "Integer"),
    (["data.n=1.5"], "data.n", "Integer"),
    (["model.widths=abc"], "model.widths", "list"),
    (["mlflow.enabled=maybe"], "mlflow.enabled", "bool"),
    (["model.widths=[10,20"], "model.widths", "lists are [a,b]"),
    # out of range
    (["sampler.step_size=0"], "sampler.step_size", "> 0"),
    (["sampler.step_size=-1e-6"], "sampler.step_size", "> 0"),
    (["posterior.gamma=-0.1"], "posterior.gamma", ">= 0"),
    (["posterior.beta0=0"], "posterior.beta0", "> 0"),
    (["sampler.num_chains=0"], "sampler.num_chains", "> 0"),
    (["sampler.num_burnin=10000"], "sampler.num_burnin", "[0, sampler.num_steps=10000)"),
    (["sampler.burnin_fraction=1.0"], "sampler.burnin_fraction", "[0, 1)"),
    (["sampler.batch_size=200000"], "sampler.batch_size", "<= data.n=100000"),
    (["model.true_rank=11"], "model.true_rank", "[0, 10]"),
    (["model.widths=[10]"], "model.widths", "at least an input and an output width"),
    (["model.widths=[10,0,10]"], "model.widths", ">= 1"),
    (["sampler.thinning=5000"], "sampler.thinning", ">= 4 draws after burn-in"),
    (["sampler.num_steps=1000", "sampler.num_burnin=998"], "sampler.num_steps", ">= 4 draws after burn-in"),
    (["sampler.num_steps=2001", "sampler.thinning=2"], "sampler.thinning", "must divide"),
    (["seed=-1"], "seed", ">= 0"),
    (["data.noise_std=-1"], "data.noise_std", ">= 0"),
    (["data.input_dist=cauchy"], "data.input_dist", "uniform, normal"),
    (["training.learning_rate=0"], "training.learning_rate", "> 0"),
    (["model=mlp", "model.activation=swish"], "model.activation", "tanh"),
    (["model=polynomial", "model.exponents=[0]"], "model.exponents", ">= 1"),
    (["sampler=hmc", "sampler.target_accept=1"], "sampler.target_accept", "(0, 1)"),
    (["sampler=nuts", "sampler.max_tree_depth=30"], "sampler.max_tree_depth", "[1, 20]"),
    (["sampler=mclmc", "sampler.integrator=euler"], "sampler.integrator", "isokinetic_mclachlan"),
    (["sampler.dtype=float16"], "sampler.dtype", "float32, float64"),
    (["objective.reference.sampler=sgld"], "objective.reference.sampler", "nuts"),
    (["objective.reference.num_chains=0"], "objective.reference.num_chains", "> 0"),
    # sweeps and Optuna search spaces: empty or inverted
    (["-m", "sampler.num_chains=range(5,1)"], "sampler.num_chains", "no values"),
    (["-m", "seed=0,1", "sampler.num_chains=0,4"], "sampler.num_chains", "> 0"),
    (["-m", "seed=0,1", "--cfg", "job"], "-m and --cfg", "one of --run, --multirun, --cfg and --info"),
    ([*OPTUNA, "sampler.step_size=interval(1e-4,1e-9)"], "sampler.step_size", "low < high"),
    ([*OPTUNA, "hydra.sweeper.params.posterior.gamma=tag(log,interval(0,1))"], "posterior.gamma", "low > 0"),
    ([*OPTUNA, "hydra.sweeper.params.sampler.batch_size=choice()"], "sampler.batch_size", "empty choice"),
    ([*OPTUNA, "hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials", ">= 1"),
    # code named by a config
    (["+sampler._target_=os.system"], "sampler._target_", "instantiate no code"),
    (["+hydra.callbacks.x._target_=os.system"], "hydra.callbacks.x._target_", "lambda_hat."),
    ([*OPTUNA, "hydra.sweeper.sampler._target_=os.system"], "hydra.sweeper.sampler._target_", "optuna.samplers."),
    ([*OPTUNA, "hydra.sweeper.custom_search_space=os.system"], "hydra.sweeper.custom_search_space", "lambda_hat."),
    # a plugin that is not installed (a missing extra), a required field a preset leaves unset
    (["hydra.launcher._target_=hydra_plugins.not_installed.Launcher"], "hydra.launcher", "is not installed"),
    (["+hydra.launcher.partition=???"], "hydra.launcher.partition", "required"),
    # folders and stores that cannot be written or reached
    ([f"hydra.run.dir={FILE}/run"], "hydra.run.dir", "not a folder"),
    (["-m", "seed=0,1", f"hydra.sweep.dir={FILE}/sweep"], "hydra.sweep.dir", "not a folder"),
    ([f"cache_dir={FILE}/cache"], "cache_dir", "not a folder"),
    ([f"compilation_cache_dir={FILE}/xla"], "compilation_cache_dir", "not a folder"),
    ([*OPTUNA, f"hydra.sweeper.storage=sqlite:///{FILE}/optuna.db"], "hydra.sweeper.storage", "not a folder"),
    ([f"mlflow.tracking_uri=sqlite:///{FILE}/mlflow.db"], "mlflow.tracking_uri", "set mlflow.enabled=false"),
    (["mlflow.tracking_uri=http://127.0.0.1:9"], "mlflow.tracking_uri", "no tracking server answers"),
    (["mlflow.tracking_uri=ftp://example.org/x"], "mlflow.tracking_uri", "sqlite:///"),
]


def _main(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: Any) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["lambda_hat", *argv])
    if "absl.logging" in sys.modules:
        # absl's handler (absl comes in with optax) keeps the sys.stderr of when it was imported:
        # in an earlier test, pytest's own capture stream. Hydra's job logging (dictConfig) closes
        # every handler, and absl's close() closes its stream unless it is the *current*
        # sys.stderr, which here is capsys's: pytest's stream would be closed and the session
        # dies. Point it at the current stream for the call; monkeypatch puts it back.
        from absl import logging as absl_logging

        monkeypatch.setattr(absl_logging.get_absl_handler().python_handler, "stream", sys.stderr)
    with pytest.raises(SystemExit) as exc:
        app.main()
    out, err = capsys.readouterr()
    return int(exc.value.code), out, err


@pytest.mark.parametrize("argv,key,allowed", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_line_naming_the_key(argv: list[str], key: str, allowed: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code, out, err = _main(argv, monkeypatch, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lambda_hat: error: ") and key in lines[0] and allowed in lines[0], lines[0]
    assert "Traceback" not in err + out
    assert list(tmp_path.iterdir()) == []  # no output folder, no mlflow.db, no optuna.db: nothing ran


def test_there_are_at_least_30_distinct_cases() -> None:
    assert len({" ".join(argv) for argv, _, _ in CASES}) >= 30
    keys = {argv[-1].split("=")[0].lstrip("+").split(".")[0].split("/")[0] for argv, _, _ in CASES}
    assert {"model", "data", "posterior", "sampler", "training", "hydra", "mlflow", "objective", "cache_dir"} <= keys


def test_hydra_full_error_shows_the_traceback_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    code, _, err = _main(["sampler.step_size=0"], monkeypatch, capsys)
    assert code == 2 and "Traceback" in err and "ConfigError" in err
    assert err.strip().splitlines()[-1] == "lambda_hat: error: sampler.step_size=0.0 is invalid: must be > 0"


def test_a_failure_inside_a_single_run_is_one_line_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """An error the up-front check cannot see (here: the target cache becomes a file after the
    check) ends the run with one line and exit 1, failure.json in its folder, its MLflow run FAILED."""
    import lambda_hat.runner as runner

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    def broken_cache(cfg: Any) -> Path:
        return Path(FILE) / "cache"

    monkeypatch.setattr(runner, "cache_dir_of", broken_cache)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, _, err = _main([f"mlflow.tracking_uri={uri}", f"hydra.run.dir={tmp_path}/run", "progress=false"], monkeypatch, capsys)
    assert code == 1
    assert "Traceback" not in err
    line = [ln for ln in err.splitlines() if ln.startswith("lambda_hat: error:")]
    assert len(line) == 1 and "Not a directory" in line[0] and "HYDRA_FULL_ERROR=1" in line[0], err
    assert (tmp_path / "run" / "failure.json").is_file() and not (tmp_path / "run" / "metrics.json").exists()
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("lambda_hat").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]  # not left RUNNING
