"""Config composition and validation: bad input is rejected early, in one line naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lambda_hat.composition import compose_config
from lambda_hat.command_line import check_overrides
from tests.conftest import run_cli
from lambda_hat.models.dln import DLNModelConfig
from lambda_hat.models.mlp import MLPModelConfig
from lambda_hat.estimators.psgld import AdamSGLDConfig, RMSPropSGLDConfig
from lambda_hat.estimators.sgld import SGLDConfig

ROOT = Path(__file__).resolve().parents[2]


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
        (["model.widths=[10,20"], "model.widths", "cannot parse"),  # Hydra's grammar error, with the key
        (["sampler.num_steps=2001", "sampler.thinning=2"], "sampler.thinning", "must divide"),
        (["sampler=sghmc", "sampler.mala_every=10"], "sampler.mala_every", "unknown key"),  # was ignored
        (["sampler=sghmc", "sampler.alpha=50"], "sampler.alpha", "use sampler.friction"),
        (["sampler=rmsprop_sgld", "sampler.alpha=0.9"], "sampler.alpha", "use sampler.decay"),
        (["sampler.burnin_fraction=1.0"], "sampler.burnin_fraction", "[0, 1)"),
        (["model.true_rank=-1"], "model.true_rank", "[0, 10]"),
        (["--cfg", "job", "sampler.num_chains=0"], "sampler.num_chains", "> 0"),
        (["-m", "sampler=sgld,sgdl"], "sampler=sgdl", "sgld"),  # a later sweep value of a group
        (["-m", "+experiment=smoke,smok"], "experiment=smok", "calibration"),
        (["-m", "posterior.sample_on=subset"], "posterior.sample_on", "measure_on"),
    ],
)
def test_bad_overrides_name_the_key(overrides: list[str], key: str, fragment: str) -> None:
    error = check_overrides(overrides)
    assert error is not None
    assert "\n" not in error
    assert key in error and fragment in error


def test_good_overrides_pass() -> None:
    assert check_overrides([]) is None
    assert check_overrides(["sampler.num_steps=2000"]) is None  # burn-in follows the run length
    assert check_overrides(["model.true_rank=0"]) is None  # the zero map
    assert check_overrides(["--cfg", "job"]) is None
    assert check_overrides(["model.widths=[10,20,15,10]", "model.true_rank=4", "sampler=rmsprop_sgld", "seed=3"]) is None
    assert check_overrides(["model=mlp", "data.n=20000", "sampler=sgld", "sampler.step_size=1e-6"]) is None
    assert check_overrides(["--multirun", "sampler=sgld,adam_sgld", "seed=0,1"]) is None


def test_cli_rejects_typo_before_computing(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "lambda_hat", "sampler.step_size=-1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
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


# Presets that are variants of another schema's defaults on purpose.
VARIANTS = {("sampler", "sgld_lau"), ("data", "normal"), ("model", "regular")}


SCHEMA_GROUPS = ("model", "data", "posterior", "sampler", "training")  # experiment/, hparams_search/ are global presets


def _presets() -> list[tuple[str, str]]:
    return sorted((g, f.stem) for g in SCHEMA_GROUPS for f in (ROOT / "conf" / g).glob("*.yaml"))


@pytest.mark.parametrize("group,preset", _presets())
def test_every_preset_matches_its_schema_defaults(make_cfg, group: str, preset: str) -> None:
    """The YAML is the documentation users read; it must not silently diverge from the schema
    (rmsprop_sgld.yaml set step_size 5e-8 while its schema said 5e-7)."""
    cfg = make_cfg(f"{group}={preset}")
    node = cfg[group]
    schema = OmegaConf.get_type(node)
    assert schema is not None and schema is not dict, f"{group}/{preset}.yaml names no schema"
    if (group, preset) in VARIANTS:
        return
    defaults = OmegaConf.to_container(OmegaConf.structured(schema))
    assert OmegaConf.to_container(node) == defaults


def test_every_sampler_preset_is_a_registered_estimator(make_cfg) -> None:
    from lambda_hat.registry import ESTIMATORS

    for path in (ROOT / "conf" / "sampler").glob("*.yaml"):
        cfg = make_cfg(f"sampler={path.stem}")
        spec = ESTIMATORS[cfg.sampler.name]
        assert OmegaConf.get_type(cfg.sampler) is spec.schema
    assert {p.stem for p in (ROOT / "conf" / "sampler").glob("*.yaml")} >= set(ESTIMATORS)


def test_lau_protocol_preset_keeps_the_fixed_step(make_cfg) -> None:
    assert make_cfg("sampler=sgld").sampler.target_mala_accept == 0.95  # tuned by default
    lau = make_cfg("sampler=sgld_lau").sampler
    assert lau.target_mala_accept is None and lau.step_size == 5e-7 and lau.num_steps == 10000
    assert lau.burnin_fraction == 0.9  # their last 10%


def test_tuned_langevin_presets_keep_the_last_half() -> None:
    """The tuning steps already carried the chain off w*, so half the run is burn-in (issue 10)."""
    from lambda_hat.config import burnin_steps

    for name in ("sgld", "rmsprop_sgld", "adam_sgld"):
        sampler = compose_config([f"sampler={name}", "sampler.num_steps=3000"]).sampler
        assert sampler.target_mala_accept is not None and burnin_steps(sampler) == 1500, name
    accuracy = compose_config(["+experiment=accuracy_1k", "model.index=0"]).sampler
    assert accuracy.num_chains == 1 and burnin_steps(accuracy) == 5000


def test_burnin_follows_the_run_length_unless_given() -> None:
    from lambda_hat.config import burnin_steps

    assert burnin_steps(OmegaConf.create({"num_burnin": None, "burnin_fraction": 0.9, "num_steps": 2000})) == 1800
    assert burnin_steps(OmegaConf.create({"num_burnin": 500, "burnin_fraction": 0.9, "num_steps": 2000})) == 500


def test_help_is_lambda_hats_own(tmp_path: Path) -> None:
    proc = run_cli(["--help"], tmp_path)
    assert proc.returncode == 0
    out = proc.stdout
    assert "powered by Hydra" not in out and "schema/" not in out
    for text in ("sampler", "hmc", "nuts", "sgld_lau", "model.widths", "--multirun", "python -m lambda_hat sampler=hmc"):
        assert text in out


def test_cfg_job_prints_the_config(tmp_path: Path) -> None:
    proc = run_cli(["--cfg", "job", "sampler=hmc"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "num_integration_steps: 16" in proc.stdout and not (tmp_path / "outputs").exists()


def test_a_config_named_with_cp_cn_is_validated_too(tmp_path: Path) -> None:
    conf = tmp_path / "myconf"
    conf.mkdir()
    (conf / "mine.yaml").write_text("defaults:\n  - config\n  - _self_\nseed: 3\n")
    (conf / "config.yaml").write_text((ROOT / "conf" / "config.yaml").read_text())
    for group in ("model", "data", "posterior", "sampler", "training"):
        (conf / group).symlink_to(ROOT / "conf" / group)
    error = check_overrides(["-cp", str(conf), "-cn", "mine", "sampler.num_chains=0"])
    assert error is not None and "sampler.num_chains" in error
    assert check_overrides(["-cp", str(conf), "-cn", "mine"]) is None


def test_validating_a_command_line_does_not_start_jax() -> None:
    code = "import sys; from lambda_hat.command_line import check_overrides; assert check_overrides(['sampler=hmc']) is None; print('jax' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_a_multirun_is_checked_as_hydra_orders_its_first_job() -> None:
    """The preset's swept keys come first, in its order, a command-line value replacing the preset's
    sweep in its place: one sampler of the leaderboard at every budget passes the up-front check
    (its first job: rmsprop_sgld sized for the first budget), and a typo in its keys is one line."""
    one_sampler = ["--multirun", "+experiment=leaderboard", "sampler=rmsprop_sgld"]
    assert check_overrides(one_sampler) is None
    error = check_overrides([*one_sampler, "sampler.decai=0.9"])
    assert error is not None and error.startswith("sampler.decai: unknown key")


def test_a_typo_in_a_later_sweep_value_is_one_line_exit_2_and_no_mlflow_run(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    proc = run_cli(["--multirun", "sampler=sgld,sgdl", f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "lambda_hat: error: sampler=sgdl: no such option; available: "
        "adam_sgld, adjusted_mclmc, hmc, mala, mclmc, nuts, rmsprop_sgld, sghmc, sgld, sgld_lau, sgnht, vi"
    ]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "sweep").exists()
