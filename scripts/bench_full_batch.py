"""Full-batch sampler speed: gradient evaluations per second and ESS per second against the FLOP bound.

For HMC and MCLMC (the full-batch samplers whose work is one full-data gradient per integration
step), on the DLNs of scripts/bench_speed.py, this measures in one process per case:
  - full-data gradient evaluations per second over all chains (the sampling phase only; warm-up /
    tuning is short here and reported apart),
  - the GFLOP/s that implies, with one gradient ≈ 2.75 × the forward matmul FLOPs at batch = n
    (bench_speed's step_flops with the batch set to n), against the machine's peak matmul rate in
    the sampler's precision, measured in the same run (a jitted scan of square GEMMs, on one device
    or one per device, the faster). Unlike bench_speed's bound at the step's own shapes, this is
    the roofline's flat top: the DLNs' narrow layers over n rows are memory-bound and cannot reach
    it (a bound at their shapes, built from batched matmuls, ran slower than lambda_hat's fused
    gradient, so it was no bound),
  - ESS (bulk, of the loss trace) per second of sampling.
Repeats are medians (min–max in brackets). It is a benchmark that prints a markdown table.

Usage (from the repository root):
  python scripts/bench_full_batch.py                          # small DLN n=1e5, large DLN n=2e3
  python scripts/bench_full_batch.py --samplers hmc --dtypes float32,float64 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_speed, beside this script

from lambda_hat.devices import configure_cpu_devices  # noqa: E402

configure_cpu_devices(None)  # one XLA device per core, as the app; before blackjax starts JAX

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from bench_speed import CASES, CHAINS  # noqa: E402
from jax.sharding import PartitionSpec  # noqa: E402

from lambda_hat.composition import compose_config  # noqa: E402
from lambda_hat.devices import CHAIN_AXIS, chain_mesh  # noqa: E402
from lambda_hat.llc import estimate_llc  # noqa: E402
from lambda_hat import runner  # noqa: E402
from lambda_hat.samplers import build_kernel  # noqa: E402
from lambda_hat.samplers.driver import run_chains  # noqa: E402
from lambda_hat.targets import build_target  # noqa: E402

# The large DLN's full float64 gradient at n = 1e5 takes ~1.5 s per chain on 2 cores; n = 2,000
# keeps a repeat under a minute with the same matmul shapes but fewer rows.
DATA_SIZES = {"small": 100_000, "large": 2_000}
GRADS_PER_STEP = {"hmc": 16, "mclmc": 1}
SAMPLER_OVERRIDES = {
    "hmc": ["sampler=hmc", "sampler.num_warmup=20", "sampler.num_integration_steps=16"],
    "mclmc": ["sampler=mclmc"],
}


@dataclass
class Row:
    case: str
    n: int
    sampler: str
    dtype: str
    steps: int
    grad_flops: float  # one chain's full-data gradient
    grads_per_s: list[float] = field(default_factory=list)  # all chains
    ess_per_s: list[float] = field(default_factory=list)
    bound_gflops: list[float] = field(default_factory=list)
    warmup_s: list[float] = field(default_factory=list)
    llc: list[float] = field(default_factory=list)
    llc_true: float | None = None


GEMM = 1024  # square matrices of the peak-rate probe
GEMM_PASSES = 20


def _peak_gemm(dtype: str) -> list:
    """Compiled probes of GEMM_PASSES chained square GEMMs per device: one device, and one per device."""
    probes = []
    for split in (False, True):
        mesh = chain_mesh(jax.device_count()) if split else None
        copies = 1 if mesh is None else mesh.devices.size
        a = jax.random.normal(jax.random.key(0), (copies, GEMM, GEMM), dtype) / GEMM**0.5

        def run(a):
            return jax.lax.fori_loop(0, GEMM_PASSES, lambda _, m: jnp.einsum("cij,cjk->cik", m, a), a)

        if mesh is not None:
            spec = PartitionSpec(CHAIN_AXIS)
            run = jax.shard_map(run, mesh=mesh, in_specs=spec, out_specs=spec)
        fn = jax.jit(run).lower(a).compile()
        jax.block_until_ready(fn(a))
        probes.append((fn, a, copies * GEMM_PASSES * 2.0 * GEMM**3))
    return probes


def _spread(xs: list[float], fmt: str) -> str:
    m = fmt.format(statistics.median(xs))
    return m if len(xs) == 1 else f"{m} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"


def measure(case_key: str, sampler: str, dtype: str, grads: int, repeats: int, cache: Path) -> Row:
    case = CASES[case_key]
    steps = max(10, grads // GRADS_PER_STEP[sampler])
    n = DATA_SIZES[case_key]
    rank = "null" if case.true_rank is None else str(case.true_rank)
    cfg = compose_config(
        [
            f"model.widths=[{','.join(map(str, case.widths))}]",
            f"model.true_rank={rank}",
            f"data.n={n}",
            *SAMPLER_OVERRIDES[sampler],
            f"sampler.dtype={dtype}",
            f"sampler.num_chains={CHAINS}",
            "mlflow.enabled=false",
            "plots=false",
            "progress=false",
            f"cache_dir={cache}",
            # the rows, not the Gram matrix: this measures gradient throughput against the GEMM peak
            "posterior.gram_loss=false",
        ]
    )
    target = build_target(cfg, cache)
    # The preset's num_steps stays in the config: MCLMC's tuning budget is a fraction of it (a
    # short budget leaves a step size far too large); only the sampling phase is shortened.
    row = Row(case_key, n, sampler, dtype, steps, case.step_flops(n), llc_true=target.llc_true)
    with runner.precision(cfg):
        _, post = runner.prepare(cfg, target)
        kernel = build_kernel(cfg.sampler, post.n)
        probes = _peak_gemm(dtype)
        for r in range(repeats):
            trace = run_chains(kernel, post, jax.random.key(r), num_chains=CHAINS, num_steps=steps, num_burnin=0, progress=False)
            est = estimate_llc(trace.loss, 0, float(post.nbeta), float(post.L0))
            row.grads_per_s.append(trace.n_fge / trace.sampling_time_s)
            row.ess_per_s.append(est["ess_bulk"] / trace.sampling_time_s)
            row.warmup_s.append(trace.warmup_time_s)
            row.llc.append(est["llc_mean"])
            rates = []
            for fn, a, flops in probes:
                start = time.perf_counter()
                jax.block_until_ready(fn(a))
                rates.append(flops / (time.perf_counter() - start) / 1e9)
            row.bound_gflops.append(max(rates))
    return row


def table(rows: list[Row]) -> str:
    out = [
        "| case | n | sampler | dtype | steps × chains | gradients/s (all chains) | GFLOP/s | peak GEMM GFLOP/s "
        "| % of peak | ESS bulk/s | warm-up s | λ̂ of these short runs (true λ) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gflops = [g * r.grad_flops / 1e9 for g in r.grads_per_s]
        pct = [100 * g / b for g, b in zip(gflops, r.bound_gflops, strict=True)]
        out.append(
            f"| {r.case} | {r.n:,} | {r.sampler} | {r.dtype} | {r.steps}×{CHAINS} | {_spread(r.grads_per_s, '{:,.0f}')} "
            f"| {statistics.median(gflops):.1f} | {statistics.median(r.bound_gflops):.0f} | {_spread(pct, '{:.0f}')}% "
            f"| {_spread(r.ess_per_s, '{:.1f}')} | {statistics.median(r.warmup_s):.1f} "
            f"| {statistics.median(r.llc):.4g} ({r.llc_true:g}) |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="small,large", help=f"from {', '.join(DATA_SIZES)}")
    p.add_argument("--samplers", default="hmc,mclmc", help=f"from {', '.join(SAMPLER_OVERRIDES)}")
    p.add_argument("--dtypes", default="float64", help="float64 (the samplers' default), float32")
    p.add_argument("--grads", type=int, default=320, help="gradients per chain per repeat (HMC: 16 a step)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/lh_speed_cache"))
    args = p.parse_args(argv)
    command = "python scripts/bench_full_batch.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    print(
        f"{command.strip()}\n{platform.node()}: {os.cpu_count()} CPUs, jax {jax.__version__}, "
        f"{jax.device_count()} {jax.default_backend()} device(s), load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rows = []
    for case in args.cases.split(","):
        for sampler in args.samplers.split(","):
            for dtype in args.dtypes.split(","):
                rows.append(measure(case, sampler, dtype, args.grads, args.repeats, args.cache_dir))
                print(f"[{case} {sampler} {dtype}] {statistics.median(rows[-1].grads_per_s):,.0f} gradients/s", flush=True)
    print(f"\n{CHAINS} chains, medians over {args.repeats} repeats (min–max); load now {os.getloadavg()[0]:.1f}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
