"""budget.fge_per_chain (lambda_hat/budget.py): each estimator's sizing rule gives the sizes of the
benchmark presets it replaced (their numbers, hard-coded below, are the spec), the budget is
applied where a run's config is composed and shows in the saved config and the sweep table, and a
bad budget is one line naming the key."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lambda_hat import budget as B
from lambda_hat import registry
from lambda_hat.command_line import check_overrides
from lambda_hat.composition import CONF_DIR, compose_config
from lambda_hat.config import ConfigError
from lambda_hat.estimators.hmc import NUTS_EXCEPTIONS

ROOT = Path(__file__).resolve().parents[2]

# The deleted per-budget presets (n = 1e4, batch 500; each sampler's preset otherwise):
# conf/experiment/leaderboard/fge{1k,3k,10k,30k}/<sampler>.yaml.
SG = {"thinning": 10, "burnin_fraction": 0.5}
LEADERBOARD: dict[str, dict[float, dict]] = {
    **{
        s: {
            1e3: {"num_tune": 1000, "num_steps": 18000, **SG},
            3e3: {"num_tune": 1000, "num_steps": 58000, **SG},
            1e4: {"num_tune": 1000, "num_steps": 198000, **SG},
            3e4: {"num_tune": 1000, "num_steps": 598000, **SG},
        }
        for s in ("sgld", "rmsprop_sgld", "adam_sgld")
    },
    **{
        # the presets' 20,000 ... 600,000 steps less the bias probe's 2% (lambda_hat.estimators.PROBE_EVERY)
        s: {1e3: {"num_steps": 19600, **SG}, 3e3: {"num_steps": 58820, **SG}, 1e4: {"num_steps": 196070, **SG}, 3e4: {"num_steps": 588230, **SG}}
        for s in ("sghmc", "sgnht")
    },
    "hmc": {
        1e3: {"num_integration_steps": 16, "num_warmup": 24, "num_steps": 38},
        3e3: {"num_integration_steps": 16, "num_warmup": 75, "num_steps": 112},
        1e4: {"num_integration_steps": 16, "num_warmup": 250, "num_steps": 375},
        3e4: {"num_integration_steps": 16, "num_warmup": 750, "num_steps": 1125},
    },
    "nuts": {
        1e3: {"max_tree_depth": 5, "num_warmup": 14, "num_steps": 18},
        3e3: {"max_tree_depth": 5, "num_warmup": 42, "num_steps": 54},
        1e4: {"max_tree_depth": 5, "num_warmup": 150, "num_steps": 170},
        3e4: {"max_tree_depth": 5, "num_warmup": 450, "num_steps": 510},
    },
    "mclmc": {1e3: {"num_steps": 375}, 3e3: {"num_steps": 1125}, 1e4: {"num_steps": 3750}, 3e4: {"num_steps": 11250}},
    "adjusted_mclmc": {1e3: {"num_steps": 250}, 3e3: {"num_steps": 750}, 1e4: {"num_steps": 2500}, 3e4: {"num_steps": 7500}},
}
# conf/experiment/sampler_benchmark_<sampler>.yaml (all at ~1e4 FGE); EXPLICIT: set in
# sampler_benchmark's budget.per_sampler, because the rule gives the leaderboard's 1e4 sizes.
SAMPLER_BENCHMARK = {
    **{s: {"num_tune": 1000, "num_steps": 200000, **SG} for s in ("sgld", "rmsprop_sgld", "adam_sgld")},
    "sghmc": {"num_steps": 196070, **SG},
    "sgnht": {"num_steps": 196070, **SG},
    "hmc": {"num_warmup": 200, "num_steps": 400, "num_integration_steps": 16},
    "nuts": {"max_tree_depth": 5, "num_warmup": 150, "num_steps": 170},
    "mclmc": {"num_steps": 3750},
    "adjusted_mclmc": {"num_steps": 2000},
}
SAMPLER_BENCHMARK_EXPLICIT = {"sgld", "rmsprop_sgld", "adam_sgld", "hmc", "adjusted_mclmc"}
# conf/experiment/vi_benchmark_<name>.yaml (~530 FGE per chain / fit)
VI_BENCHMARK = {
    "mfa16": {"num_steps": 4000, "num_samples": 2, "num_draws": 128, "learning_rate": 0.02},
    "mfa64": {"num_steps": 4000, "num_samples": 2, "num_draws": 128, "learning_rate": 0.02},
    "flow": {"num_steps": 4000, "num_samples": 2, "num_draws": 128, "learning_rate": 0.02},
    "sgld": {"num_tune": 100, "num_steps": 10400, **SG},
    "hmc": {"num_integration_steps": 8, "num_warmup": 24, "num_steps": 42},
}
# conf/experiment/samplers_compared/<sampler>.yaml (Lau et al.'s steps: no FGE budget)
SAMPLERS_COMPARED = {
    **{s: {"num_steps": 10000, "num_burnin": 9000, "target_mala_accept": 0.9, "num_tune": 1000} for s in ("sgld", "rmsprop_sgld", "adam_sgld")},
    "sghmc": {"num_steps": 10000, "num_burnin": 9000},
    "sgnht": {"num_steps": 10000, "num_burnin": 9000},
    "hmc": {"num_warmup": 300, "num_steps": 400, "num_integration_steps": 16},
    "nuts": {"num_warmup": 200, "num_steps": 200, "max_tree_depth": 6},
    "mclmc": {"num_steps": 2000},
    "adjusted_mclmc": {"num_steps": 1000},  # its preset
}


@functools.cache
def preset(sampler: str) -> dict:
    """The sampler preset's keys, composed without a budget."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=[f"sampler={sampler}"]).sampler)


def _subset(node, expected: dict) -> dict:
    return {k: node[k] for k in expected}


def test_every_estimator_has_a_sizing_rule() -> None:
    assert set(B.sizers()) == set(registry.names())


@pytest.mark.parametrize("sampler", sorted(LEADERBOARD))
def test_each_rule_gives_the_leaderboard_sizes(sampler: str) -> None:
    for fge, expected in LEADERBOARD[sampler].items():
        node = OmegaConf.create(preset(sampler))
        node.merge_with(B.sizes(sampler, node, 10_000, fge))
        assert _subset(node, expected) == expected, (sampler, fge)
        # the same through the command line's path
        cfg = compose_config([f"sampler={sampler}", "data.n=10000", f"budget.fge_per_chain={fge:g}"])
        assert _subset(cfg.sampler, expected) == expected and cfg.budget.fge_per_chain == fge


def test_nuts_exception_table_and_rule() -> None:
    """The leaderboard's NUTS sizes at 1e3 and 3e3 FGE split 7/16 warm-up; the rule (15/32, as at
    1e4 and 3e4) would give 15 + 17 and 45 + 51: the table keeps the runs that were made."""
    assert NUTS_EXCEPTIONS == {1000.0: (14, 18), 3000.0: (42, 54)}
    node = OmegaConf.create(preset("nuts"))
    assert B.sizes("nuts", node, 10_000, 1000.5) == {"max_tree_depth": 5, "num_warmup": 15, "num_steps": 17}


@pytest.mark.parametrize("sampler", sorted(SAMPLER_BENCHMARK))
def test_sampler_benchmark_sizes(sampler: str) -> None:
    cfg = compose_config(["+experiment=sampler_benchmark", f"sampler={sampler}"])
    expected = SAMPLER_BENCHMARK[sampler]
    assert _subset(cfg.sampler, expected) == expected and cfg.budget.fge_per_chain == 1e4
    # the rule alone gives these sizes for the others; the preset sets these in budget.per_sampler
    assert (list(cfg.budget.per_sampler) == [sampler]) == (sampler in SAMPLER_BENCHMARK_EXPLICIT)


@pytest.mark.parametrize("entry", sorted(VI_BENCHMARK))
def test_vi_benchmark_sizes(entry: str) -> None:
    cfg = compose_config(["+experiment=vi_benchmark", f"+experiment/vi_benchmark@_global_={entry}"])
    expected = VI_BENCHMARK[entry]
    assert _subset(cfg.sampler, expected) == expected and cfg.budget.fge_per_chain == 530
    if entry == "hmc":  # set in full: the rule's split at 530 FGE and L = 8 would be 26 + 40
        node = OmegaConf.create({**preset("hmc"), "num_integration_steps": 8})
        assert B.sizes("hmc", node, 10_000, 530) == {"num_warmup": 26, "num_steps": 40}


@pytest.mark.parametrize("sampler", sorted(SAMPLERS_COMPARED))
def test_samplers_compared_sizes_are_per_sampler(sampler: str) -> None:
    cfg = compose_config(["+experiment=samplers_compared", f"sampler={sampler}"])
    expected = SAMPLERS_COMPARED[sampler]
    assert _subset(cfg.sampler, expected) == expected and cfg.budget.fge_per_chain is None


@pytest.mark.parametrize("fge", [777.0, 2500.0, 12345.6])
def test_a_budget_is_never_exceeded(fge: float) -> None:
    """At any budget, the work each rule plans (warm-up included; NUTS at its depth cap, adjusted
    MCLMC's sampling) is within the budget and uses at least 90% of it."""
    n = 10_000
    for name in B.sizers():
        cfg = compose_config([f"sampler={name}", f"data.n={n}", f"budget.fge_per_chain={fge}"])
        s, spec = cfg.sampler, registry.get(name)
        if spec.family == "minibatch":
            step = s.batch_size / n
            spent = s.num_steps * step + (2 * s.num_tune * step if "num_tune" in s else 0)
        elif name == "vi":
            step = s.batch_size / n
            spent = s.whitening_batches * step + s.num_steps * s.num_samples * cfg.vi.components * step + s.num_draws
        else:
            expected, upper = spec.gradients_per_chain(s)
            spent = expected if expected is not None else upper
        assert 0.9 * fge <= spent <= fge, (name, fge, spent)


def test_the_budget_wins_over_presets_and_per_sampler_over_the_budget() -> None:
    # a preset's sizes are replaced (smoke: num_steps 1000, thinning 1)
    cfg = compose_config(["+experiment=smoke", "sampler=sgld", "data.n=10000", "budget.fge_per_chain=1000"])
    assert (cfg.sampler.num_steps, cfg.sampler.thinning, cfg.sampler.burnin_fraction) == (18000, 10, 0.5)
    cfg = compose_config(["sampler=sgld", "data.n=10000", "budget.fge_per_chain=1000", "+budget.per_sampler.sgld.num_steps=500"])
    assert (cfg.sampler.num_steps, cfg.sampler.thinning) == (500, 10)
    # the rule reads the sampler's other keys: a shorter tuning leaves more steps
    cfg = compose_config(["sampler=sgld", "data.n=10000", "budget.fge_per_chain=1000", "sampler.num_tune=100"])
    assert cfg.sampler.num_steps == 19800
    # no budget: no effect
    cfg = compose_config(["sampler=sgld"])
    assert cfg.budget.fge_per_chain is None and cfg.sampler.num_steps == preset("sgld")["num_steps"]


@pytest.mark.parametrize(
    ("overrides", "key", "by"),
    [
        (["budget.fge_per_chain=3000", "sampler.num_steps=5"], "sampler.num_steps", "budget.fge_per_chain=3000"),
        (["sampler=nuts", "budget.fge_per_chain=3000", "sampler.max_tree_depth=6"], "sampler.max_tree_depth", "budget.fge_per_chain=3000"),
        (["+experiment=samplers_compared", "sampler=sgld", "sampler.target_mala_accept=null"], "sampler.target_mala_accept", "budget.per_sampler.sgld"),
    ],
)
def test_a_sampler_key_the_budget_sets_is_an_error_on_the_command_line(overrides: list[str], key: str, by: str) -> None:
    """It would be replaced silently; the line says how to set it (budget.per_sampler wins)."""
    error = check_overrides(overrides)
    assert error is not None and "\n" not in error and error.startswith(key) and f"set by {by}" in error, error
    leaf = key.split(".")[-1]
    assert f"budget.per_sampler.{compose_config([o for o in overrides if not o.startswith(key)]).sampler.name}.{leaf}=VALUE" in error
    with pytest.raises(ConfigError):
        compose_config(overrides)


def test_apply_budget_is_idempotent_and_keeps_only_the_running_entry() -> None:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        raw = compose("config", overrides=["+experiment=samplers_compared", "sampler=nuts", "budget.fge_per_chain=3000"])
    assert sorted(raw.budget.per_sampler) == sorted(set(SAMPLERS_COMPARED) - {"adjusted_mclmc"})
    once = B.apply_budget(raw.copy())
    twice = B.apply_budget(once.copy())
    assert OmegaConf.to_container(once) == OmegaConf.to_container(twice)
    # per_sampler (nuts: 200 + 200 at depth 6) wins over the budget's sizes for the keys it names
    assert (once.sampler.num_warmup, once.sampler.num_steps, once.sampler.max_tree_depth) == (200, 200, 6)
    assert OmegaConf.to_container(once.budget.per_sampler) == {"nuts": {"num_warmup": 200, "num_steps": 200, "max_tree_depth": 6}}


def test_the_run_applies_the_budget_and_its_config_and_sweep_row_show_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """runner.run sizes the config it is given (before validating and saving it), and the sweep
    table's row of a job shows the sized keys and the budget (from the job's .hydra/config.yaml,
    which Hydra writes before the job sizes it)."""
    from lambda_hat import runner
    from lambda_hat.report import runs
    from lambda_hat.sweeps import aggregate

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        raw = compose("config", overrides=["sampler=hmc", "data.n=10000", "budget.fge_per_chain=3000"])
    assert raw.sampler.num_steps == preset("hmc")["num_steps"]  # not sized yet

    class Stop(Exception):
        pass

    seen = {}

    def validate(cfg):
        seen["sampler"] = OmegaConf.to_container(cfg.sampler)
        raise Stop

    monkeypatch.setattr(runner.registry, "validate", validate)
    with pytest.raises(Stop):
        runner.run(raw.copy(), tmp_path / "out", tmp_path)
    assert (seen["sampler"]["num_warmup"], seen["sampler"]["num_steps"]) == (75, 112)

    job = tmp_path / "job"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(raw))
    row = aggregate.read_job(job)
    assert (row["cfg.sampler.num_warmup"], row["cfg.sampler.num_steps"], row["cfg.budget.fge_per_chain"]) == (75, 112, 3000.0)
    assert runs.budget_label(row["cfg.budget.fge_per_chain"]) == "3,000 FGE"


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        (["budget.fge_per_chain=0"], "budget.fge_per_chain", "must be > 0"),
        (["budget.fge_per_chain=-5"], "budget.fge_per_chain", "must be > 0"),
        (["data.n=10000", "budget.fge_per_chain=50"], "budget.fge_per_chain", "too small for sgld"),
        (["sampler=nuts", "budget.fge_per_chain=40"], "budget.fge_per_chain", "too small for nuts"),
        (["budget.fge_per_chain=1000", "sampler.max_steps=100000"], "sampler.max_steps", "must be null with budget.fge_per_chain"),
        (["sampler=hmc", "budget.fge_per_chain=1000", "sampler.trajectory_length=1.0"], "sampler.trajectory_length", "must be null"),
        (["+budget.per_sampler.hcm.num_steps=5"], "budget.per_sampler.hcm", "not an estimator"),
        (["sampler=hmc", "+budget.per_sampler.hmc.num_tune=5"], "budget.per_sampler.hmc.num_tune", "unknown key"),
        (["--multirun", "budget.fge_per_chain=-1,1000"], "budget.fge_per_chain", "must be > 0"),
        # a budget fixes the length: sampling until converged is asked for where the budget says so
        (["budget.fge_per_chain=1000", "sampler.until_converged=true"], "sampler.until_converged", "budget.per_sampler.sgld.until_converged"),
        (["sampler.until_converged=false", "sampler.max_steps=5000"], "sampler.max_steps", "work cap of sampler.until_converged=true"),
    ],
)
def test_a_bad_budget_is_one_line_naming_the_key(overrides: list[str], key: str, fragment: str) -> None:
    error = check_overrides(overrides)
    assert error is not None and "\n" not in error and error.startswith(key) and fragment in error, error


def test_a_budgeted_run_has_a_fixed_length_unless_its_entry_asks_otherwise() -> None:
    assert compose_config([]).sampler.until_converged is True  # the default: until converged
    for budget in (["budget.fge_per_chain=1000"], ["sampler=hmc", "+budget.per_sampler.hmc.num_steps=50"]):
        assert B.apply_budget(compose_config(budget)).sampler.until_converged is False, budget
    entry = B.apply_budget(compose_config(["budget.fge_per_chain=1000", "+budget.per_sampler.sgld.until_converged=true"]))
    assert entry.sampler.until_converged is True


def test_a_bad_budget_raises_config_error_unless_not_strict() -> None:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        raw = compose("config", overrides=["budget.fge_per_chain=0"])
    with pytest.raises(ConfigError) as e:
        B.apply_budget(raw)
    assert e.value.key == "budget.fge_per_chain"
    assert B.apply_budget(raw, strict=False) is raw and raw.sampler.num_steps == preset("sgld")["num_steps"]
    # nothing changes unless every check passes (here the sizing fails after per_sampler's keys)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        raw = compose("config", overrides=["sampler=hmc", "budget.fge_per_chain=10", "+budget.per_sampler.hmc.num_integration_steps=8"])
    before = OmegaConf.to_container(raw)
    assert OmegaConf.to_container(B.apply_budget(raw, strict=False)) == before


def test_good_budgets_pass_the_command_line_check() -> None:
    assert check_overrides(["sampler=nuts", "budget.fge_per_chain=3000"]) is None
    assert check_overrides(["--multirun", "sampler=sgld,hmc,vi", "budget.fge_per_chain=1000,3000"]) is None
    assert check_overrides(["--multirun", "+experiment=leaderboard", "sampler=hmc", "budget.fge_per_chain=30000"]) is None


def test_budget_module_does_not_start_jax() -> None:
    code = "import sys, lambda_hat.budget; print('jax' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_a_later_sweep_job_whose_key_the_budget_would_replace_fails_alone_in_one_line(tmp_path: Path) -> None:
    """The up-front check sees the first job only (no budget there); the second job's budget would
    silently replace its explicit sampler.num_steps, so that job fails with the one line, the
    first runs, and the sweep exits 1."""
    from tests.conftest import run_cli

    sweep = tmp_path / "sweep"
    args = ["--multirun", "budget.fge_per_chain=null,100", "sampler.num_steps=200", "sampler.num_tune=50", "sampler.num_chains=2"]
    small = ["model.widths=[3,4,3]", "model.true_rank=1", "data.n=1000", "sampler.batch_size=100", "mlflow.enabled=false", "progress=false"]
    proc = run_cli([*args, *small, f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    import pandas as pd

    table = pd.read_parquet(sweep / "llc_runs.parquet").sort_values("job_num")
    assert list(table["status"]) == ["ok", "failed"]
    error = table["error"].iloc[1]
    assert error.startswith("sampler.num_steps='200' is invalid: set by budget.fge_per_chain=100") and "\n" not in error
