"""Config composition and validation: bad input is rejected early, in one line naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lambda_hat.app import check_overrides
from lambda_hat.config import (
    AdamSGLDConfig,
    DLNModelConfig,
    MLPModelConfig,
    RMSPropSGLDConfig,
    SGLDConfig,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "overrides,key,fragment",
    [
        (["sampler.stepsize=1e-6"], "sampler.stepsize", "step_size"),  # typo: allowed keys listed
        (["sampler.num_chains=abc"], "sampler.num_chains", "Integer"),
        (["sampler.step_size=-1e-6"], "sampler.step_size", "> 0"),
        (["sampler.num_chains=0"], "sampler.num_chains", "> 0"),
        (["model.true_rank=30"], "model.true_rank", "narrowest width"),
        (["data.n=100"], "sampler.batch_size", "data.n=100"),
        (["sampler.num_burnin=20000"], "sampler.num_burnin", "num_steps"),
        (["sampler=nope"], "sampler=nope", "sgld"),
        (["model=mlp", "model.true_rank=2"], "model.true_rank", "unknown key"),
        (["model=mlp", "model.activation=swish"], "model.activation", "tanh"),
        (["posterior.gamma=-1"], "posterior.gamma", ">= 0"),
        (["cpu_devices=0"], "cpu_devices", "> 0"),
        (["sampler.target_mala_accept=1.2"], "sampler.target_mala_accept", "(0, 1)"),
        (["sampler=sghmc", "sampler.target_mala_accept=0.9"], "sampler.target_mala_accept", "unknown key"),
        (["mlflow.enabled=maybe"], "mlflow.enabled", "bool"),
        (["-m", "sampler.step_size=1e-6,-1e-6", "sampler.num_chains=0,1"], "sampler.num_chains", "> 0"),
    ],
)
def test_bad_overrides_name_the_key(overrides: list[str], key: str, fragment: str) -> None:
    error = check_overrides(overrides)
    assert error is not None
    assert "\n" not in error
    assert key in error and fragment in error


def test_good_overrides_pass() -> None:
    assert check_overrides([]) is None
    assert check_overrides(["model.widths=[10,20,15,10]", "model.true_rank=4", "sampler=rmsprop_sgld", "seed=3"]) is None
    assert check_overrides(["model=mlp", "data.n=20000", "sampler=sgld", "sampler.step_size=1e-6"]) is None
    assert check_overrides(["--multirun", "sampler=sgld,adam_sgld", "seed=0,1"]) is None


def test_cli_rejects_typo_before_computing(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "lambda_hat", "sampler.step_size=-1"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "sampler.step_size" in lines[0] and "> 0" in lines[0]
    assert not (tmp_path / "outputs").exists()  # nothing ran


def test_every_preset_names_its_schema(make_cfg) -> None:
    expected = {
        "sampler=sgld": ("sampler", SGLDConfig),
        "sampler=rmsprop_sgld": ("sampler", RMSPropSGLDConfig),
        "sampler=adam_sgld": ("sampler", AdamSGLDConfig),
        "model=dln": ("model", DLNModelConfig),
        "model=mlp": ("model", MLPModelConfig),
    }
    for override, (group, schema) in expected.items():
        cfg = make_cfg(override)
        assert OmegaConf.get_type(cfg[group]) is schema


def test_mlp_switches_to_gaussian_data_unless_overridden(make_cfg) -> None:
    assert make_cfg("model=mlp").data.input_dist == "normal"
    assert make_cfg("model=mlp", "data=uniform").data.input_dist == "uniform"
    assert make_cfg().data.input_dist == "uniform"


def test_yaml_presets_match_schema_defaults(make_cfg) -> None:
    # The YAML is the documentation users read; it must not silently diverge from the schema.
    cfg = make_cfg()
    assert cfg.sampler.step_size == SGLDConfig().step_size
    assert cfg.sampler.num_steps == SGLDConfig().num_steps
