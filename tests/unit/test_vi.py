"""VI integration: the sampler=vi schema and vi group, the registry, the one-line errors, and a
real `sampler=vi` sweep producing the files, MLflow run and sweep-table row every sampler does."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from lambda_hat.command_line import check_overrides
from lambda_hat.estimators.vi import FlowVIConfig, MFAConfig, VIConfig
from tests.conftest import ROOT, run_cli


def test_registry_has_vi_and_its_algorithms() -> None:
    from lambda_hat.registry import ESTIMATORS, VI_ALGORITHMS, get_vi

    assert ESTIMATORS["vi"].family == "variational" and ESTIMATORS["vi"].schema is VIConfig
    assert get_vi("mfa").schema is MFAConfig and get_vi("flow").schema is FlowVIConfig
    assert get_vi("flow").extra == "vi"
    assert {p.stem for p in (ROOT / "conf" / "vi").glob("*.yaml")} == set(VI_ALGORITHMS)
    with pytest.raises(KeyError, match="mfa"):
        get_vi("nope")


@pytest.mark.parametrize("algorithm", ["mfa", "flow"])
def test_vi_presets_equal_their_schema_defaults(make_cfg, algorithm: str) -> None:
    cfg = make_cfg("sampler=vi", f"vi={algorithm}")
    schema = OmegaConf.get_type(cfg.vi)
    assert OmegaConf.to_container(cfg.vi) == OmegaConf.to_container(OmegaConf.structured(schema))
    assert OmegaConf.get_type(cfg.sampler) is VIConfig


def test_sampler_vi_selects_mfa_unless_told(make_cfg) -> None:
    assert make_cfg("sampler=vi").vi.name == "mfa"
    cfg = make_cfg("sampler=vi", "vi=mfa", "vi.components=8", "vi.rank=2")
    assert (cfg.vi.components, cfg.vi.rank) == (8, 2)
    cfg = make_cfg("sampler=vi", "vi=flow", "vi.flow=rqs", "vi.latent_dim=8")
    assert (cfg.vi.name, cfg.vi.flow, cfg.vi.latent_dim) == ("flow", "rqs", 8)
    assert make_cfg().vi is None  # no VI section in a sampler's config


@pytest.mark.parametrize(
    "overrides,key,fragment",
    [
        (["vi.components=8"], "vi.components", "sampler=vi"),
        (["vi=flow"], "vi", "sampler=vi"),
        (["sampler=hmc", "vi.rank=2"], "vi.rank", "sampler=hmc"),
        (["sampler=vi", "vi.componets=8"], "vi.componets", "unknown key"),
        (["sampler=vi", "vi=nope"], "vi=nope", "mfa"),
        (["sampler=vi", "sampler.schedule=step"], "sampler.schedule", "cosine"),
        (["sampler=vi", "vi.ranks=[2,2]"], "vi.ranks", "vi.components=4"),
        (["sampler=vi", "vi.parameterization=cholesky"], "vi.parameterization", "precision"),
        (["sampler=vi", "vi=flow", "vi.flow=glow"], "vi.flow", "rqs"),
        (["sampler=vi", "sampler.num_draws=1"], "sampler.num_draws", ">= 2"),
        (["sampler=vi", "sampler.thinning=2"], "sampler.thinning", "unknown key"),
    ],
)
def test_bad_vi_overrides_name_the_key(overrides: list[str], key: str, fragment: str) -> None:
    error = check_overrides(overrides)
    assert error is not None and "\n" not in error
    assert key in error and fragment in error


def test_good_vi_overrides_pass() -> None:
    assert check_overrides(["sampler=vi", "vi=mfa", "vi.components=8", "vi.rank=2"]) is None
    assert check_overrides(["sampler=vi", "vi=flow", "vi.flow=rqs", "vi.latent_dim=8"]) is None
    assert check_overrides(["--multirun", "sampler=vi", "vi=mfa,flow", "seed=0,1,2"]) is None
    assert check_overrides(["--multirun", "+experiment=vi_benchmark"]) is None


def test_cli_rejects_a_vi_option_without_sampler_vi(tmp_path: Path) -> None:
    proc = run_cli(["vi.components=8"], tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "vi.components" in lines[0] and "sampler=vi" in lines[0]


def test_vi_sweep_writes_what_a_sampler_run_does(tmp_path: Path) -> None:
    """One `sampler=vi vi=mfa` job of a multirun on a tiny DLN: metrics, traces, plots, MLflow,
    and a row of llc_runs.parquet with the VI columns."""
    sweep = tmp_path / "sweep"
    args = [
        "--multirun",
        "sampler=vi",
        "vi=mfa",
        "vi.components=2",
        "vi.rank=2",
        "model.widths=[3,4,3]",
        "model.true_rank=1",
        "data.n=1000",
        "posterior.gamma=100",
        "sampler.num_chains=2",
        "sampler.num_steps=60",
        "sampler.batch_size=50",
        "sampler.num_samples=1",
        "sampler.num_draws=32",
        "sampler.whitening_batches=4",
        "cpu_devices=1",
        "progress=false",
        "plots=true",  # off by default inside a multirun
        f"hydra.sweep.dir={sweep}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
    ]
    proc = run_cli(args, tmp_path, timeout=900)  # a hang guard: ~15 s of CPU (JAX start, two compilations)
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = sweep / "0"
    for name in ("metrics.json", "trace.parquet", "fit_trace.parquet", "elbo.png", "llc_running.png", "mlflow_run.json"):
        assert (job / name).is_file(), name
    m = json.loads((job / "metrics.json").read_text())
    assert m["sampler"] == "vi" and m["vi"] == "mfa" and m["family"] == "variational"
    assert m["llc_mean"] is not None and m["llc_sem"] > 0 and m["status"] == "ok"
    assert m["pareto_khat"] is not None and len(m["pareto_khat_per_chain"]) == 2
    # work: whitening 4 + 60 steps x (2 components x 1 draw) minibatch gradients of 50/1000 rows,
    # per fit; 32 full-data evaluations per fit
    assert m["fit_fge"] == pytest.approx(2 * (4 + 60 * 2 * 1) * 50 / 1000)
    assert m["final_fge"] == 2 * 32 and m["n_fge"] + m["n_fge_warmup"] == pytest.approx(m["fit_fge"] + m["final_fge"])
    trace = pd.read_parquet(job / "trace.parquet")
    assert len(trace) == 2 * 32 and {"llc", "log_ratio"} <= set(trace.columns)
    fit = pd.read_parquet(job / "fit_trace.parquet")
    assert len(fit) == 2 * 60 and {"elbo", "grad_norm", "weight_entropy", "weight_0", "weight_1"} <= set(fit.columns)
    table = pd.read_parquet(sweep / "llc_runs.parquet")
    row = table.iloc[0]
    assert row["sampler"] == "vi" and row["vi"] == "mfa" and row["status"] == "ok"
    assert row["llc_mean"] == pytest.approx(m["llc_mean"]) and row["cfg.vi.components"] == 2
    assert row["mlflow_run_id"] == json.loads((job / "mlflow_run.json").read_text())["run_id"]
