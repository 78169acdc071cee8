#!/usr/bin/env python3
"""Benchmark: your own network through lambda_hat vs the same network as a built-in target vs
devinterp, side by side in one run (issue "Your own network").

The model: a tanh MLP 64-1024-896-10 (~1M parameters) on n = 1e5 rows (the built-in teacher-student
`model=mlp` target, w* after one Adam step: a speed benchmark, not an estimate). SGLD with a fixed
step, batch 500, 4 chains. Each case runs in its own process (its peak RSS is the process's):

- builtin:      `model=mlp` through the CLI's pipeline (lambda_hat.runner.estimate_target);
- user_jax:     the same weights and data as `lh.from_apply(apply, w*, (x, y), loss="mse")`, through
                `lh.estimate` (the adapter path: a user's loss closure, no built-in knowledge);
- user_torch:   the same MLP as a torch.nn.Sequential through `lh.from_torch` (torchax);
- *_nocv:       the same with posterior.control_variate=false (devinterp's per-draw loss);
- devinterp:    devinterp 2.0.1's SGMCMC.sgld in a minimal torch loop on that torch module (chains one
                after another, as devinterp runs them), with its python given by --devinterp-python
                (a venv holding torch's CPU build and devinterp; they are not lambda_hat dependencies).

Timed: the compiled sampling loop (lambda_hat: Trace.sampling_time_s; devinterp: the loop), median of
--repeats; chain-steps/s = chains x steps / time.

    python scripts/bench_user_target.py --devinterp-python /tmp/dienv/bin/python
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = [64, 1024, 896, 10]
N = 100_000
BATCH = 500
CHAINS = 4
STEP = 1e-7
GAMMA = 100.0


def _overrides(steps: int, control_variate: bool) -> dict:
    return {
        "sampler.num_chains": CHAINS,
        "sampler.num_steps": steps,
        "sampler.num_burnin": steps // 2,
        "sampler.batch_size": BATCH,
        "sampler.target_mala_accept": None,
        "sampler.step_size": STEP,
        "sampler.mala_every": 0,
        "posterior.gamma": GAMMA,
        "posterior.check_minimum": False,
        "posterior.control_variate": control_variate,
        "progress": False,
        "cpu_devices": None,
    }


def _builtin_target():
    import lambda_hat as lh
    from lambda_hat.targets import build_target

    cfg = lh.compose("sgld", {"model.widths": WIDTHS, "data.n": N, "training.max_steps": 1, "training.eval_every": 1}, model="mlp")
    return cfg, build_target(cfg)


def _torch_module(w_star):
    import numpy as np
    import torch

    layers = []
    for i, layer in enumerate(w_star):
        lin = torch.nn.Linear(*layer["w"].shape)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.asarray(layer["w"], np.float32).T.copy()))
            lin.bias.copy_(torch.from_numpy(np.asarray(layer["b"], np.float32)))
        layers.append(lin)
        if i < len(w_star) - 1:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


def run_case(case: str, steps: int, repeats: int) -> dict:
    import lambda_hat as lh
    from lambda_hat.runner import estimate_target
    from lambda_hat.targets import mlp

    cv = not case.endswith("_nocv")
    kind = case.removesuffix("_nocv")
    cfg, target = _builtin_target()
    if kind == "user_jax":
        # a fresh closure, as a user's own apply would be (not the built-in's cached function)
        user = lh.from_apply(lambda p, x: mlp.forward(p, x, "tanh"), target.w_star, (target.x, target.y), loss="mse")
    elif kind == "user_torch":
        user = lh.from_torch(_torch_module(target.w_star), (target.x.astype("float32"), target.y.astype("float32")), loss="mse")
    times = []
    for _ in range(repeats):
        if kind == "builtin":
            run_cfg = lh.compose(
                "sgld", {**_overrides(steps, cv), "model.widths": WIDTHS, "data.n": N, "training.max_steps": 1, "training.eval_every": 1}, model="mlp"
            )
            metrics, _, _ = estimate_target(run_cfg, target)
        else:
            metrics = lh.estimate(user, "sgld", overrides=_overrides(steps, cv)).metrics
        times.append(metrics["sampling_time_s"])
    return {
        "case": case,
        "d": metrics["d"],
        "n": metrics["n"],
        "sampling_s": statistics.median(times),
        "chain_steps_per_s": CHAINS * steps / statistics.median(times),
        "L0": metrics["L0"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_devinterp(steps: int, repeats: int) -> dict:
    """Run by the devinterp python: the built-in target's weights and data come in an npz."""
    import numpy as np
    import torch
    from devinterp.optim import SGMCMC

    z = np.load(sys.argv[sys.argv.index("--arrays") + 1])
    x, y = torch.from_numpy(z["x"]), torch.from_numpy(z["y"])
    w_star = [{"w": z[f"w{i}"], "b": z[f"b{i}"]} for i in range(len(WIDTHS) - 1)]
    nbeta = N / np.log(N)
    times = []
    for rep in range(repeats):
        start = time.perf_counter()
        for chain in range(CHAINS):
            model = _torch_module(w_star)
            opt = SGMCMC.sgld(model.parameters(), lr=STEP, nbeta=nbeta, localization=GAMMA)
            gen = torch.Generator().manual_seed(rep * CHAINS + chain)
            for _ in range(steps):
                idx = torch.randint(N, (BATCH,), generator=gen)
                loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        times.append(time.perf_counter() - start)
    sampling = statistics.median(times)
    return {
        "case": f"devinterp (torch {torch.__version__}, {torch.get_num_threads()} threads)",
        "d": sum(p.numel() for p in model.parameters()),
        "n": N,
        "sampling_s": sampling,
        "chain_steps_per_s": CHAINS * steps / sampling,
        "L0": None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--devinterp-python", default=None)
    ap.add_argument("--case", default=None)
    ap.add_argument("--arrays", default=None)
    args = ap.parse_args()
    if args.case == "devinterp":
        print(json.dumps(run_devinterp(args.steps, args.repeats)))
        return
    if args.case is not None:
        print(json.dumps(run_case(args.case, args.steps, args.repeats)))
        return
    rows = []
    for case in ("builtin", "user_jax", "user_torch", "builtin_nocv", "user_jax_nocv"):
        out = subprocess.run(
            [sys.executable, __file__, "--case", case, "--steps", str(args.steps), "--repeats", str(args.repeats)], capture_output=True, text=True, cwd=ROOT
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {"case": case, "error": out.stderr[-500:]})
        print(rows[-1], file=sys.stderr, flush=True)
    if args.devinterp_python:
        import numpy as np

        sys.path.insert(0, str(ROOT))
        _, target = _builtin_target()
        arrays = Path("/tmp/bench_user_target.npz")
        np.savez(
            arrays,
            x=target.x.astype(np.float32),
            y=target.y.astype(np.float32),
            **{f"{k}{i}": np.asarray(layer[k], np.float32) for i, layer in enumerate(target.w_star) for k in ("w", "b")},
        )
        out = subprocess.run(
            [
                args.devinterp_python,
                __file__,
                "--case",
                "devinterp",
                "--steps",
                str(max(20, args.steps // 4)),
                "--repeats",
                str(args.repeats),
                "--arrays",
                str(arrays),
            ],
            capture_output=True,
            text=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {"case": "devinterp", "error": out.stderr[-800:]})
    print(f"\n{'case':<42} {'d':>9} {'n':>7} {'chain-steps/s':>14} {'sampling s':>11} {'peak RSS MB':>12}")
    for r in rows:
        if "error" in r:
            print(f"{r['case']:<42} error: {r['error']}")
            continue
        print(f"{r['case']:<42} {r['d']:>9,} {r['n']:>7,} {r['chain_steps_per_s']:>14.1f} {r['sampling_s']:>11.2f} {r['peak_rss_mb']:>12.0f}")


if __name__ == "__main__":
    main()
