"""Launcher comparison: the same 8-job sweep (bench_sweep_overhead.py's ``sgld8``) with Hydra's
basic launcher, ``local_parallel`` and ``slurm_cpu``, wall clock and per-job overhead.

Each command is timed whole (interpreter start, imports, every job, the sweep table) by
bench_sweep_overhead.run_once; this adds the launchers' own settings and a per-job overhead that
accounts for jobs running at once:

  at once         k, the jobs the launcher runs at the same time (basic: 1; local_parallel: its
                  max_parallel, default one per core; slurm_cpu: CPUs of the node / cpus_per_task)
  overhead/job s  (k * wall - summed estimator time) / jobs: the slot-seconds a job costs beyond
                  its sampling, warm-up and compilation (process start, imports, JAX start-up,
                  MLflow, scheduling, the sweep table's share)

slurm_cpu needs a running cluster (scripts/slurm-dev-cluster.sh start); it runs with
``--slurm-cpus`` CPUs and 1 GB per job (the dev cluster's node has few cores).

Usage (from the repository root):
  python scripts/bench_launchers.py                     # basic, local_parallel, slurm_cpu; 3 repeats
  python scripts/bench_launchers.py --repeats 1 --mlflow --launchers basic,local_parallel
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sweep_overhead as overhead  # noqa: E402  (the sweep, its timing and the table)

LAUNCHERS = ("basic", "local_parallel", "slurm_cpu")


def launcher_settings(name: str, args: argparse.Namespace) -> tuple[list[str], int]:
    """The launcher's overrides for this machine and k, the jobs it runs at once."""
    cores = os.cpu_count() or 1
    if name == "local_parallel":
        return [], min(cores, 8)
    if name == "slurm_cpu":
        extra = [f"hydra.launcher.cpus_per_task={args.slurm_cpus}", "hydra.launcher.mem_gb=1", "hydra.launcher.poll_s=1"]
        return extra, max(1, min(cores // args.slurm_cpus, 8))
    return [], 1


def compare(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Median numbers per launcher (bench_sweep_overhead's columns plus at_once, overhead_slot_s)."""
    summary = []
    for name in args.launchers:
        extra, k = launcher_settings(name, args)
        ns = argparse.Namespace(extra=[*args.extra, *extra], mlflow=args.mlflow, cold=False, timeout=args.timeout)
        runs = []
        for i in range(args.repeats):
            r = overhead.run_once("sgld8", name, ns)
            r["at_once"] = k
            r["overhead_slot_s"] = (k * r["wall_s"] - r["sampling_warmup_s"] - r["compile_s"]) / max(r["jobs"], 1)
            print(
                f"# {name} repeat {i + 1}/{args.repeats}: wall {r['wall_s']:.1f}s, {r['ok']}/{r['jobs']} ok, load {r['load1']:.1f}", file=sys.stderr, flush=True
            )
            runs.append(r)
        med = {key: statistics.median(r[key] for r in runs) for key in runs[0] if isinstance(runs[0][key], float)}
        summary.append({**runs[0], **med, "ok": min(r["ok"] for r in runs)})
    return summary


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("launcher", "jobs", "ok", "at once", "wall s", "cpu s", "sampling+warmup s", "compile s", "overhead/job s", "load")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["launcher"], str(r["jobs"]), str(r["ok"]), str(r["at_once"])]
        cells += [f"{r[k]:.1f}" for k in ("wall_s", "cpu_s", "sampling_warmup_s", "compile_s", "overhead_slot_s", "load1")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--launchers", default=",".join(LAUNCHERS), help=f"comma-separated, from {', '.join(LAUNCHERS)}")
    p.add_argument("--repeats", type=int, default=3, help="runs per launcher; medians are printed (default 3)")
    p.add_argument("--slurm-cpus", type=int, default=1, help="cpus_per_task of the slurm_cpu jobs (default 1)")
    p.add_argument("--mlflow", action="store_true", help="MLflow on (SQLite store in each command's temp folder)")
    p.add_argument("--extra", action="append", default=[], metavar="OVERRIDE", help="an override added to every sweep")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per command (default 1800)")
    args = p.parse_args(argv)
    args.launchers = [s.strip() for s in args.launchers.split(",") if s.strip()]
    unknown = [s for s in args.launchers if s not in LAUNCHERS]
    if unknown:
        p.error(f"unknown launcher(s) {', '.join(unknown)}; known: {', '.join(LAUNCHERS)}")
    rows = compare(args)
    print(
        f"sgld8 (8 SGLD jobs), median of {args.repeats} repeat(s), warm cache after the first, mlflow {'on' if args.mlflow else 'off'}, {os.cpu_count()} CPUs\n"
    )
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
