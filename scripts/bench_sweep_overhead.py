"""Sweep overhead benchmark: what a multirun costs beyond its estimators, per launcher.

Runs each sweep below as one command (``python -m lambda_hat --multirun ...``), times the wall
clock of the whole command (interpreter start, imports, every job, the sweep table), reads the
sweep's ``llc_runs.parquet`` (or, if it is missing, the jobs' ``metrics.json``) and prints a
markdown table, one row per (sweep, launcher), medians over ``--repeats``:

  jobs            jobs in the sweep (rows of the table)
  ok              jobs with status ok / some_chains_diverged
  wall s          wall clock of the whole command
  cpu s           user + system CPU time of the command and its children
  sampling+warmup s   summed over jobs: sampling_time_s + warmup_time_s
  compile s       summed over jobs: compile_time_s + warmup_compile_time_s
  overhead/job s  (wall - summed estimator time) / jobs, estimator time = sampling + warm-up +
                  both compiles. With a parallel launcher the summed estimator time can exceed
                  the wall clock, and this goes negative: that is the launcher's speed-up.
                  It includes the command's fixed cost (interpreter, imports, the sweep's set-up
                  and table) spread over the jobs; with both sgld1 and sgld8 run, a last line
                  gives the cost of one more job: the difference of their (wall - estimator
                  time), divided by the 7 extra jobs.

Sweeps (``--sweeps``):
  sgld8  8 small SGLD jobs: model.widths=[4,6,4] model.true_rank=2 data.n=10000
         sampler.batch_size=100 sampler.num_steps=2000 seed=0..7
  sgld1  the first of them alone (the command's fixed cost)
  smoke  +experiment=smoke (every sampler once on a tiny DLN)
  grid25      5 fixed steps x 5 γ, 4 chains each, default DLN (d = 800)
  grid25_mlp  the same grid on a user MLP (examples/digits_mlp.py, d = 24,760), 2,000 steps
  grid25_small  the same grid of sgld8's small jobs (DLN [4,6,4], batch 100, 2,000 steps)

Launchers (``--launcher``, repeatable): ``basic`` (Hydra's in-process basic launcher, the
default) or any ``hydra/launcher`` option, passed as ``hydra/launcher=<name>``.

``--checkout DIR`` runs another copy of lambda_hat (e.g. an older commit unpacked with
``git archive``) with this Python, for before/after comparisons side by side.

Every command runs in a fresh temporary folder with mlflow.enabled=false (``--mlflow``: MLflow on,
a SQLite store in that folder). The target and XLA caches are the usual ones ($LAMBDA_HAT_CACHE
or ~/.cache/lambda_hat), so after the first repeat compilation mostly hits the persistent cache;
``--cold`` gives every command an empty cache instead (compilation from scratch). The machine
may be shared: the 1-minute load average before each command is printed; compare medians.

Usage (from the repository root):
  python scripts/bench_sweep_overhead.py                          # every sweep, basic launcher, 3 repeats
  python scripts/bench_sweep_overhead.py --sweeps smoke --repeats 1
  python scripts/bench_sweep_overhead.py --launcher basic --launcher local_parallel
  python scripts/bench_sweep_overhead.py --sweeps sgld1,sgld8 --checkout /tmp/lambda_hat_before
  python scripts/bench_sweep_overhead.py --cold --repeats 2 --json results.json
  python scripts/bench_sweep_overhead.py --extra cpu_devices=1    # more overrides for every sweep
  python scripts/bench_sweep_overhead.py --sweeps grid25,grid25_mlp --launcher basic \
      --launcher local_parallel --launcher batched               # batched grids (issue 25)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent

SWEEPS: dict[str, list[str]] = {
    "sgld8": [
        "model.widths=[4,6,4]",
        "model.true_rank=2",
        "data.n=10000",
        "sampler.batch_size=100",
        "sampler.num_steps=2000",
        "seed=0,1,2,3,4,5,6,7",
    ],
    "smoke": ["+experiment=smoke"],
}
SWEEPS["sgld1"] = [*SWEEPS["sgld8"][:-1], "seed=0"]
# Issue 25's grid: 5 fixed steps x 5 γ, 4 chains each (a calibration-style grid), on the default DLN
# and on a user MLP of 24,760 parameters (examples/digits_mlp.py, hidden 330, at its initial
# weights: the timing is the point), 2,000 steps there to keep the basic launcher's run short.
GRID25 = ["sampler.target_mala_accept=null", "sampler.num_chains=4", "sampler.step_size=1e-7,3e-7,1e-6,3e-6,1e-5", "posterior.gamma=1,10,100,1000,10000"]
SWEEPS["grid25"] = GRID25
# The same grid of small jobs (bench's sgld8 sizes: DLN [4,6,4], batch 100, 2,000 steps), where a
# job's sampling is a fraction of a second and the per-job cost dominates.
SWEEPS["grid25_small"] = [*SWEEPS["sgld8"][:-1], *GRID25]
SWEEPS["grid25_mlp"] = [*GRID25, "model=user", "model.factory=examples.digits_mlp:target", "+model.args.hidden=330", "sampler.num_steps=2000"]
OK_STATUS = ("ok", "some_chains_diverged")
ESTIMATOR_TIMES = ("sampling_time_s", "warmup_time_s", "compile_time_s", "warmup_compile_time_s")


def job_table(sweep_dir: Path) -> pd.DataFrame:
    """One row per job: the sweep's llc_runs.parquet, else the jobs' metrics.json files."""
    table = sweep_dir / "llc_runs.parquet"
    if table.is_file():
        return pd.read_parquet(table)
    rows = []
    for path in sorted(sweep_dir.glob("*/metrics.json")):
        try:
            rows.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            rows.append({"status": "unreadable"})
    return pd.DataFrame(rows)


def _sum(df: pd.DataFrame, *cols: str) -> float:
    return float(sum(pd.to_numeric(df[c], errors="coerce").fillna(0.0).sum() for c in cols if c in df))


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_once(sweep: str, launcher: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"lh_overhead_{sweep}_") as tmp:
        work = Path(tmp)
        sweep_dir = work / "sweep"
        cmd = [sys.executable, "-m", "lambda_hat", "--multirun", *SWEEPS[sweep], *args.extra, f"hydra.sweep.dir={sweep_dir}"]
        if launcher != "basic":
            cmd.append(f"hydra/launcher={launcher}")
        if args.mlflow:
            cmd += ["mlflow.enabled=true", f"mlflow.tracking_uri=sqlite:///{work / 'mlflow.db'}"]
        else:
            cmd.append("mlflow.enabled=false")
        code = str(args.checkout.resolve())
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [code, os.environ.get("PYTHONPATH")]))}
        if args.cold:
            env["LAMBDA_HAT_CACHE"] = str(work / "cache")
        load = os.getloadavg()[0]
        cpu0, t0 = _children_cpu(), time.perf_counter()
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=args.timeout)
        wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise SystemExit(f"{sweep} ({launcher}) failed with exit code {proc.returncode}:\n{' '.join(cmd)}\n{tail}")
        df = job_table(sweep_dir)
    jobs = len(df)
    ok = int(df["status"].isin(OK_STATUS).sum()) if "status" in df else 0
    sampling = _sum(df, "sampling_time_s", "warmup_time_s")
    compile_s = _sum(df, "compile_time_s", "warmup_compile_time_s")
    return {
        "sweep": sweep,
        "launcher": launcher,
        "jobs": jobs,
        "ok": ok,
        "wall_s": wall,
        "cpu_s": cpu,
        "sampling_warmup_s": sampling,
        "compile_s": compile_s,
        "overhead_per_job_s": (wall - sampling - compile_s) / max(jobs, 1),
        "load1": load,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("sweep", "launcher", "jobs", "ok", "wall s", "cpu s", "sampling+warmup s", "compile s", "overhead/job s", "load")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["sweep"], r["launcher"], str(r["jobs"]), str(r["ok"])]
        cells += [f"{r[k]:.1f}" for k in ("wall_s", "cpu_s", "sampling_warmup_s", "compile_s")]
        cells += [f"{r['overhead_per_job_s']:.2f}", f"{r['load1']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--launcher", action="append", metavar="NAME", help="'basic' (default) or a hydra/launcher option; repeat for several")
    p.add_argument("--sweeps", default="sgld1,sgld8,smoke", help=f"comma-separated, from {', '.join(SWEEPS)} (default: all)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each sweep per launcher; medians are printed (default 3)")
    p.add_argument("--cold", action="store_true", help="an empty target/XLA cache for every command")
    p.add_argument("--mlflow", action="store_true", help="MLflow on (SQLite store in the command's temp folder)")
    p.add_argument("--extra", action="append", default=[], metavar="OVERRIDE", help="an override added to every sweep")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per command (default 1800)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every repeat's numbers to FILE")
    p.add_argument("--checkout", type=Path, default=ROOT, metavar="DIR", help="the lambda_hat copy to run (default: this one)")
    args = p.parse_args(argv)
    launchers = args.launcher or ["basic"]
    sweeps = [s.strip() for s in args.sweeps.split(",") if s.strip()]
    unknown = [s for s in sweeps if s not in SWEEPS]
    if unknown:
        p.error(f"unknown sweep(s) {', '.join(unknown)}; known: {', '.join(SWEEPS)}")

    raw: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for sweep in sweeps:
        for launcher in launchers:
            runs = []
            for i in range(args.repeats):
                r = run_once(sweep, launcher, args)
                r["repeat"] = i
                print(
                    f"# {sweep} / {launcher} repeat {i + 1}/{args.repeats}: wall {r['wall_s']:.1f}s, {r['ok']}/{r['jobs']} ok, load {r['load1']:.1f}",
                    file=sys.stderr,
                    flush=True,
                )
                runs.append(r)
            raw += runs
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], float)}
            summary.append({**runs[0], **med, "jobs": runs[0]["jobs"], "ok": min(r["ok"] for r in runs)})
    cache = "cold cache" if args.cold else "warm cache after the first repeat"
    print(f"sweep overhead, median of {args.repeats} repeat(s), {cache}, mlflow {'on' if args.mlflow else 'off'}, {os.cpu_count()} CPUs\n")
    print(markdown(summary))
    for launcher in launchers:
        one = next((r for r in summary if r["sweep"] == "sgld1" and r["launcher"] == launcher), None)
        eight = next((r for r in summary if r["sweep"] == "sgld8" and r["launcher"] == launcher), None)
        if one and eight and eight["jobs"] > one["jobs"]:

            def outside(r: dict[str, Any]) -> float:
                return r["wall_s"] - r["sampling_warmup_s"] - r["compile_s"]

            extra = (outside(eight) - outside(one)) / (eight["jobs"] - one["jobs"])
            cpu = (eight["cpu_s"] - one["cpu_s"]) / (eight["jobs"] - one["jobs"])
            print(
                f"\n{launcher}: one more job costs {extra:.2f} s beyond its estimator (sgld8 vs sgld1); "
                f"fixed cost of the command {outside(one) - extra:.1f} s; CPU per extra job, estimator "
                f"included, {cpu:.2f} s (less sensitive to other load on a shared machine)"
            )
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "runs": raw}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
