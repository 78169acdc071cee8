"""The accuracy benchmark as a sweep: model=dln_random draws Lau et al.'s random DLNs by (size
class, index, generator seed), and `python -m lambda_hat.aggregate --accuracy` prints its table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from omegaconf import OmegaConf

from lambda_hat import aggregate as cli
from lambda_hat.composition import compose_config
from lambda_hat.command_line import check_overrides
from lambda_hat.registry import validate
from lambda_hat.random_dln import draw
from lambda_hat.sweeps.accuracy import accuracy_frame, accuracy_table
from lambda_hat.targets import target_spec

# Nets the former scripts/bench_accuracy.py drew (its draw_net, run at commit 039ab36), so the
# README's numbers before and after the sweep are about the same nets:
# (size class, generator seed, index) -> (widths, requested rank, seed of teacher and data).
OLD_DRAWS = {
    ("1k", 0, 0): ([21, 18, 12, 13, 6, 6], 1, 1394609702),
    ("1k", 0, 7): ([19, 11, 13, 23, 20], None, 1633503581),
    ("1k", 0, 19): ([25, 8, 29, 30, 11, 16], None, 1157352826),
    ("1k", 1, 19): ([11, 19, 15, 20, 7], 6, 816954898),
    ("10k", 0, 0): ([90, 100, 58, 34, 81], 31, 125875097),
    ("10k", 0, 7): ([77, 97, 61, 22], 16, 1262075666),
    ("10k", 1, 19): ([6, 14, 37, 57, 51, 5], None, 1408583304),
    ("10k", 1, 33): ([45, 85, 48], 14, 471244603),
}


@pytest.mark.parametrize("key", sorted(OLD_DRAWS))
def test_random_dln_draws_the_nets_of_the_former_benchmark(key: tuple[str, int, int]) -> None:
    size_class, gen_seed, index = key
    widths, rank, seed = OLD_DRAWS[key]
    net = draw(size_class, index, gen_seed)
    assert (net.widths, net.true_rank, net.seed) == (widths, rank, seed)
    cfg = compose_config(["model=dln_random", f"model.size_class={size_class}", f"model.index={index}", f"model.generator_seed={gen_seed}"])
    validate(cfg)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert model["name"] == "dln" and model["widths"] == widths and model["true_rank"] == rank
    assert target_spec(cfg)["seed"] == seed  # the teacher and data of the former run


def test_random_dln_rejects_bad_values_in_one_line() -> None:
    cases = {
        "model.size_class=2k": ("model.size_class", "1k, 10k"),
        "model.index=-1": ("model.index", ">= 0"),
        "model.widths=[3,3]": ("model.widths", "model=dln"),
        "model.true_rank=2": ("model.true_rank", "model=dln"),  # net 0 has rank 1
        "target_seed=3": ("target_seed", "model.teacher_seed"),
    }
    for override, (key, hint) in cases.items():
        error = check_overrides(["model=dln_random", override])
        assert error is not None and "\n" not in error and error.startswith(key) and hint in error, (override, error)
    assert check_overrides(["model=dln_random", "model.size_class=10k", "model.index=3"]) is None


def _synthetic_table() -> pd.DataFrame:
    """Six ~1k jobs (signed errors below, one without an estimate, and their 95% intervals), one job
    with no known λ and one killed job."""
    rows: list[dict[str, Any]] = []
    errors = [0.01, -0.03, 0.08, None, 0.02, -0.2]  # None: every chain diverged
    widths = [[5, 8, 6], [5, 8, 6], [10, 10], [10, 10], [7, 9, 7], [7, 9, 7]]
    ranks = [5, 2, 10, 3, 7, 7]  # built product rank: full where it equals min(widths)
    # λ = 10: covers, misses (half-width 2%), misses, none, covers, misses (half-width 5%)
    intervals = ["[9.8, 10.4]", "[9.5, 9.9]", "[10.5, 11.1]", None, "[9.9, 10.5]", "[7.5, 8.5]"]
    corrected = [10.0, 9.6, 10.7, None, 10.1, 7.9]  # errors 0, -4, +7, none, +1, -21%
    stops = ["converged", "work cap", "converged", "work cap", "fixed length", "converged"]
    for i, (e, w, r, ci, c, stop) in enumerate(zip(errors, widths, ranks, intervals, corrected, stops)):
        rows.append(
            {
                "status": "ok" if e is not None else "some_chains_diverged",
                "llc_true": 10.0,
                "llc_rel_error": e,
                "d": 500 + 100 * i,
                "true_rank": r,
                "cfg.model.widths": str(w).replace(" ", ""),
                "cfg.model.size_class": "1k",
                "llc_ci95": ci,
                "llc_bias_corrected": c,
                "stop_reason": stop,
                "n_fge": 1000.0 * (i + 1),  # FGE per chain: 300, 550, 800, 1,050, 1,300, 1,550
                "n_fge_warmup": 200.0,
                "num_chains": 4,
            }
        )
    rows.append({"status": "ok", "llc_true": None, "llc_rel_error": None, "d": 5, "true_rank": None, "cfg.model.widths": "[2,2]", "cfg.model.size_class": None})
    rows.append({**rows[0], "status": "killed", "llc_rel_error": None})  # interrupted: not a result
    return pd.DataFrame(rows)


def test_accuracy_table_statistics_on_a_synthetic_sweep() -> None:
    df = _synthetic_table()
    acc = accuracy_frame(df)
    assert len(acc) == 6 and list(acc["full_rank"]) == [True, False, True, False, True, True]
    assert math.isnan(acc["rel_error"][3])
    lines = accuracy_table(df).splitlines()
    assert lines[0] == "6 jobs with a known λ (1 without a known λ, 1 killed or unfinished: left out)"
    # all six: |errors| 1, 2, 3, 8, 20, inf -> median 5.5%, p90 the observed inf, 50% within 5%,
    # 67% within 10%, signed median over the five estimates +1.0%, one diverged; 2 of the 5
    # intervals cover λ, median half-width 3%
    # work: median FGE per chain (warm-up included), the share of runs until converged that converged
    assert lines[4] == "| **~1k params** | 6 | 500–1000 | 5.5% | inf | inf | inf | 50% | 67% | 1.0% | 1 | 40% (2/5) | 3.0% | 4.0% | 925 | 60% (3/5) |"
    assert lines[5] == "| … full rank | 4 | 500–1000 | 5.0% | 7.8% | 20.0% | 20.0% | 50% | 75% | 1.5% | 0 | 50% (2/4) | 3.0% | 4.0% | 1,050 | 100% (3/3) |"
    assert lines[6] == "| … reduced rank | 2 | 600–800 | inf | inf | inf | inf | 50% | 50% | -3.0% | 1 | 0% (0/1) | 2.0% | 4.0% | 800 | 0% (0/2) |"


def test_aggregate_cli_prints_the_accuracy_table_of_a_parquet(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "llc_runs.parquet"
    df = _synthetic_table()
    df["cfg.model.size_class"] = df["cfg.model.size_class"].astype(object)
    df.to_parquet(path)
    assert cli.main(["--accuracy", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| **~1k params** | 6 |" in out and "| … reduced rank | 2 |" in out
    assert cli.main(["--accuracy", str(tmp_path / "missing.parquet")]) == 2


def test_accuracy_table_by_a_column(tmp_path: Path, capsys: Any) -> None:
    """--by splits each class into one row per value (here: nets drawn by two generator seeds)."""
    df = _synthetic_table()
    df["cfg.model.generator_seed"] = [0, 0, 0, 1, 1, 1, 0, 0]
    lines = accuracy_table(df, "cfg.model.generator_seed").splitlines()
    # seed 0: |errors| 1, 3, 8 -> median 3.0%; seed 1: inf, 2, 20 -> median 20.0%, one diverged
    assert "| … generator_seed = 0 | 3 | 500–700 | 3.0% | 4.0% | 8.0% | 8.0% | 67% | 100% | 1.0% | 0 | 33% (1/3) | 3.0% | 4.0% | 550 | 67% (2/3) |" in lines
    assert "| … generator_seed = 1 | 3 | 800–1000 | 20.0% | inf | inf | inf | 33% | 33% | -9.0% | 1 | 50% (1/2) | 4.0% | 11.0% | 1,300 | 50% (1/2) |" in lines
    path = tmp_path / "llc_runs.parquet"
    df.astype({"cfg.model.size_class": object}).to_parquet(path)
    assert cli.main(["--accuracy", "--by", "cfg.model.generator_seed", str(path)]) == 0
    assert "generator_seed = 1" in capsys.readouterr().out
    assert cli.main(["--accuracy", "--by", "cfg.model.nope", str(path)]) == 2
    assert "--by cfg.model.nope: no such column" in capsys.readouterr().err
    assert cli.main(["--by", "cfg.model.generator_seed", str(path)]) == 2  # only with --accuracy
