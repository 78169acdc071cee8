"""One LLC estimate, end to end: config -> target -> posterior -> sampler -> estimate -> outputs.

This is the library entry point (no Hydra here): ``run(cfg, out_dir, launch_dir)`` takes a
composed config and returns the metrics it also writes to ``out_dir``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import jax
from omegaconf import DictConfig

from lambda_hat import outputs, tracking
from lambda_hat.config import validate
from lambda_hat.devices import configure_cpu_devices
from lambda_hat.estimate import efficiency, estimate_llc, health_warnings, sampler_diagnostics
from lambda_hat.posterior import make_posterior
from lambda_hat.samplers import build_kernel
from lambda_hat.samplers.driver import run_chains
from lambda_hat.targets import build_target, store

log = logging.getLogger(__name__)


class RunFailed(RuntimeError):
    """Every chain diverged: there is no estimate (metrics.json is still written)."""


def cache_dir_of(cfg: DictConfig) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else store.default_cache_dir()


def configure_compilation_cache(cfg: DictConfig) -> None:
    """Persistent XLA cache, so a repeated run skips most compilation."""
    path = cfg.compilation_cache_dir or str(cache_dir_of(cfg) / "xla")
    jax.config.update("jax_compilation_cache_dir", str(Path(path).expanduser()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def summary_line(m: dict[str, Any]) -> str:
    """The one-line result printed last: λ̂ ± se, the true λ when known, and the time."""
    if m["llc_mean"] is None:
        est = "λ̂ = n/a (all chains diverged)"
    else:
        est = f"λ̂ = {m['llc_mean']:.3f} ± {m['llc_sem']:.3f}"
    truth = ""
    if m["llc_true"] is not None:
        truth = f" | true λ = {m['llc_true']:g}"
        if m.get("llc_rel_error") is not None:
            truth += f" ({100 * m['llc_rel_error']:+.1f}%)"
    # warm-up/tuning (compile included) runs before sampling and can take as long
    warmup = f"warm-up {m['warmup_time_s']:.2f}s + " if m.get("warmup_time_s") else ""
    return (
        f"{est}{truth} | {m['sampler']} on {m['model']} d={m['d']}, {m['chains_ok']}/{m['num_chains']} chains"
        f" | {warmup}sampling {m['wall_time_s']:.2f}s + compile {m['compile_time_s']:.2f}s | status {m['status']}"
        + (f" | {len(m['warnings'])} health warning(s) above" if m.get("warnings") else "")
    )


def run(cfg: DictConfig, out_dir: Path, launch_dir: Path) -> dict[str, Any]:
    """Run one estimate described by cfg, writing its files to out_dir; returns the metrics."""
    validate(cfg)
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    # Importing this module (blackjax) has started JAX already, so this cannot change the device
    # count any more; the app sets it before that import. Here it says once if it differs.
    configure_cpu_devices(cfg.cpu_devices)
    configure_compilation_cache(cfg)
    s = cfg.sampler
    run_name = f"{s.name}-{cfg.model.name}-seed{cfg.seed}"
    with tracking.mlflow_run(cfg, launch_dir, run_name) as tracked:
        t0 = time.perf_counter()
        target = build_target(cfg, cache_dir_of(cfg))
        target_time = time.perf_counter() - t0
        with jax.enable_x64(s.dtype == "float64"):
            posterior = make_posterior(target, cfg.posterior.beta0, cfg.posterior.gamma, s.dtype)
            kernel = build_kernel(s, posterior.n)
            trace = run_chains(
                kernel,
                posterior,
                jax.random.key(cfg.seed, impl=cfg.prng_impl),
                num_chains=s.num_chains,
                num_steps=s.num_steps,
                num_burnin=s.num_burnin,
                thinning=s.thinning,
                progress=cfg.progress,
                label=s.name,
            )
            nbeta, L0 = float(posterior.nbeta), float(posterior.L0)
        est = estimate_llc(trace.loss, trace.num_burnin_draws, nbeta, L0, target.llc_true)
        metrics: dict[str, Any] = {
            **est,
            **efficiency(est, trace),
            **sampler_diagnostics(trace, s.thinning),
            "sampler": s.name,
            "model": cfg.model.name,
            "target_id": target.target_id,
            "seed": int(cfg.seed),
            "dtype": str(posterior.dtype),  # the precision actually used
            "n": posterior.n,
            "d": posterior.d,
            "nbeta": nbeta,
            "gamma": float(cfg.posterior.gamma),
            "beta0": float(cfg.posterior.beta0),
            "L0": L0,
            "num_chains": int(s.num_chains),
            "num_steps": int(s.num_steps),
            "n_fge": trace.n_fge,
            "n_fge_warmup": trace.n_fge_warmup,
            "wall_time_s": trace.sampling_time_s,
            "compile_time_s": trace.compile_time_s,
            "warmup_time_s": trace.warmup_time_s,
            "warmup_compile_time_s": trace.warmup_compile_time_s,
            "chain_devices": trace.devices,
            "target_time_s": target_time,
            "target_cached": bool(target.meta.get("cached")),
            "chain_steps_per_s": s.num_chains * s.num_steps / trace.sampling_time_s,
        }
        if "rank" in target.meta:
            metrics["true_rank"] = int(target.meta["rank"])
        files = [outputs.write_resolved_config(out_dir, cfg)]
        frame = outputs.trace_frame(trace, nbeta, L0)
        files.append(outputs.write_trace(out_dir, frame))
        if cfg.plots:
            files += outputs.write_plots(out_dir, frame, target.llc_true, run_name)
            if "energy" in trace.extras:
                files.append(outputs.write_energy_plot(out_dir, trace.extras["energy"][:, trace.num_burnin_draws :], run_name))
        metrics["warnings"] = health_warnings(metrics)
        for warning in metrics["warnings"]:
            log.warning("health: %s", warning)
        metrics["total_time_s"] = time.perf_counter() - started
        files.append(outputs.write_metrics(out_dir, metrics))
        tags = {
            "sampler": s.name, "model": cfg.model.name, "target_id": target.target_id, "status": metrics["status"],
            "health": "; ".join(metrics["warnings"]) or "ok",
        }  # fmt: skip
        tracking.log_results(tracked, metrics, files, tags)
        if metrics["status"] == "failed":
            raise RunFailed(f"all {s.num_chains} chains produced NaN/inf; see {out_dir / 'metrics.json'}")
    return metrics
