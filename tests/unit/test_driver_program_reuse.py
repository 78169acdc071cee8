"""Compiled programs are reused by later runs of the same process (a sweep under Hydra's basic
launcher): same sampler settings and shapes -> no compilation and bit-identical numbers."""

from __future__ import annotations

from pathlib import Path

from lambda_hat.runner import run
from tests.conftest import TINY

# A budget no other test uses, so that the first run below compiles its own programs.
ARGS = (*TINY, "sampler.num_steps=440", "sampler.num_burnin=220", "sampler.num_tune=60", "sampler.num_chains=2", "plots=false")


def test_a_later_run_reuses_the_programs_and_gives_the_same_numbers(make_cfg, tmp_path: Path) -> None:
    first = run(make_cfg(*ARGS, "seed=11"), tmp_path / "a", tmp_path)
    other = run(make_cfg(*ARGS, "seed=12"), tmp_path / "b", tmp_path)
    again = run(make_cfg(*ARGS, "seed=11"), tmp_path / "c", tmp_path)
    assert first["compile_time_s"] > 0 and first["warmup_compile_time_s"] > 0
    for m in (other, again):  # another seed (another teacher, same shapes), and the first seed again
        assert m["compile_time_s"] == 0 and m["warmup_compile_time_s"] == 0
    assert again["llc_per_chain"] == first["llc_per_chain"] and again["llc_mean"] == first["llc_mean"]
    assert other["llc_mean"] != first["llc_mean"]
    # Any setting the program is built from makes a new one: here the step where tuning starts.
    changed = run(make_cfg(*ARGS, "seed=11", "sampler.step_size=4e-7"), tmp_path / "d", tmp_path)
    assert changed["warmup_compile_time_s"] > 0 and changed["llc_mean"] != first["llc_mean"]
