"""Memory and time of the vi=flow family alone, as d grows (the claim: linear in d, no d×d).

For each (d, latent_dim k, flow) it builds the family (lambda_hat/vi/flow.py), compiles one ELBO
gradient step of S draws against a standard-normal target (the family's own cost: sample, log q,
reverse pass; no model), and prints a markdown table:

  params     floats in φ ((k + 2)·d + flow parameters)
  temp MB    XLA's temporary buffers of the compiled step (memory_analysis)
  step ms    median wall time of one compiled step over --repeats x --steps calls
  ms/(S·d·k) step time per draw per (d·k), in ns: flat if the cost is O(S·d·k)
  build s    building the family (eager flowjax set-up) + compiling init and the step

The machine may be shared: the 1-minute load average is printed; compare rows side by side.

Usage (from the repository root):
  python scripts/bench_vi_flow.py                           # d = 1e3, 1e4, 1e5; k = 8, 32; rqs
  python scripts/bench_vi_flow.py --d 1000000 --k 8 --flows rqs affine maf
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
from omegaconf import OmegaConf

from lambda_hat.vi import flow


def row(d: int, k: int, kind: str, draws: int, steps: int, repeats: int) -> dict:
    cfg = OmegaConf.create(
        dict(flow=kind, latent_dim=k, layers=4, nn_width=32, nn_depth=1, knots=8, interval=4.0, subspace="random", learn_subspace=True, init_scale=0.5)
    )
    t0 = time.perf_counter()
    fam = flow.build(cfg, d)
    params = jax.block_until_ready(fam.init(jax.random.key(0)))

    def neg_elbo(p, key):
        x, log_q = fam.sample(p, key, draws)
        return jnp.mean(0.5 * jnp.sum(x**2, 1) + log_q)

    @jax.jit
    def step(p, key):  # plain SGD, so the optimiser's state does not enter the timing
        g = jax.grad(neg_elbo)(p, key)
        return jax.tree.map(lambda a, b: a - 1e-3 * b, p, g)

    compiled = step.lower(params, jax.random.key(1)).compile()
    jax.block_until_ready(compiled(params, jax.random.key(1)))
    build_s = time.perf_counter() - t0
    times = []
    for r in range(repeats):
        key = jax.random.key(r)
        t = time.perf_counter()
        p = params
        for _ in range(steps):
            key, sub = jax.random.split(key)
            p = compiled(p, sub)
        jax.block_until_ready(p)
        times.append((time.perf_counter() - t) / steps)
    ms = 1e3 * statistics.median(times)
    mem = compiled.memory_analysis()
    return dict(
        d=d,
        k=k,
        flow=kind,
        params=sum(a.size for a in jax.tree.leaves(params)),
        temp_mb=mem.temp_size_in_bytes / 2**20 if mem is not None else float("nan"),
        step_ms=ms,
        ns_per_sdk=1e6 * ms / (draws * d * k),
        build_s=build_s,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    ap.add_argument("--k", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--flows", nargs="+", default=["rqs"], choices=["affine", "maf", "rqs"])
    ap.add_argument("--draws", type=int, default=4, help="S, draws per step")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    print(f"load average (1 min) {os.getloadavg()[0]:.1f}; S = {a.draws} draws per step; float32; {jax.devices()[0].platform}")
    print("| d | k | flow | params | temp MB | step ms | ns per draw·d·k | build+compile s |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in a.flows:
        for k in a.k:
            for d in a.d:
                r = row(d, k, kind, a.draws, a.steps, a.repeats)
                print(
                    f"| {d:,} | {k} | {kind} | {r['params']:,} | {r['temp_mb']:.1f} | {r['step_ms']:.2f} | {r['ns_per_sdk']:.2f} | {r['build_s']:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
