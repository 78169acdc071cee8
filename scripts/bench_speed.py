"""Speed benchmark: SGLD chain-steps per second of lambda_hat on deep linear networks (issue 4).

Protocol (Lau et al. 2023 DLN data, the library's SGLD defaults):
  data      n = 1e5 inputs x ~ U[-10, 10]^H1, noiseless labels y = teacher(x)    (data=uniform)
  sampler   SGLD, step 5e-7, batch 500 drawn with replacement, 4 chains, float32
  posterior n*beta = n / log n, gamma = 1
Cases (``--cases``):
  small  DLN [10, 20, 20, 10]        (800 params)
  large  DLN [100, 200, 200, 100]    (80,000 params, teacher rank 50)
  1m     DLN [500, 1000, 500]        (1,000,000 params; few steps: does it fit and how fast)

What is measured, per case, in a fresh worker process (so that peak RSS and compile time are the
case's own), repeated ``--repeats`` times and reported as the median:
  - lambda_hat: ``run_chains`` on the library's SGLD kernel; compile time and sampling time as the
    driver reports them; chain-steps/s = chains * steps / sampling time.
  - FLOP bound: one SGLD step costs ~2.75x the forward matmul FLOPs (forward, weight gradients,
    and input gradients of every layer but the first; the exact factor is computed from the
    widths). The attainable rate at the step's shapes is measured by a jit-compiled scan of
    exactly those batched matmuls (chains x batch 500) and, when torch is importable, by the same
    matmuls with ``torch.bmm``; the larger rate is the bound.
  - devinterp 2.0.1 (optional; skipped with a note when torch or devinterp is missing, or with
    ``--no-compare``), on the identical problem (same w*, data, step size, n*beta, gamma, batch):
    (a) a minimal torch loop over ``devinterp.optim.SGMCMC.sgld`` (the replacement of the
        deprecated ``devinterp.optim.SGLD``): randint minibatch, forward, backward, optimizer
        step; chains one after another as devinterp runs them. torch runs at 1 thread or at all
        cores, whichever a short probe finds faster (2 threads can be 10x slower on a loaded
        2-core machine), and
    (b) the ``devinterp.slt.llc.llc`` API, timed end to end (init loss, zarr writes included, so
        its rate grows with the number of steps). Its dataset holds row indices in
        ``input_ids``; the loss function looks the rows up.
    devinterp runs fewer steps (its per-step cost does not change along a chain) and its
    repeats of (a) are interleaved with lambda_hat's, so the printed ratios are side by side; (b) runs
    after them (it leaves zarr I/O threads busy, which slowed later lambda_hat repeats by ~15%).
  - Peak RSS (``resource.getrusage``) after the lambda_hat runs, before torch is imported, and
    at the end of the worker (torch/devinterp included).

The machine is shared: the load average is printed with the results; quote medians and ratios.
``--xla-threads 1`` sizes XLA's CPU thread pool to one thread in the workers (torch keeps every
core), which is what proposal "one XLA thread for small models" does inside lambda_hat.

torch and devinterp are not dependencies of lambda_hat. To compare, install the CPU build of
torch (a local wheel here; a plain ``uv pip install torch`` would fetch a CUDA build) and
devinterp, e.g. into a folder outside the project's venv (a ``uv sync`` removes extras):
  uv pip install --python .venv/bin/python --target /tmp/lh_torch_site --no-deps \
      /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl devinterp==2.0.1 <its deps>
  PYTHONPATH=/tmp/lh_torch_site python scripts/bench_speed.py

Usage (from the repository root):
  python scripts/bench_speed.py                                # small, large; devinterp if present
  python scripts/bench_speed.py --cases small,large,1m --repeats 5
  python scripts/bench_speed.py --cases small --steps 2000 --no-compare
  python scripts/bench_speed.py --cases small --xla-threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

CHAINS = 4
BATCH = 500
N_DATA = 100_000
KEEP_FRACTION = 0.1  # the last 10% of the steps are "kept" (burn-in has no effect on speed)
RESULT_TAG = "BENCH_SPEED_RESULT "
# devinterp's per-chain-step cost measured earlier on this kind of machine (2 cores), used for
# the targets when devinterp cannot be run here: minimal torch loop over SGMCMC.sgld.
REFERENCE_TORCH_LOOP = {"small": 1_650.0, "large": 380.0}


@dataclass(frozen=True)
class Case:
    """One benchmark problem and how long to run it."""

    name: str
    widths: tuple[int, ...]
    true_rank: int | None
    steps: int  # lambda_hat SGLD steps per chain, per repeat
    compare_steps: int  # devinterp steps per chain, per repeat

    @property
    def params(self) -> int:
        return sum(a * b for a, b in zip(self.widths[:-1], self.widths[1:], strict=True))

    def step_flops(self, batch: int) -> float:
        """Matmul FLOPs of one SGLD step, one chain: forward, weight grads, input grads but layer 1's."""
        layers = [2.0 * batch * a * b for a, b in zip(self.widths[:-1], self.widths[1:], strict=True)]
        return 2 * sum(layers) + sum(layers[1:])


CASES: dict[str, Case] = {
    "small": Case("small", (10, 20, 20, 10), None, steps=10_000, compare_steps=1_000),
    "large": Case("large", (100, 200, 200, 100), 50, steps=1_000, compare_steps=200),
    "1m": Case("1m", (500, 1000, 500), None, steps=40, compare_steps=10),
}


@dataclass
class CaseResult:
    """Everything one worker measured; lists hold one entry per repeat."""

    case: str
    widths: list[int]
    d: int
    chains: int
    steps: int
    compare_steps: int
    step_flops: float  # per chain-step
    target_time_s: float
    compile_s: list[float] = field(default_factory=list)
    sampling_s: list[float] = field(default_factory=list)
    finite_fraction: float = math.nan  # of the recorded losses (a sanity check, not a speed figure)
    bound_jax_gflops: list[float] = field(default_factory=list)
    bound_torch_gflops: list[float] = field(default_factory=list)
    rss_lambda_hat_mb: float = math.nan
    rss_end_mb: float = math.nan
    compare_note: str = ""
    loop_s: list[float] = field(default_factory=list)  # devinterp minimal loop, whole repeat
    loop_threads: list[int] = field(default_factory=list)  # torch threads of the faster loop run
    llc_s: list[float] = field(default_factory=list)  # devinterp llc(), whole call
    llc_zarr_mb: float = math.nan
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def rates(self) -> list[float]:
        return [self.chains * self.steps / s for s in self.sampling_s]

    @property
    def loop_rates(self) -> list[float]:
        return [self.chains * self.compare_steps / s for s in self.loop_s]

    @property
    def llc_rates(self) -> list[float]:
        return [self.chains * self.compare_steps / s for s in self.llc_s]

    @property
    def bound_gflops(self) -> list[float]:
        """Per repeat, the better of the JAX and torch matmul rates at the step's shapes."""
        if not self.bound_torch_gflops:
            return self.bound_jax_gflops
        return [max(a, b) for a, b in zip(self.bound_jax_gflops, self.bound_torch_gflops, strict=True)]


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else math.nan


# ------------------------------------------------------------------------------------- worker


def _compose(case: Case, cache_dir: Path) -> Any:
    from hydra import compose, initialize_config_dir

    # importing lambda_hat.app registers the config schemas
    from lambda_hat.composition import CONF_DIR

    rank = "null" if case.true_rank is None else str(case.true_rank)
    overrides = [
        "model=dln",
        f"model.widths=[{','.join(map(str, case.widths))}]",
        f"model.true_rank={rank}",
        "data=uniform",
        f"data.n={N_DATA}",
        "sampler=sgld_lau",  # the fixed step devinterp runs
        f"sampler.batch_size={BATCH}",
        f"sampler.num_chains={CHAINS}",
        "sampler.dtype=float32",
        "mlflow.enabled=false",
        "plots=false",
        "progress=false",
        f"cache_dir={cache_dir}",
    ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def _jax_matmul_bound(case: Case, steps: int, split: bool) -> tuple[Any, tuple[Any, ...]]:
    """A compiled scan of `steps` passes of one SGLD step's matmuls, and its arguments.

    split: chains spread over the devices as lambda_hat spreads them (one per CPU core).
    """
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec

    from lambda_hat.devices import CHAIN_AXIS, chain_mesh

    def one_pass(ws: list[jax.Array], x: jax.Array) -> list[jax.Array]:
        acts = [x]
        for w in ws:
            acts.append(jnp.einsum("cbi,cio->cbo", acts[-1], w))
        g, grads = acts[-1], []
        for i in range(len(ws) - 1, -1, -1):
            grads.append(jnp.einsum("cbi,cbo->cio", acts[i], g))
            if i > 0:
                g = jnp.einsum("cbo,cio->cbi", g, ws[i])
        # A tiny update makes every pass depend on the previous one (nothing can be hoisted).
        return [w - 1e-12 * gw for w, gw in zip(ws, grads[::-1], strict=True)]

    def run(ws: list[jax.Array], x: jax.Array) -> list[jax.Array]:
        return jax.lax.scan(lambda ws, _: (one_pass(ws, x), None), ws, None, length=steps)[0]

    key = jax.random.key(0)
    ws = [jax.random.normal(key, (CHAINS, a, b), jnp.float32) / math.sqrt(a) for a, b in zip(case.widths[:-1], case.widths[1:], strict=True)]
    x = jax.random.normal(key, (CHAINS, BATCH, case.widths[0]), jnp.float32)
    mesh = chain_mesh(CHAINS) if split else None
    if mesh is not None:
        spec = PartitionSpec(CHAIN_AXIS)
        run = jax.shard_map(run, mesh=mesh, in_specs=(spec, spec), out_specs=spec)
    fn = jax.jit(run).lower(ws, x).compile()
    jax.block_until_ready(fn(ws, x))  # warm
    return fn, (ws, x)


def _torch_matmul_bound(case: Case, steps: int) -> float:
    """Seconds for `steps` passes of the same matmuls with torch.bmm (no autograd)."""
    import torch

    shapes = zip(case.widths[:-1], case.widths[1:], strict=True)
    ws = [torch.randn(CHAINS, a, b) / math.sqrt(a) for a, b in shapes]
    x = torch.randn(CHAINS, BATCH, case.widths[0])

    def one_pass() -> None:
        acts = [x]
        for w in ws:
            acts.append(torch.bmm(acts[-1], w))
        g = acts[-1]
        for i in range(len(ws) - 1, -1, -1):
            ws[i].sub_(1e-12 * torch.bmm(acts[i].transpose(1, 2), g))
            if i > 0:
                g = torch.bmm(g, ws[i].transpose(1, 2))

    with torch.no_grad():
        one_pass()
        start = time.perf_counter()
        for _ in range(steps):
            one_pass()
        return time.perf_counter() - start


class _DevinterpProblem:
    """The case's problem in torch: w*, data and the SGLD hyper-parameters lambda_hat used."""

    def __init__(self, target: Any, nbeta: float, eps: float, gamma: float) -> None:
        import numpy as np
        import torch

        self.torch = torch
        self.x = torch.from_numpy(np.asarray(target.x, np.float32))
        self.y = torch.from_numpy(np.asarray(target.y, np.float32))
        self.w_star = [np.asarray(w, np.float32) for w in target.w_star]
        self.nbeta, self.eps, self.gamma = nbeta, eps, gamma
        self.n = int(self.x.shape[0])

    def model(self) -> Any:
        """nn.Sequential of bias-free Linear layers holding w* (torch stores W transposed)."""
        nn = self.torch.nn
        layers = []
        for w in self.w_star:
            lin = nn.Linear(w.shape[0], w.shape[1], bias=False)
            with self.torch.no_grad():
                lin.weight.copy_(self.torch.from_numpy(w.T.copy()))
            layers.append(lin)
        return nn.Sequential(*layers)

    def minimal_loop(self, steps: int, seed: int) -> tuple[float, float]:
        """Seconds for CHAINS x steps of a bare SGMCMC.sgld loop; fraction of finite losses."""
        from devinterp.optim import SGMCMC

        torch = self.torch
        mse = torch.nn.functional.mse_loss
        finite, base = 0, self.model()
        start = time.perf_counter()
        for chain in range(CHAINS):
            model = copy.deepcopy(base)
            opt = SGMCMC.sgld(model.parameters(), lr=self.eps, nbeta=self.nbeta, localization=self.gamma)
            gen = torch.Generator().manual_seed(seed * CHAINS + chain)
            losses = torch.empty(steps)
            for s in range(steps):
                idx = torch.randint(self.n, (BATCH,), generator=gen)
                loss = mse(model(self.x[idx]), self.y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses[s] = loss.detach()
            finite += int(torch.isfinite(losses).sum())
        return time.perf_counter() - start, finite / (CHAINS * steps)

    def llc_api(self, steps: int, seed: int, out: Path) -> tuple[float, float]:
        """Seconds for one devinterp ``llc()`` call of CHAINS x steps; zarr size in MiB."""
        import numpy as np
        from datasets import Dataset
        from devinterp.slt.llc import llc

        rows = np.stack([np.arange(self.n), np.zeros(self.n, np.int64)], axis=1)
        dataset = Dataset.from_dict({"input_ids": rows}).with_format("torch")
        x, y = self.x, self.y

        def loss_fn(model: Any, input_ids: Any) -> Any:  # (batch, seq-1) = per-sample MSE
            i = input_ids[:, 0]
            return ((model(x[i]) - y[i]) ** 2).mean(dim=1, keepdim=True)

        kept = max(1, int(round(steps * KEEP_FRACTION)))
        path = out / f"llc-{seed}.zarr"
        model = self.model()
        start = time.perf_counter()
        llc(
            model,
            dataset,
            {},
            lr=self.eps,
            n_beta=self.nbeta,
            localization=self.gamma,
            num_chains=CHAINS,
            num_draws=kept,
            num_burnin_steps=steps - kept,
            batch_size=BATCH,
            init_seed=seed,
            device="cpu",
            output_path=str(path),
            loss_fn=loss_fn,
        )
        elapsed = time.perf_counter() - start
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
        return elapsed, size


def _fastest_torch_threads(problem: _DevinterpProblem, steps: int) -> int:
    """1 or all cores, whichever runs a short devinterp loop faster (best of two tries each)."""
    import torch

    timings: dict[int, float] = {}
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        timings[threads] = min(problem.minimal_loop(steps, seed=0)[0] for _ in range(2))
    return min(timings, key=timings.__getitem__)


def _devinterp_available() -> str:
    """Empty string if torch, devinterp and datasets can be found, else why they cannot be used.

    Only looks the packages up (no import), so that the RSS measured before the comparison
    does not include torch.
    """
    from importlib.util import find_spec

    missing = [m for m in ("torch", "devinterp", "datasets") if find_spec(m) is None]
    if missing:
        return f"devinterp comparison skipped: {', '.join(missing)} not importable"
    return ""


def run_case(case: Case, args: argparse.Namespace) -> CaseResult:
    """Measure one case (call in a fresh process: peak RSS and compile time are the case's own)."""
    import jax
    import numpy as np
    from lambda_hat import runner
    from lambda_hat.samplers import build_kernel
    from lambda_hat.samplers.driver import run_chains
    from lambda_hat.targets import build_target

    cache_dir = Path(args.cache_dir)
    cfg = _compose(case, cache_dir)
    t0 = time.perf_counter()
    target = build_target(cfg, cache_dir)
    res = CaseResult(
        case=case.name,
        widths=list(case.widths),
        d=case.params,
        chains=CHAINS,
        steps=case.steps,
        compare_steps=case.compare_steps,
        step_flops=case.step_flops(BATCH),
        target_time_s=time.perf_counter() - t0,
        versions={
            "jax": jax.__version__,
            "python": platform.python_version(),
            "lambda_hat": str(Path(sys.modules["lambda_hat"].__file__ or "?").parent),
            "xla_threads": str(args.xla_threads or "all cores"),
            "jax_devices": str(jax.device_count()),
        },
    )
    # The PRNG the app would use (config key `prng_impl` where the library has it), or --prng-impl.
    prng_impl = args.prng_impl or cfg.get("prng_impl") or "threefry2x32"
    res.versions["prng_impl"] = prng_impl
    _, posterior = runner.prepare(cfg, target)  # the SGLD preset's float32
    kernel = build_kernel(cfg.sampler, posterior.n)
    bound_steps = max(5, case.steps // 4)
    # The bound is the faster of all chains on one device and chains split like lambda_hat's.
    bounds = [_jax_matmul_bound(case, bound_steps, split) for split in (False, True)]
    pass_flops = case.step_flops(BATCH) * CHAINS * bound_steps

    skip = "devinterp comparison skipped: --no-compare" if args.no_compare else _devinterp_available()
    res.compare_note = skip
    problem: _DevinterpProblem | None = None
    finite = []
    with tempfile.TemporaryDirectory(prefix="lh_bench_speed_") as tmp:
        for r in range(args.repeats):
            trace = run_chains(
                kernel,
                posterior,
                jax.random.key(r, impl=prng_impl),
                num_chains=CHAINS,
                num_steps=case.steps,
                num_burnin=case.steps - max(1, int(case.steps * KEEP_FRACTION)),
                progress=False,
            )
            res.compile_s.append(trace.compile_time_s)
            res.sampling_s.append(trace.sampling_time_s)
            finite.append(float(np.isfinite(trace.loss).mean()))
            if r == 0:
                res.rss_lambda_hat_mb = _rss_mb()  # before torch is ever imported
            seconds = []
            for bound_fn, bound_args in bounds:
                start = time.perf_counter()
                jax.block_until_ready(bound_fn(*bound_args))
                seconds.append(time.perf_counter() - start)
            res.bound_jax_gflops.append(pass_flops / min(seconds) / 1e9)
            if skip:
                continue
            try:
                import torch
                from devinterp.optim import SGMCMC  # noqa: F401
                from devinterp.slt.llc import llc  # noqa: F401
            except Exception as e:  # a broken install: report it, keep the lambda_hat figures
                skip = res.compare_note = f"devinterp comparison skipped: {type(e).__name__}: {e}"
                continue
            if problem is None:
                res.versions["torch"] = torch.__version__
                res.versions["devinterp"] = _dist_version("devinterp")
                nbeta, gamma = float(posterior.nbeta), float(posterior.gamma)
                problem = _DevinterpProblem(target, nbeta, float(cfg.sampler.step_size), gamma)
            # torch threads: a short probe picks 1 or all cores (on a loaded 2-core machine two
            # OpenMP threads can be 10x slower than one on the small network); the faster counts.
            threads = _fastest_torch_threads(problem, max(10, case.compare_steps // 20))
            torch.set_num_threads(os.cpu_count() or 1)
            res.bound_torch_gflops.append(pass_flops / _torch_matmul_bound(case, bound_steps) / 1e9)
            torch.set_num_threads(threads)
            seconds, loop_finite = problem.minimal_loop(case.compare_steps, seed=r)
            if loop_finite < 1:
                res.compare_note = f"devinterp loop: {100 * (1 - loop_finite):.1f}% non-finite losses"
            res.loop_s.append(seconds)
            res.loop_threads.append(threads)
        # devinterp's llc() leaves work running after it returns (zarr's I/O threads): measured
        # here, later lambda_hat repeats ran 15% slower. So its repeats come after all others.
        if problem is not None and not skip and not args.no_llc:
            for r in range(args.repeats):
                seconds, res.llc_zarr_mb = problem.llc_api(case.compare_steps, r, Path(tmp))
                res.llc_s.append(seconds)
    res.finite_fraction = min(finite)
    res.rss_end_mb = _rss_mb()
    return res


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def limit_xla_threads(threads: int) -> None:
    """Create JAX's CPU client with an intra-op pool of `threads` threads; call before any JAX work.

    XLA sizes the pool from the process's CPU affinity when the client is created, so the mask is
    narrowed for that moment only and restored afterwards (torch and numpy keep every core).
    """
    import jax

    full = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(full)[:threads])
    try:
        jax.devices()  # creates the CPU client
    finally:
        os.sched_setaffinity(0, full)


def worker_main(args: argparse.Namespace) -> None:
    """Entry point of the per-case worker: prints one tagged JSON line with its CaseResult."""
    warnings.filterwarnings("ignore")  # devinterp warns on every optimizer it builds
    from lambda_hat.devices import configure_cpu_devices

    configure_cpu_devices(args.cpu_devices)  # as the app does, before any JAX work
    if args.xla_threads is not None:
        limit_xla_threads(args.xla_threads)
    case = CASES[args.worker]
    if args.steps is not None:
        case = replace(case, steps=args.steps)
    if args.compare_steps is not None:
        case = replace(case, compare_steps=args.compare_steps)
    res = run_case(case, args)
    print(RESULT_TAG + json.dumps(asdict(res)), flush=True)


# ------------------------------------------------------------------------------------- parent


def _spawn(case: str, args: argparse.Namespace) -> CaseResult:
    """Run one case in a fresh interpreter and parse its result line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", case]
    cmd += ["--repeats", str(args.repeats), "--cache-dir", args.cache_dir]
    if args.steps is not None:
        cmd += ["--steps", str(args.steps)]
    if args.compare_steps is not None:
        cmd += ["--compare-steps", str(args.compare_steps)]
    cmd += ["--no-compare"] if args.no_compare else []
    cmd += ["--no-llc"] if args.no_llc else []
    cmd += ["--xla-threads", str(args.xla_threads)] if args.xla_threads is not None else []
    cmd += ["--prng-impl", args.prng_impl] if args.prng_impl else []
    cmd += ["--cpu-devices", str(args.cpu_devices)] if args.cpu_devices is not None else []
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"case {case!r} failed (exit {proc.returncode})")
    data = json.loads(lines[-1][len(RESULT_TAG) :])
    return CaseResult(**data)


def _spread(xs: list[float], fmt: str = "{:,.0f}") -> str:
    """Median with the min-max range over repeats."""
    if not xs:
        return "n/a"
    m = fmt.format(_median(xs))
    return m if len(xs) == 1 else f"{m} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"


def _ratios(a: list[float], b: list[float]) -> list[float]:
    """Per-repeat ratios a_i / b_i (measured side by side in one worker)."""
    return [x / y for x, y in zip(a, b, strict=False)]  # b may stop early if devinterp broke


def speed_table(results: list[CaseResult]) -> str:
    head = (
        "| case | widths | d | chains×steps | compile s | chain-steps/s | µs/chain-step "
        "| GFLOP/s | bound GFLOP/s (jax / torch) | % of bound | peak RSS MiB |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for r in results:
        rate = _median(r.rates)
        pct = _ratios([x * r.step_flops / 1e9 for x in r.rates], r.bound_gflops)
        torch_bound = f"{_median(r.bound_torch_gflops):.0f}" if r.bound_torch_gflops else "–"
        rows.append(
            f"| {r.case} | {r.widths} | {r.d:,} | {r.chains}×{r.steps:,} | {_median(r.compile_s):.2f} "
            f"| {_spread(r.rates)} | {1e6 / rate:,.1f} | {rate * r.step_flops / 1e9:.1f} "
            f"| {_median(r.bound_jax_gflops):.0f} / {torch_bound} | {_spread([100 * p for p in pct], '{:.0f}')}% "
            f"| {r.rss_lambda_hat_mb:,.0f} |"
        )
    return "\n".join(rows)


def compare_table(results: list[CaseResult]) -> str:
    head = (
        "| case | devinterp steps/chain | minimal SGMCMC.sgld loop chain-steps/s (torch threads) | lambda_hat ÷ loop "
        "| llc() chain-steps/s | lambda_hat ÷ llc() | llc() zarr MiB | peak RSS incl. torch MiB |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for r in results:
        if not r.loop_s:
            rows.append(f"| {r.case} | – | {r.compare_note} | | | | | |")
            continue
        llc_ratio = _spread(_ratios(r.rates, r.llc_rates), "{:.1f}") + "×" if r.llc_s else "–"
        rows.append(
            f"| {r.case} | {r.compare_steps:,} | {_spread(r.loop_rates)} ({'/'.join(map(str, r.loop_threads))}) "
            f"| {_spread(_ratios(r.rates, r.loop_rates), '{:.1f}')}× "
            f"| {_spread(r.llc_rates) if r.llc_s else '–'} | {llc_ratio} "
            f"| {f'{r.llc_zarr_mb:,.1f}' if r.llc_s else '–'} | {r.rss_end_mb:,.0f} |"
        )
    return "\n".join(rows)


def _met(ok: bool) -> str:
    return "yes" if ok else "no"


def target_table(results: list[CaseResult]) -> str:
    """Issue 4's targets: small >= 10x devinterp's minimal loop; large >= 70% of bound and 1.6x."""
    rows = ["| case | target | measured | met |", "|---|---|---|---|"]
    for r in results:
        rate = _median(r.rates)
        if r.loop_s:
            loop, src = _median(_ratios(r.rates, r.loop_rates)), "measured side by side"
        elif r.case in REFERENCE_TORCH_LOOP:
            ref = REFERENCE_TORCH_LOOP[r.case]
            loop, src = rate / ref, f"vs reference {ref:,.0f}/s"
        else:
            loop, src = math.nan, ""
        if r.case == "small":
            rows.append(f"| small | ≥ 10× devinterp minimal loop | {loop:.1f}× ({src}) | {_met(loop >= 10)} |")
        elif r.case == "large":
            pct = 100 * _median(_ratios([x * r.step_flops / 1e9 for x in r.rates], r.bound_gflops))
            rows.append(f"| large | ≥ 70% of FLOP bound | {pct:.0f}% | {_met(pct >= 70)} |")
            rows.append(f"| large | ≥ 1.6× devinterp minimal loop | {loop:.1f}× ({src}) | {_met(loop >= 1.6)} |")
        elif r.case == "1m":
            got = f"{rate:,.0f} chain-steps/s, {r.rss_lambda_hat_mb:,.0f} MiB peak RSS"
            rows.append(f"| 1m | runs on this machine | {got} | {_met(r.finite_fraction == 1.0)} |")
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="small,large", help=f"comma-separated, from {', '.join(CASES)}")
    p.add_argument("--steps", type=int, default=None, help="lambda_hat steps per chain (default: per case)")
    p.add_argument("--compare-steps", type=int, default=None, help="devinterp steps per chain (default: per case)")
    p.add_argument("--repeats", type=int, default=3, help="repeats per case; medians are reported")
    p.add_argument("--no-compare", action="store_true", help="skip torch/devinterp even if installed")
    p.add_argument("--no-llc", action="store_true", help="skip devinterp's llc() API (keep the minimal loop)")
    p.add_argument("--cache-dir", default="/tmp/lh_speed_cache", help="lambda_hat target cache")
    p.add_argument(
        "--xla-threads",
        type=int,
        default=None,
        help="size of XLA's CPU thread pool in the workers (default: all cores); torch is unaffected",
    )
    p.add_argument(
        "--prng-impl",
        default=None,
        help="JAX PRNG of the sampling key (default: the config's prng_impl, else threefry2x32)",
    )
    p.add_argument(
        "--cpu-devices",
        type=int,
        default=None,
        help="XLA CPU devices the chains are split over (default: one per usable core, as the app)",
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one case
    args = p.parse_args(argv)
    args.case_keys = [k.strip() for k in args.cases.split(",") if k.strip()]
    unknown = [k for k in args.case_keys if k not in CASES]
    if unknown:
        p.error(f"--cases: unknown {unknown}; available: {', '.join(CASES)}")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.xla_threads is not None and not 1 <= args.xla_threads <= len(os.sched_getaffinity(0)):
        p.error(f"--xla-threads must be in 1..{len(os.sched_getaffinity(0))}")
    for name in ("steps", "compare_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 10:
            p.error(f"--{name.replace('_', '-')} must be >= 10")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        worker_main(args)
        return
    command = "python scripts/bench_speed.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    print(f"{command.strip()}\n{platform.node()}: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
    results = []
    for key in args.case_keys:
        r = _spawn(key, args)
        results.append(r)
        print(
            f"[{key}] {_median(r.rates):,.0f} chain-steps/s, compile {_median(r.compile_s):.2f}s, "
            f"target {r.target_time_s:.1f}s, finite losses {100 * r.finite_fraction:.0f}%, "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    versions = results[0].versions if results else {}
    print(f"\nVersions: {', '.join(f'{k} {v}' for k, v in versions.items())}; load now {os.getloadavg()[0]:.1f}")
    print(f"SGLD, batch {BATCH}, {CHAINS} chains, n = {N_DATA:,}, float32; medians over {args.repeats} repeats (min–max in brackets)\n")
    print(speed_table(results))
    if not args.no_compare:
        print()
        print(compare_table(results))
    print()
    print(target_table(results))


if __name__ == "__main__":
    main()
