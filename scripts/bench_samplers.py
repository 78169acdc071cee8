"""Sampler benchmark: every sampler's λ̂ on a small DLN (known λ) and on an MLP teacher–student.

Targets of the issue this script measures (a benchmark that prints markdown tables, not a test):
  DLN  (≤ 1,000 params, n = 1e5, known λ): every sampler's λ̂ within 10% of the true λ (goal
       5%), and all samplers within 3 standard errors of each other.
  MLP  teacher–student (no known λ): HMC, NUTS and MCLMC agree within 3 standard errors
       (SGLD is run for reference and shown, but is not part of that check).
  Both: ESS per full-gradient equivalent (FGE) for each sampler.

Protocol. Every sampler of a table sees the same target (same teacher, data, w*, n, nβ = n/log n,
γ = 1; ``--target-seed``) and runs ``--num-chains`` chains from w* with sampler seed ``--seed``.
Settings are the presets in conf/sampler/*.yaml except the keys this script sets, which are
printed in the "overrides" column of each row:
  SG-MCMC (sgld, rmsprop_sgld, adam_sgld, sghmc, sgnht): preset step size, batch 500,
      ``--sg-steps`` steps (default 1e4, the preset), the last ``--sg-keep`` (10%) kept.
  hmc:   ``--hmc-warmup`` window-adaptation steps, ``--hmc-steps`` draws, ``--hmc-leapfrog``
         leapfrog steps per transition.
  nuts:  ``--nuts-warmup``, ``--nuts-steps``, ``--nuts-max-tree-depth``.
  mclmc: ``--mclmc-steps`` (tuning spends a further ~30% of it).
  ``--set SAMPLER.KEY=VALUE`` (DLN) / ``--mlp-set SAMPLER.KEY=VALUE`` (MLP) add any Hydra
  override, e.g. ``--set sgld.step_size=1e-7``; they are printed in the table as well.
  ``--extra-row SAMPLER:KEY=VALUE[,KEY=VALUE]`` (DLN) / ``--mlp-extra-row`` run a sampler once
  more with other settings, as a row labelled SAMPLER#2, #3, ...; such rows are shown with their
  |z| against the preset rows but are not part of the agreement check.

Columns. λ̂ ± se: pooled mean over healthy chains ± Monte Carlo standard error sd/√ESS of the
per-draw λ̂ (lambda_hat.estimate). |z| max: the largest |λ̂_i − λ̂_j| / √(se_i² + se_j²) over
the other samplers j of the table (in brackets: which); z true: (λ̂ − λ)/se. ESS bulk, ESS/FGE
and ESS/s are the library's (ESS of the loss trace; FGE and seconds include warm-up/tuning and
burn-in). FGE: full-gradient equivalents over all chains, warm-up + sampling (a minibatch
gradient counts batch/n). time: warm-up + sampling seconds (compilation of the sampling scan
not included; it is listed separately). diagnostics: acceptance, divergences, adapted step size
and trajectory, NUTS tree depth (mean / max / share of draws at the cap), MCLMC L and step,
MALA acceptance of the SGLD family (Furman & Lau 2024), kinetic temperature of SGHMC/SGNHT.

Cost. Full-batch samplers (hmc, nuts, mclmc; float64 by default) spend one full-data gradient
per integration step. At n = 1e5 one 4-chain gradient of a ~100-parameter DLN takes ~0.1 s on a
2-core CPU, so the full protocol wants a GPU or patience; ``--quick`` and ``--n`` scale it down.
For scale: with ``--n 10000 --mlp-n 10000`` both tables took ~16 min on a shared 2-core CPU, of
which NUTS (tree depth 8 reached on most draws) took ~5 min (DLN) and ~7 min (MLP).

Usage (from the repository root):
  python scripts/bench_samplers.py                      # issue defaults: DLN n=1e5, MLP n=1e4
  python scripts/bench_samplers.py --quick              # minutes on a laptop CPU
  python scripts/bench_samplers.py --tables dln --n 100000 --samplers sgld,rmsprop_sgld,adam_sgld,sghmc,sgnht
  python scripts/bench_samplers.py --tables dln,mlp --n 10000 --nuts-max-tree-depth 8 --out bench.md
  # the README's n = 1e5 table: SGLD family with steps tuned to MALA acceptance 0.9 (~19 min)
  python scripts/bench_samplers.py --tables dln --n 100000 --nuts-max-tree-depth 6 --nuts-warmup 200 \
      --nuts-steps 200 --set sgld.target_mala_accept=0.9 --set rmsprop_sgld.target_mala_accept=0.9 \
      --set adam_sgld.target_mala_accept=0.9 --extra-row sgld:target_mala_accept=null
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lambda_hat.app import CONF_DIR, compose_config
from lambda_hat.devices import configure_cpu_devices

configure_cpu_devices(None)  # one XLA device per core, as the app; before blackjax starts JAX
from lambda_hat.runner import RunFailed, run, summary_line  # noqa: E402
from lambda_hat.targets.dln import num_params  # noqa: E402

SG_SAMPLERS = ("sgld", "rmsprop_sgld", "adam_sgld", "sghmc", "sgnht")
FULL_BATCH = ("hmc", "nuts", "mclmc")
DEFAULT_SAMPLERS = (*SG_SAMPLERS, *FULL_BATCH)
# Any preset in conf/sampler can be named (e.g. one added after this script); a sampler without a
# budget option below runs with its preset settings plus --num-chains and --set.
ALL_SAMPLERS = tuple(dict.fromkeys([*DEFAULT_SAMPLERS, *sorted(f.stem for f in (CONF_DIR / "sampler").glob("*.yaml"))]))
MLP_AGREEMENT = FULL_BATCH  # the samplers whose agreement the issue asks for on the MLP

# Issue defaults, and the --quick defaults (any option given explicitly wins over both).
DEFAULTS: dict[str, Any] = dict(
    n=100_000, mlp_n=10_000, sg_steps=10_000, hmc_warmup=300, hmc_steps=400, hmc_leapfrog=16,
    nuts_warmup=300, nuts_steps=300, nuts_max_tree_depth=8, mclmc_steps=2000,
)  # fmt: skip
QUICK: dict[str, Any] = dict(
    n=10_000, mlp_n=2_000, sg_steps=2_000, hmc_warmup=100, hmc_steps=100, hmc_leapfrog=16,
    nuts_warmup=100, nuts_steps=100, nuts_max_tree_depth=6, mclmc_steps=500,
)  # fmt: skip


@dataclass
class Row:
    sampler: str  # the preset's name
    overrides: list[str]  # the sampler overrides this benchmark set (beyond the preset)
    m: dict[str, Any] | None  # metrics from lambda_hat.runner.run (None: the run raised)
    extra: dict[str, Any] = field(default_factory=dict)  # diagnostics read from the trace
    error: str | None = None
    time_total_s: float = 0.0
    label: str = ""  # the sampler name, or e.g. "sghmc#2" for an --extra-row variant
    variant: bool = False  # an --extra-row: shown, but not part of the agreement check

    def __post_init__(self) -> None:
        self.label = self.label or self.sampler

    @property
    def ok(self) -> bool:
        return self.m is not None and self.m.get("llc_mean") is not None and self.m.get("llc_sem") is not None

    @property
    def llc(self) -> float:
        return float(self.m["llc_mean"]) if self.ok else math.nan

    @property
    def se(self) -> float:
        return float(self.m["llc_sem"]) if self.ok else math.nan


# ---------------------------------------------------------------- configuration


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.replace("[", "").replace("]", "").split(",") if v.strip()]


def _names(s: str, allowed: tuple[str, ...], flag: str, p: argparse.ArgumentParser) -> list[str]:
    names = [v.strip() for v in s.split(",") if v.strip()]
    bad = [v for v in names if v not in allowed]
    if bad:
        p.error(f"{flag}: unknown {bad}; available: {', '.join(allowed)}")
    return names


def _parse_sets(items: list[str], p: argparse.ArgumentParser, flag: str) -> dict[str, list[str]]:
    """['sgld.step_size=1e-7', ...] -> {'sgld': ['sampler.step_size=1e-7'], ...}."""
    out: dict[str, list[str]] = {}
    for item in items:
        head, sep, value = item.partition("=")
        name, dot, key = head.partition(".")
        if not (sep and dot and key) or name not in ALL_SAMPLERS:
            p.error(f"{flag} {item!r}: expected SAMPLER.KEY=VALUE with SAMPLER in {', '.join(ALL_SAMPLERS)}")
        out.setdefault(name, []).append(f"sampler.{key}={value}")
    return out


def _parse_rows(items: list[str], p: argparse.ArgumentParser, flag: str) -> list[tuple[str, list[str]]]:
    """['sghmc:step_size=2.5e-5,alpha=100', ...] -> [('sghmc', ['sampler.step_size=2.5e-5', ...]), ...]."""
    out = []
    for item in items:
        name, sep, rest = item.partition(":")
        pairs = [kv.strip() for kv in rest.split(",") if kv.strip()]
        if not sep or name not in ALL_SAMPLERS or not pairs or not all("=" in kv for kv in pairs):
            p.error(f"{flag} {item!r}: expected SAMPLER:KEY=VALUE[,KEY=VALUE...] with SAMPLER in {', '.join(ALL_SAMPLERS)}")
        out.append((name, [f"sampler.{kv}" for kv in pairs]))
    return out


def sampler_overrides(name: str, args: argparse.Namespace, extra: dict[str, list[str]]) -> list[str]:
    """The sampler keys this benchmark sets (shown in the table), then the user's --set ones."""
    chains = [f"sampler.num_chains={args.num_chains}"]
    if name in SG_SAMPLERS:
        keep = max(int(round(args.sg_steps * args.sg_keep)), 4)
        ov = [f"sampler.num_steps={args.sg_steps}", f"sampler.num_burnin={args.sg_steps - keep}"]
    elif name == "hmc":
        ov = [
            f"sampler.num_warmup={args.hmc_warmup}",
            f"sampler.num_steps={args.hmc_steps}",
            f"sampler.num_integration_steps={args.hmc_leapfrog}",
        ]
    elif name == "nuts":
        ov = [
            f"sampler.num_warmup={args.nuts_warmup}",
            f"sampler.num_steps={args.nuts_steps}",
            f"sampler.max_tree_depth={args.nuts_max_tree_depth}",
        ]
    elif name == "mclmc":
        ov = [f"sampler.num_steps={args.mclmc_steps}"]
    else:  # a preset this script has no budget option for
        ov = []
    return chains + ov + extra.get(name, [])


def short_overrides(overrides: list[str], preset: dict[str, Any]) -> str:
    """Only the keys that differ from the preset, without the 'sampler.' prefix."""
    parts = []
    for ov in overrides:
        key, _, value = ov.partition("=")
        key = key.removeprefix("sampler.")
        if key in preset and str(preset[key]) == value:
            continue
        try:
            if key in preset and float(preset[key]) == float(value):
                continue
        except (TypeError, ValueError):
            pass
        parts.append(f"{key}={value}")
    return " ".join(parts) if parts else "preset"


def load_preset(name: str) -> dict[str, Any]:
    cfg = compose_config([f"sampler={name}"])
    return dict(cfg.sampler)


# ---------------------------------------------------------------- running


def trace_extras(out_dir: Path, m: dict[str, Any], max_tree_depth: int | None) -> dict[str, Any]:
    """Diagnostics the metrics do not carry: NUTS tree depth max / share at the cap."""
    path = out_dir / "trace.parquet"
    extra: dict[str, Any] = {}
    if not path.exists():
        return extra
    import pandas as pd

    frame = pd.read_parquet(path)
    kept = frame[~frame["burnin"]]
    if "tree_depth" in kept and max_tree_depth is not None:
        depth = kept["tree_depth"].to_numpy()
        depth = depth[np.isfinite(depth)]
        if depth.size:
            extra["tree_depth_max"] = int(depth.max())
            extra["tree_depth_at_cap"] = float(np.mean(depth >= max_tree_depth))
            extra["max_tree_depth"] = max_tree_depth
    if "num_integration_steps" in kept and m.get("sampler") == "nuts":
        steps = kept["num_integration_steps"].to_numpy()
        extra["leapfrog_mean"] = float(np.nanmean(steps))
    return extra


def run_one(
    model_overrides: list[str], name: str, overrides: list[str], args: argparse.Namespace, label: str = ""
) -> Row:
    label = label or name
    work = Path(tempfile.mkdtemp(prefix=f"lh_bench_samplers_{name}_"))
    full = [
        *model_overrides,
        f"sampler={name}",
        *overrides,
        "mlflow.enabled=false",
        "plots=false",
        "progress=false",
        f"seed={args.seed}",
        f"target_seed={args.target_seed}",
        f"cache_dir={args.cache_dir}",
    ]
    if args.xla_cache:
        full.append(f"compilation_cache_dir={args.xla_cache}")
    t0 = time.perf_counter()
    row = Row(name, overrides, None, label=label, variant=label != name)
    try:
        cfg = compose_config(full)
        try:
            row.m = run(cfg, out_dir=work / "out", launch_dir=Path.cwd())
        except RunFailed:
            row.m = json.loads((work / "out" / "metrics.json").read_text())
            row.error = "all chains diverged"
        depth = int(cfg.sampler.max_tree_depth) if name == "nuts" else None
        row.extra = trace_extras(work / "out", row.m, depth)
    except Exception as exc:  # a benchmark row, not a crash: report it and go on
        row.error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        traceback.print_exc()
    finally:
        if args.keep_runs is not None:
            tag = "_".join(o.partition("=")[2] for o in model_overrides if o.split("=")[0] in ("model", "data.n"))
            dest = args.keep_runs / f"{tag}_{label.replace('#', '-')}"
            shutil.rmtree(dest, ignore_errors=True)
            if (work / "out").exists():
                shutil.copytree(work / "out", dest)
        shutil.rmtree(work, ignore_errors=True)
    row.time_total_s = time.perf_counter() - t0
    if row.m is not None and row.m.get("llc_mean") is not None:
        print(f"  [{label}] {summary_line(row.m)} | {row.time_total_s:.1f}s total", flush=True)
    else:
        print(f"  [{label}] FAILED: {row.error}", flush=True)
    return row


# ---------------------------------------------------------------- tables


def fmt(x: Any, spec: str = ".3g", none: str = "–") -> str:
    if x is None:
        return none
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    return format(xf, spec) if math.isfinite(xf) else none


def pair_z(a: Row, b: Row) -> float:
    if not (a.ok and b.ok):
        return math.nan
    den = math.sqrt(a.se**2 + b.se**2)
    return abs(a.llc - b.llc) / den if den > 0 else math.inf


def max_z(row: Row, others: list[Row]) -> tuple[float, str]:
    best, who = math.nan, ""
    for o in others:
        if o is row:
            continue
        z = pair_z(row, o)
        if math.isfinite(z) and not (z <= best):  # first finite, then larger
            best, who = z, o.label
    return best, who


def diagnostics(r: Row) -> str:
    m, e = r.m or {}, r.extra
    out = []
    if "acceptance_rate" in m:
        out.append(f"acc {fmt(m['acceptance_rate'], '.2f')}")
    if "num_divergent" in m:
        out.append(f"div {m['num_divergent']}")
    if r.sampler in ("hmc", "nuts") and m.get("step_size") is not None:
        out.append(f"step {fmt(m['step_size'], '.2e')}")
    if r.sampler == "hmc" and m.get("num_integration_steps") is not None:
        out.append(f"L {fmt(m['num_integration_steps'], '.0f')}")
    if "tree_depth_max" in e:
        out.append(
            f"depth {fmt(m.get('tree_depth'), '.1f')}/{e['tree_depth_max']} (cap {e['max_tree_depth']}:"
            f" {100 * e['tree_depth_at_cap']:.0f}%)"
        )
    if "leapfrog_mean" in e:
        out.append(f"leapfrog/draw {e['leapfrog_mean']:.0f}")
    if m.get("e_bfmi") is not None:
        out.append(f"E-BFMI≥{fmt(m['e_bfmi'], '.2f')}")
    if "mclmc" in r.sampler:
        out.append(f"L {fmt(m.get('L'), '.3g')} step {fmt(m.get('step_size'), '.3g')}")
        if m.get("energy_var_per_dim") is not None:
            out.append(f"Evar/d {fmt(m['energy_var_per_dim'], '.1e')}")
    if m.get("mala_accept") is not None:
        out.append(f"MALA {fmt(m['mala_accept'], '.2f')}")
    if m.get("kinetic_temperature") is not None:
        out.append(f"kinT {fmt(m['kinetic_temperature'], '.2f')}")
    if m.get("status") not in (None, "ok"):
        out.append(f"status {m['status']}")
    if r.error:
        out.append(r.error)
    return ", ".join(out) if out else "–"


def rel_mark(rel: float | None) -> str:
    if rel is None or not math.isfinite(rel):
        return "–"
    a = abs(rel)
    mark = "✓✓" if a <= 0.05 else ("✓" if a <= 0.10 else "✗")
    return f"{100 * rel:+.1f}% {mark}"


def results_table(rows: list[Row], presets: dict[str, dict[str, Any]], known: bool, group: list[Row]) -> str:
    head = ["sampler", "overrides", "λ̂ ± se"]
    if known:
        head += ["true λ", "rel. error", "z true"]
    head += ["|z| max (vs)", "ESS bulk", "ESS/FGE", "ESS/s", "R-hat", "diagnostics", "FGE warm-up + sampling",
             "time s (warm-up + sampling; compile)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m = r.m or {}
        cells = [f"`{r.label}`", short_overrides(r.overrides, presets[r.sampler])]
        cells.append(f"{r.llc:.3f} ± {r.se:.3f}" if r.ok else "n/a")
        if known:
            true = m.get("llc_true")
            cells += [fmt(true, "g"), rel_mark(m.get("llc_rel_error"))]
            cells.append(f"{(r.llc - true) / r.se:+.1f}" if r.ok and true is not None and r.se > 0 else "–")
        # against the other members of the agreement group (a row outside it: against the group)
        z, who = max_z(r, [g for g in group if g is not r])
        cells.append(f"{z:.1f} ({who})" if math.isfinite(z) else "–")
        cells += [fmt(m.get("ess_bulk"), ".0f"), fmt(m.get("ess_per_fge"), ".2e"), fmt(m.get("ess_per_s"), ".3g"),
                  fmt(m.get("r_hat"), ".3f"), diagnostics(r)]  # fmt: skip
        if m:
            cells.append(f"{fmt(m.get('n_fge_warmup'), '.4g')} + {fmt(m.get('n_fge'), '.4g')}")
            cells.append(
                f"{m.get('warmup_time_s', 0):.3g} + {m.get('wall_time_s', 0):.3g}; {m.get('compile_time_s', 0):.2g}"
            )
        else:
            cells += ["–", f"{r.time_total_s:.1f} (failed)"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pairwise_table(rows: list[Row]) -> str:
    names = [r.label for r in rows]
    lines = ["| |z| | " + " | ".join(f"`{n}`" for n in names) + " |", "|" + "---|" * (len(names) + 1)]
    for a in rows:
        cells = ["–" if a is b else fmt(pair_z(a, b), ".1f") for b in rows]
        lines.append(f"| `{a.label}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict_dln(rows: list[Row]) -> list[str]:
    out = []
    for r in rows:
        rel = (r.m or {}).get("llc_rel_error")
        if rel is None:
            out.append(f"- `{r.label}`: no estimate ({r.error})")
        else:
            out.append(
                f"- `{r.label}`: |rel. error| {100 * abs(rel):.1f}% — "
                f"{'meets 5% goal' if abs(rel) <= 0.05 else ('meets 10% target' if abs(rel) <= 0.10 else 'MISSES 10%')}"
            )
    out.append(agreement_line([r for r in rows if not r.variant]))
    return out


def agreement_line(group: list[Row]) -> str:
    bad = []
    for i, a in enumerate(group):
        for b in group[i + 1 :]:
            z = pair_z(a, b)
            if not z <= 3.0:
                bad.append(f"{a.label}–{b.label} {fmt(z, '.1f')}")
    names = ", ".join(r.label for r in group)
    if len(group) < 2:
        return f"- 3-se agreement ({names}): fewer than two samplers"
    return f"- 3-se agreement ({names}): " + ("all pairs ≤ 3 se" if not bad else "FAILS: " + "; ".join(bad))


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tables", default="dln,mlp", help="which tables: dln, mlp (comma-separated)")
    p.add_argument("--quick", action="store_true", help="small n and few steps (explicit options still win)")
    g = p.add_argument_group("DLN table")
    g.add_argument("--widths", default="5,8,6,4", help="DLN widths, input first (default 5,8,6,4: 112 params)")
    g.add_argument("--true-rank", default="3", help="teacher product rank, or 'null' for full rank")
    g.add_argument("--n", type=int, default=None, help=f"data size (default {DEFAULTS['n']}; quick {QUICK['n']})")
    g.add_argument("--samplers", default=",".join(DEFAULT_SAMPLERS), help=f"any of {', '.join(ALL_SAMPLERS)}")
    g.add_argument("--set", action="append", default=[], metavar="SAMPLER.KEY=VALUE", help="extra override (DLN)")
    g.add_argument("--extra-row", action="append", default=[], metavar="SAMPLER:KEY=VALUE[,KEY=VALUE]",
                   help="an additional row: the sampler again with these overrides (DLN; not in the agreement check)")
    g = p.add_argument_group("MLP teacher–student table")
    g.add_argument("--mlp-widths", default="2,8,1", help="student (= teacher) widths (default 2,8,1: 33 params)")
    g.add_argument("--mlp-activation", default="tanh")
    g.add_argument("--mlp-n", type=int, default=None, help=f"data size (default {DEFAULTS['mlp_n']})")
    g.add_argument("--mlp-samplers", default="hmc,nuts,mclmc,sgld")
    g.add_argument("--mlp-set", action="append", default=[], metavar="SAMPLER.KEY=VALUE", help="extra override (MLP)")
    g.add_argument("--mlp-extra-row", action="append", default=[], metavar="SAMPLER:KEY=VALUE[,KEY=VALUE]",
                   help="an additional row for the MLP table")
    g = p.add_argument_group("sampler budgets (defaults: issue protocol; --quick: smaller)")
    g.add_argument("--num-chains", type=int, default=4)
    g.add_argument("--sg-steps", type=int, default=None, help="SG-MCMC steps per chain (default 10000)")
    g.add_argument("--sg-keep", type=float, default=0.1, help="fraction of SG-MCMC steps kept (default 0.1)")
    g.add_argument("--hmc-warmup", type=int, default=None)
    g.add_argument("--hmc-steps", type=int, default=None)
    g.add_argument("--hmc-leapfrog", type=int, default=None, help="leapfrog steps per HMC transition")
    g.add_argument("--nuts-warmup", type=int, default=None)
    g.add_argument("--nuts-steps", type=int, default=None)
    g.add_argument("--nuts-max-tree-depth", type=int, default=None)
    g.add_argument("--mclmc-steps", type=int, default=None)
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0, help="sampler seed")
    g.add_argument("--target-seed", type=int, default=0, help="teacher/data seed (same target for every sampler)")
    g.add_argument("--cache-dir", default="/tmp/lh_samplers_cache", help="target cache")
    g.add_argument("--xla-cache", default=None, help="persistent XLA cache (default <cache-dir>/xla)")
    g.add_argument("--out", type=Path, default=None, help="also write the report (markdown) here")
    g.add_argument("--json", type=Path, default=None, help="also write every run's metrics here")
    g.add_argument("--keep-runs", type=Path, default=None, help="keep each run's output folder under this path")
    args = p.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    for k, v in base.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.table_keys = _names(args.tables, ("dln", "mlp"), "--tables", p)
    args.sampler_list = _names(args.samplers, ALL_SAMPLERS, "--samplers", p)
    args.mlp_sampler_list = _names(args.mlp_samplers, ALL_SAMPLERS, "--mlp-samplers", p)
    args.dln_sets = _parse_sets(args.set, p, "--set")
    args.mlp_sets = _parse_sets(args.mlp_set, p, "--mlp-set")
    args.dln_rows = _parse_rows(args.extra_row, p, "--extra-row")
    args.mlp_rows = _parse_rows(args.mlp_extra_row, p, "--mlp-extra-row")
    args.widths_list = _ints(args.widths)
    args.mlp_widths_list = _ints(args.mlp_widths)
    if not 0 < args.sg_keep < 1:
        p.error("--sg-keep must be in (0, 1)")
    return args


def run_table(model_ov: list[str], names: list[str], sets: dict[str, list[str]],
              extra_rows: list[tuple[str, list[str]]], args: argparse.Namespace) -> list[Row]:
    rows = [run_one(model_ov, s, sampler_overrides(s, args, sets), args) for s in names]
    seen: dict[str, int] = {}
    for s, ov in extra_rows:
        seen[s] = seen.get(s, 1) + 1
        rows.append(run_one(model_ov, s, sampler_overrides(s, args, sets) + ov, args, label=f"{s}#{seen[s]}"))
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python scripts/bench_samplers.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    used = {*args.sampler_list, *args.mlp_sampler_list, *(s for s, _ in args.dln_rows + args.mlp_rows)}
    presets = {name: load_preset(name) for name in used}
    report: list[str] = [f"Reproduce (from the repository root): `{command.strip()}`", ""]
    dump: dict[str, Any] = {"command": command.strip(), "tables": {}}
    started = time.perf_counter()

    if "dln" in args.table_keys:
        w = args.widths_list
        rank = args.true_rank
        model_ov = [
            "model=dln", f"model.widths=[{','.join(map(str, w))}]", f"model.true_rank={rank}", f"data.n={args.n}",
        ]  # fmt: skip
        title = (
            f"DLN widths={w} (d={num_params(w)}), teacher rank {rank}, n={args.n}, x~U[-10,10], noiseless, "
            f"nβ=n/log n, γ=1, {args.num_chains} chains, seed {args.seed}, target seed {args.target_seed}"
        )
        print(f"\n## {title}", flush=True)
        rows = run_table(model_ov, args.sampler_list, args.dln_sets, args.dln_rows, args)
        group = [r for r in rows if not r.variant]
        report += [f"## {title}", "", results_table(rows, presets, True, group), "", "Pairwise |Δλ̂|/√(se₁²+se₂²):", "",
                   pairwise_table(rows), "", "Targets:", *verdict_dln(rows), ""]  # fmt: skip
        dump["tables"]["dln"] = {"title": title, "runs": [dict(sampler=r.label, overrides=r.overrides, error=r.error,
                                 extra=r.extra, metrics=r.m) for r in rows]}  # fmt: skip

    if "mlp" in args.table_keys:
        w = args.mlp_widths_list
        model_ov = [
            "model=mlp", f"model.widths=[{','.join(map(str, w))}]", f"model.activation={args.mlp_activation}",
            f"data.n={args.mlp_n}",
        ]  # fmt: skip
        title = (
            f"MLP teacher–student widths={w} ({args.mlp_activation}, bias; teacher = student architecture), "
            f"n={args.mlp_n}, x~N(0,I), label noise 0.1, w* trained (Adam), {args.num_chains} chains, "
            f"seed {args.seed}, target seed {args.target_seed}"
        )
        print(f"\n## {title}", flush=True)
        rows = run_table(model_ov, args.mlp_sampler_list, args.mlp_sets, args.mlp_rows, args)
        group = [r for r in rows if r.sampler in MLP_AGREEMENT and not r.variant]
        report += [f"## {title}", "", "d = " + fmt((rows[0].m or {}).get("d"), ".0f") + "; |z| max for a sampler "
                   "outside hmc/nuts/mclmc is against those three.", "",
                   results_table(rows, presets, False, group), "", "Pairwise |Δλ̂|/√(se₁²+se₂²):", "",
                   pairwise_table(rows), "", "Target:", agreement_line(group), ""]  # fmt: skip
        dump["tables"]["mlp"] = {"title": title, "runs": [dict(sampler=r.label, overrides=r.overrides, error=r.error,
                                 extra=r.extra, metrics=r.m) for r in rows]}  # fmt: skip

    report.append(f"Total time {time.perf_counter() - started:.0f}s.")
    text = "\n".join(report)
    print("\n" + text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"# Sampler benchmark\n\n{text}\n")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dump, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
