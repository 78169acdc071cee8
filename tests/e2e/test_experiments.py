"""The experiment presets (conf/experiment/): each composes and validates for every job of its
sweep, together they cover every sampler, and the smoke preset runs for real."""

from __future__ import annotations

import functools
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from lambda_hat import registry
from lambda_hat.composition import CONF_DIR, compose_config
from lambda_hat.command_line import check_overrides
from lambda_hat.registry import validate

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
MAX_PRODUCT = 60  # grids larger than this are checked one axis at a time (CI time)
# The sweep key that chooses the sampler (each sampler's sizes come from budget.*: lambda_hat/budget.py).
SAMPLER_KEYS = ("sampler",)
# Presets that compare a chosen subset of the samplers on purpose (the others cover every one).
SUBSETS = {"samplers_compared_mlp": ["sgld", "hmc", "nuts", "mclmc"]}


@functools.cache
def sweep_params(name: str) -> dict[str, list[str]]:
    """The preset's hydra.sweeper.params, each parsed into its values as the sweeper does."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={name}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params or {}
    parser = OverridesParser.create()
    out: dict[str, list[str]] = {}
    for key, value in params.items():
        override = parser.parse_overrides([f"{key}={value}"])[0]
        out[str(key)] = list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(value)]
    return out


def sweep_jobs(name: str) -> list[list[str]]:
    """Overrides of the jobs to check: every combination of the sweep's values, except that
    seed-like integer sweeps are represented by their first value (they change no key), and so is
    the leaderboard's budget (test_leaderboard_budgets_are_matched_in_fge composes every sampler at
    every budget)."""
    params = sweep_params(name)
    first_only = ("seed", "target_seed", "budget.fge_per_chain")
    axes = [[f"{k}={v}" for v in (values[:1] if k in first_only else values)] for k, values in params.items()]
    if math.prod(len(a) for a in axes) > MAX_PRODUCT:
        # a large grid: every value of each axis once, the other axes at their first value (the
        # axes set disjoint keys: sampler sizes, model, seed), in the sweep's order
        combos = {tuple(a[0] for a in axes)}
        for i, axis in enumerate(axes):
            combos |= {tuple(v if j == i else a[0] for j, a in enumerate(axes)) for v in axis}
        return [[f"+experiment={name}", *combo] for combo in sorted(combos)]
    return [[f"+experiment={name}", *combo] for combo in itertools.product(*axes)] or [[f"+experiment={name}"]]


def test_there_are_experiments() -> None:
    assert "smoke" in EXPERIMENTS and "sampler_benchmark" in EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_validates_for_every_job(name: str) -> None:
    cfg = compose_config([f"+experiment={name}"])
    validate(cfg)
    if sweep_params(name):  # a sweep preset logs to its own MLflow experiment
        assert cfg.mlflow.experiment != "lambda_hat", f"{name}: give the sweep its own mlflow.experiment"
    for overrides in sweep_jobs(name):
        validate(compose_config(overrides))
    # the command line's own up-front check (first value of each sweep) accepts it too
    assert check_overrides(["--multirun", f"+experiment={name}"]) is None


# Samplers a sweep preset leaves out on purpose (the preset's comments say why).
LEFT_OUT = {"leaderboard": {"adjusted_mclmc"}}  # its self-sized tuning cannot be held to a budget


# Sweeps over estimator settings rather than over the samplers (their own tests cover them).
NOT_SAMPLER_SWEEPS = {"vi_benchmark"}


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if n not in NOT_SAMPLER_SWEEPS and any(k in sweep_params(n) for k in SAMPLER_KEYS)])
def test_sampler_sweeps_cover_every_sampler_and_compose_with_each(name: str) -> None:
    params = sweep_params(name)
    key = next(k for k in SAMPLER_KEYS if k in params)
    rest = [f"{k}={v[0]}" for k, v in params.items() if k != key]  # the other sweep keys at their first value
    samplers = [compose_config([f"+experiment={name}", f"{key}={v}", *rest]).sampler.name for v in params[key]]
    # every MCMC sampler; variational estimators are not samplers (vi_benchmark compares them)
    mcmc = set(registry.names("minibatch")) | set(registry.names("full_batch"))
    expected = SUBSETS.get(name) or mcmc - LEFT_OUT.get(name, set())
    assert sorted(samplers) == sorted(expected), f"{name} sweeps {samplers}"
    assert len(set(samplers)) == len(samplers), f"{name}: a sampler appears twice in {samplers}"
    if key == "sampler":  # a plain `sampler=<each>` override gives the same job
        for s in samplers:
            validate(compose_config([f"+experiment={name}", f"sampler={s}", *rest]))


def test_sampler_benchmark_budgets_are_comparable_in_fge() -> None:
    """The preset's per-chain budgets (warm-up included) agree within a factor 1.5 where they are
    known up front: SG-MCMC from steps x batch / n, full batch from the estimators' own cost model."""
    fge = {}
    for v in sweep_params("sampler_benchmark")["sampler"]:
        cfg = compose_config(["+experiment=sampler_benchmark", f"sampler={v}"])
        s = cfg.sampler
        spec = registry.get(s.name)
        if spec.family == "minibatch":
            steps = s.num_steps + (2 * s.num_tune if "num_tune" in s and s.target_mala_accept is not None else 0)
            fge[s.name] = steps * s.batch_size / cfg.data.n
        else:
            expected, upper = spec.gradients_per_chain(s)
            fge[s.name] = expected if expected is not None else upper
    known = {k: v for k, v in fge.items() if v is not None}
    assert len(known) >= 8, fge
    assert max(known.values()) / min(known.values()) < 1.5, fge


@pytest.mark.slow
def test_smoke_preset_runs_every_sampler(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "lambda_hat", "--multirun", "+experiment=smoke", f"hydra.sweep.dir={sweep}", "mlflow.enabled=false"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_parquet(sweep / "llc_runs.parquet")
    assert sorted(df["sampler"]) == sorted(registry.names())
    assert df["status"].isin(["ok", "some_chains_diverged"]).all(), df[["sampler", "status", "error"]].to_string()
    rel = (df["llc_mean"] / df["llc_true"] - 1).abs()
    close = df.loc[rel < 0.3, "sampler"].tolist()
    assert len(close) >= len(df) - 1, df[["sampler", "llc_mean", "llc_true"]].to_string()


@pytest.mark.parametrize("name", ["leaderboard", "leaderboard_large"])
def test_leaderboard_budgets_are_matched_in_fge(name: str) -> None:
    """Every sampler's per-chain work (warm-up included) is within 1% of its budget level where it
    is known up front (SG-MCMC from steps x batch / n; HMC and MCLMC from their cost model), and
    NUTS's upper bound is within it; the budget levels grow and the targets have a known λ."""
    params = sweep_params(name)
    levels = [float(b) for b in params["budget.fge_per_chain"]]
    assert levels == sorted(levels) and levels[:3] == [1e3, 3e3, 1e4]
    for entry in params["sampler"]:
        for bound in levels:
            cfg = compose_config([f"+experiment={name}", f"sampler={entry}", f"budget.fge_per_chain={bound:g}"])
            validate(cfg)
            s, spec = cfg.sampler, registry.get(cfg.sampler.name)
            assert s.name == entry and cfg.budget.fge_per_chain == bound
            if spec.family == "minibatch":
                steps = s.num_steps + (2 * s.num_tune if "num_tune" in s and s.target_mala_accept is not None else 0)
                fge = steps * s.batch_size / cfg.data.n
            else:
                expected, upper = spec.gradients_per_chain(s)
                if expected is None or s.name == "adjusted_mclmc":  # sampling part only: tuning sizes itself
                    expected = upper if upper is not None else expected
                fge = expected
            assert 0.97 * bound <= fge <= 1.01 * bound, (name, entry, bound, fge)
    for model in params["model"]:
        assert "true_rank" in model and "teacher:top" in model  # Aoyagi's λ is the local λ there


def test_samplers_compared_mlp_has_the_budgets_of_samplers_compared() -> None:
    """The MLP comparison repeats samplers_compared's per-sampler sizes (budget.per_sampler) for the
    samplers it runs; each job gets them, and only its own entry stays in its config."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):  # as composed: before a run keeps its own entry
        base = compose("config", overrides=["+experiment=samplers_compared"]).budget.per_sampler
        mlp = compose("config", overrides=["+experiment=samplers_compared_mlp"]).budget.per_sampler
    assert sorted(mlp) == sorted(SUBSETS["samplers_compared_mlp"])
    for name, keys in mlp.items():
        assert keys == base[name], name
        cfg = compose_config(["+experiment=samplers_compared_mlp", f"sampler={name}"])
        assert all(cfg.sampler[k] == v for k, v in keys.items()) and list(cfg.budget.per_sampler) == [name]
