"""One LLC estimate, end to end: config -> target -> posterior -> sampler -> estimate -> outputs.

This is the library entry point (no Hydra here): ``prepare(cfg)`` builds the target and the
posterior an estimator runs on (scripts and tests use it too), and ``run(cfg, out_dir,
launch_dir)`` takes a composed config and returns the metrics it also writes to ``out_dir``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
from omegaconf import DictConfig

from lambda_hat import outputs, registry
from lambda_hat.cost_estimate import log_cost_estimate
from lambda_hat.budget import apply_budget
from lambda_hat.config import burnin_steps, work_cap
from lambda_hat.devices import configure_cpu_devices, device_record, device_warning
from lambda_hat.llc import efficiency, estimate_llc, health_warnings, interval_metrics, sampler_diagnostics, variational_diagnostics
from lambda_hat.health import minimum_check, trace_warnings
from lambda_hat.posterior import Posterior, make_posterior
from lambda_hat.samplers import build_kernel
from lambda_hat.samplers.driver import Converge, run_chains
from lambda_hat.targets import Target, TargetError, build_target, store
from lambda_hat.tracking.store import check_store, resolve_tracking_uri
from lambda_hat.tracking.tracked import log_results, mlflow_run
from lambda_hat.summary import target_name
from lambda_hat.trace import Trace

log = logging.getLogger(__name__)

# What each time in metrics.json covers (written beside them, so a reader need not guess).
TIMING_NOTES = {
    "sampling_time_s": "the compiled sampling loop (burn-in included), nothing else running",
    "warmup_time_s": "the compiled warm-up/tuning loop, nothing else running",
    "compile_time_s": "compiling the sampling loop (partly from the persistent XLA cache)",
    "warmup_compile_time_s": "compiling the warm-up loop",
    "target_time_s": "building or loading the target (overlaps MLflow set-up)",
    "total_time_s": "the whole job up to writing metrics.json",
}


# Estimates a batched grid (lambda_hat.grid) computed for jobs that Hydra then runs one by one:
# run() writes such a job's files and MLflow run from its estimate instead of sampling again.
_COMPUTED: dict[str, tuple[dict[str, Any], Trace, Any, Target]] = {}


def provide_estimate(out_dir: Path, metrics: dict[str, Any], trace: Trace, frame: Any, target: Target) -> None:
    """The estimate (estimate_target's three results, and its target) that run() will use for the
    job writing to out_dir, once."""
    _COMPUTED[str(Path(out_dir).resolve())] = (metrics, trace, frame, target)


class RunFailed(RuntimeError):
    """Every chain diverged: there is no estimate (metrics.json is still written)."""


def cache_dir_of(cfg: DictConfig) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else store.default_cache_dir()


def configure_compilation_cache(cfg: DictConfig) -> None:
    """Persistent XLA cache, so a repeated run skips most compilation."""
    path = Path(cfg.compilation_cache_dir or str(cache_dir_of(cfg) / "xla")).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        # A folder that cannot exist (cache_dir under a file, no permission): JAX would keep that
        # setting for the rest of the process and warn at every later compile; the cache_dir error
        # itself is reported, in one line, where the target cache is opened.
        return
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


@contextlib.contextmanager
def precision(cfg: DictConfig) -> Iterator[None]:
    """The sampler's precision for the block (x64 never leaks into the next job of a process)."""
    with jax.enable_x64(cfg.sampler.dtype == "float64"):
        yield


def nbeta_sample_size(cfg: DictConfig, target: Target) -> int:
    """The n in nβ = n·beta0/log n: the target's n, or the minibatch size (posterior.nbeta_from)."""
    if cfg.posterior.nbeta_from == "batch_size":
        return int(cfg.sampler.batch_size)
    return target.sample_size


def check_fits(cfg: DictConfig, target: Target) -> None:
    """TargetError when the sampler's minibatch is larger than the target's data."""
    batch = cfg.sampler.get("batch_size")
    if batch is not None and batch > target.n_rows:
        raise TargetError("sampler.batch_size", f"{batch} exceeds the data's {target.n_rows} rows")


def check_user_target(cfg: DictConfig) -> None:
    """Build the user target cfg names and its posterior once, before anything is written, so a
    bad factory, checkpoint, data or loss is one line (TargetError); the run reuses the build."""
    configure_cpu_devices(cfg.cpu_devices)
    target = build_target(cfg, cache_dir_of(cfg))
    check_fits(cfg, target)
    with precision(cfg):
        prepare(cfg, target)


def sampling_target(cfg: DictConfig, target: Target) -> tuple[Target, Any]:
    """(the target sampled on, the dataset λ̂'s loss is measured on or None): a data-refined λ̂
    (posterior.measure_on) measures on a subset, and samples there too with sample_on=subset."""
    p = cfg.posterior
    if p.measure_on is None:
        return target, None
    subset = target.subset(str(p.measure_on))
    if p.sample_on == "subset":  # sample on the subset too: it is the data, n its rows
        return dataclasses.replace(target, data=subset, n=None, product=target.product), None
    return target, subset


def prepare(cfg: DictConfig, target: Target | None = None) -> tuple[Target, Posterior]:
    """The target (built or cached) and the posterior an estimator samples; call inside precision(cfg)."""
    if target is None:
        target = build_target(cfg, cache_dir_of(cfg))
    target.check_data()
    p = cfg.posterior
    target, measure = sampling_target(cfg, target)
    check_fits(cfg, target)
    posterior = make_posterior(
        target,
        p.beta0,
        p.gamma,
        cfg.sampler.dtype,
        gram_loss=bool(p.gram_loss),
        eval_batch_size=int(p.eval_batch_size),
        nbeta_n=nbeta_sample_size(cfg, target),
        control_variate=bool(p.control_variate),
        restrict=None if p.restrict is None else list(p.restrict),
        measure=measure,
    )
    return target, posterior


@functools.cache  # importlib.metadata reads the installed distributions: once per process
def version_tags() -> dict[str, str]:
    """Versions that change the numbers (README: reproducibility), as MLflow tags."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("lambda_hat", "jax", "jaxlib", "blackjax"):
        try:
            out[f"version.{pkg}"] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _sample(
    cfg: DictConfig, spec: registry.EstimatorSpec, posterior: Posterior, key: jax.Array, wait_for_tracking: Callable[[], None]
) -> tuple[Trace, dict[str, Any]]:
    """An MCMC sampler's chains (warm-up, then sampling) as a Trace, and the up-front cost estimate."""
    s = cfg.sampler
    kernel = build_kernel(s, posterior.n)
    cost: dict[str, Any] = {}
    if spec.family == "full_batch" and cfg.progress:
        wait_for_tracking()  # the gradient timing is the estimator's too
        from lambda_hat.devices import chain_mesh

        mesh = chain_mesh(int(s.num_chains))
        cost = log_cost_estimate(cfg, posterior, 1 if mesh is None else int(mesh.devices.size))
    trace = run_chains(
        kernel,
        posterior,
        key,
        num_chains=s.num_chains,
        num_steps=s.num_steps,
        num_burnin=burnin_steps(s),
        thinning=s.thinning,
        progress=cfg.progress,
        label=s.name,
        before_timed=wait_for_tracking,
        converge=convergence(s),
    )
    return trace, cost


def _burnin_of(s: DictConfig, trace: Trace) -> int:
    """Burn-in steps the estimate discarded: the configured ones for a fixed length; a run until
    converged chose them from its chains (at most burnin_fraction of the steps run)."""
    if trace.stop_reason == "fixed length":
        return burnin_steps(s, int(trace.step[-1]))
    return int(s.thinning) * trace.num_burnin_draws


def convergence(s: DictConfig) -> Converge | None:
    """The sampler config's run-until-converged settings (None: a fixed length of num_steps)."""
    cap = work_cap(s)
    if cap is None:
        return None
    return Converge(cap, float(s.converge_rhat), float(s.converge_ess), lambda steps: burnin_steps(s, steps), from_chains=s.num_burnin is None)


def _fit_variational(cfg: DictConfig, posterior: Posterior, key: jax.Array, label: str, wait_for_tracking: Callable[[], None]) -> Trace:
    """Independent VI fits (the vi group's algorithm) and their draws on the full data as a Trace."""
    from lambda_hat.vi.fit import run_fits

    family = registry.get_vi(cfg.vi.name).build(cfg.vi, posterior.d)
    return run_fits(cfg.sampler, family, posterior, key, progress=cfg.progress, label=label, before_timed=wait_for_tracking)


def estimate_target(cfg: DictConfig, target: Target, wait_for_tracking: Callable[[], None] = lambda: None) -> tuple[dict[str, Any], Trace, Any]:
    """λ̂ of target under the validated cfg: (metrics, Trace, trace frame); writes nothing.

    The one pipeline behind the CLI's runs and lambda_hat.estimate: posterior -> estimator ->
    Trace -> estimate, diagnostics and health warnings.
    """
    configure_compilation_cache(cfg)
    s = cfg.sampler
    spec = registry.get(s.name)
    variational = spec.family == "variational"
    label = f"{s.name}-{cfg.vi.name}" if variational else s.name  # e.g. vi-mfa
    with precision(cfg):
        target, posterior = prepare(cfg, target)
        key = jax.random.key(cfg.seed, impl=cfg.prng_impl)
        cost: dict[str, Any] = {}
        if variational:
            trace = _fit_variational(cfg, posterior, key, label, wait_for_tracking)
        else:
            trace, cost = _sample(cfg, spec, posterior, key, wait_for_tracking)
    return estimate_from_trace(cfg, target, posterior, trace, cost)


def estimate_from_trace(cfg: DictConfig, target: Target, posterior: Posterior, trace: Trace, cost: dict[str, Any]) -> tuple[dict[str, Any], Trace, Any]:
    """The metrics, Trace and trace frame of an estimator's Trace on posterior (estimate_target's
    second half; a batched grid's points too)."""
    s = cfg.sampler
    spec = registry.get(s.name)
    variational = spec.family == "variational"
    with precision(cfg):
        nbeta, L0 = float(posterior.nbeta), float(posterior.llc_L0)
        minimum = minimum_check(posterior) if cfg.posterior.check_minimum else {}
    # a weight- or data-refined λ̂ is another quantity than the whole model's λ: no truth to compare with
    refined = cfg.posterior.restrict is not None or cfg.posterior.measure_on is not None
    llc_true = None if refined else target.llc_true
    est = estimate_llc(trace.loss, trace.num_burnin_draws, nbeta, L0, llc_true)
    if variational:
        est |= variational_diagnostics(trace, nbeta)
    metrics: dict[str, Any] = {
        **est,
        **efficiency(est, trace),
        **sampler_diagnostics(trace, 1 if variational else s.thinning),
        **cost,
        "sampler": s.name,
        "family": spec.family,
        "model": target_name(cfg.model, target) if cfg.model.name == "user" else cfg.model.name,
        "target_id": target.target_id,
        "seed": int(cfg.seed),
        "dtype": str(posterior.dtype),  # the precision actually used
        "n": posterior.n,
        "nbeta_n": nbeta_sample_size(cfg, target),
        "nbeta_from": str(cfg.posterior.nbeta_from),
        "d": posterior.d,
        "nbeta": nbeta,
        "gamma": float(cfg.posterior.gamma),
        "beta0": float(cfg.posterior.beta0),
        "gram_loss": posterior.gram is not None,
        "eval_batch_size": posterior.eval_batch_size,
        "control_variate": posterior.control_variate,
        "restrict": None if cfg.posterior.restrict is None else list(cfg.posterior.restrict),
        "d_total": target.d,
        "L0": L0,
        "measure_on": None if cfg.posterior.measure_on is None else str(cfg.posterior.measure_on),
        "sample_on": str(cfg.posterior.sample_on) if cfg.posterior.measure_on is not None else "data",
        "n_measure": posterior.measure_n if posterior.measuring else posterior.n,
        **minimum,
        "num_chains": int(s.num_chains),
        "num_steps": int(s.num_steps) if variational else int(trace.step[-1]) if len(trace.step) else 0,
        "num_burnin": 0 if variational else _burnin_of(s, trace),
        "stop_reason": trace.stop_reason,
        "batch_points": trace.batch_points,  # > 1: run in a batched grid; its times are its share
        "max_steps": None if variational else work_cap(s),
        "num_warmup_steps": trace.num_warmup_steps,
        "n_fge": trace.n_fge,
        "n_fge_warmup": trace.n_fge_warmup,
        "sampling_time_s": trace.sampling_time_s,
        "compile_time_s": trace.compile_time_s,
        "warmup_time_s": trace.warmup_time_s,
        "warmup_compile_time_s": trace.warmup_compile_time_s,
        "timing_notes": TIMING_NOTES,
        "chain_devices": trace.devices,
        **device_record(),  # what the job actually ran on (platform, kind, count)
        "target_cached": bool(target.meta.get("cached")),
        "chain_steps_per_s": s.num_chains
        * (s.num_steps if variational else int(trace.step[-1]))
        / (trace.warmup_time_s if variational else trace.sampling_time_s),
    }
    if variational:  # the fit is the Trace's warm-up, the final draws its sampling (vi/fit.py)
        metrics |= {
            "vi": cfg.vi.name,
            "fit_fge": trace.n_fge_warmup,
            "final_fge": trace.n_fge,
            "fit_time_s": trace.warmup_time_s,
            "final_time_s": trace.sampling_time_s,
        }
    if "rank" in target.meta and cfg.posterior.restrict is None:
        metrics["true_rank"] = int(target.meta["rank"])
    whole_model = ("llc_global", "hessian_check", "layer_ranks")  # not the restricted λ̂'s
    for key in (*whole_model, "factory", "checkpoint", "checkpoint_sha256", "training_step", "train_loss", "test_loss"):
        if key in whole_model and cfg.posterior.restrict is not None:
            continue
        if key in target.meta:
            metrics[key] = target.meta[key]
    metrics |= interval_metrics(est, trace)
    frame = outputs.trace_frame(trace, nbeta, L0)
    metrics["warnings"] = health_warnings(metrics) + trace_warnings(frame, metrics)
    if trace.stop_reason == "work cap":
        metrics["warnings"].append(
            f"sampling reached the work cap of {work_cap(s)} steps unconverged (R-hat {metrics.get('r_hat') or float('nan'):.3f}, "
            f"bulk ESS {metrics.get('ess_bulk') or 0:.0f}; wanted <= {s.converge_rhat}, >= {s.converge_ess:g}): raise sampler.max_steps, or mix faster"
        )
    fallback = device_warning(metrics)
    if fallback is not None:
        metrics["warnings"].append(fallback)
    return metrics, trace, frame


def run(
    cfg: DictConfig,
    out_dir: Path,
    launch_dir: Path,
    run_tags: dict[str, str] | None = None,
    target: Target | None = None,
) -> dict[str, Any]:
    """Run one estimate described by cfg, writing its files to out_dir; returns the metrics.

    run_tags: extra MLflow tags (a sweep job's parent run, job number, overrides).
    target: the target to estimate (lambda_hat.estimate passes a user's); None = build the one
    cfg.model names.

    Raises RunFailed when every chain diverged and TrackingError (lambda_hat.tracking.store) when MLflow fails
    (in both cases after the files are written).
    """
    apply_budget(cfg)  # budget.fge_per_chain sizes the sampler (idempotent; the saved config shows it)
    registry.validate(cfg)
    started_wall, started = time.time(), time.perf_counter()
    if cfg.mlflow.enabled:
        check_store(resolve_tracking_uri(cfg.mlflow.tracking_uri, launch_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    # Importing this module (blackjax) has started JAX already, so this cannot change the device
    # count any more; the app sets it before that import. Here it says once if it differs.
    configure_cpu_devices(cfg.cpu_devices)
    s = cfg.sampler
    variational = registry.get(s.name).family == "variational"
    label = f"{s.name}-{cfg.vi.name}" if variational else s.name  # e.g. vi-mfa
    computed = _COMPUTED.pop(str(out_dir.resolve()), None)
    if computed is not None:
        target = computed[3]
    record = out_dir / "mlflow_run.json"
    tags = {**version_tags(), "lambda_hat.output_dir": str(out_dir.resolve()), **(run_tags or {})}
    t0 = time.perf_counter()
    if target is None and cfg.model.name == "user":  # a user's factory: built before the run is named
        target = build_target(cfg, cache_dir_of(cfg))
    run_name = f"{label}-{target_name(cfg.model, target)}-seed{cfg.seed}"
    with mlflow_run(cfg, launch_dir, run_name, started_wall, record, tags) as tracked:
        wait_for_tracking = tracked.wait if tracked is not None else (lambda: None)
        if target is None:
            target = build_target(cfg, cache_dir_of(cfg))
        target_time = time.perf_counter() - t0
        if computed is not None:
            metrics, trace, frame = computed[:3]
        else:
            metrics, trace, frame = estimate_target(cfg, target, wait_for_tracking)
        metrics["target_time_s"] = target_time
        files = [outputs.write_resolved_config(out_dir, cfg)]
        files.append(outputs.write_trace(out_dir, frame))
        plots = cfg.plots is None or bool(cfg.plots)  # None (the app sets it per run mode): on
        if variational:
            fit_frame = outputs.fit_frame(trace)
            files.append(outputs.write_table(out_dir / "fit_trace.parquet", fit_frame))
        if plots and variational:
            files += outputs.write_vi_plots(out_dir, fit_frame, frame, target.llc_true, run_name)
        elif plots:
            files += outputs.write_plots(out_dir, frame, target.llc_true, run_name)
            if "energy" in trace.extras:
                files.append(outputs.write_energy_plot(out_dir, trace.extras["energy"][:, trace.num_burnin_draws :], run_name))
        for warning in metrics["warnings"]:
            log.warning("health: %s", warning)
        metrics["total_time_s"] = time.perf_counter() - started
        files.append(outputs.write_metrics(out_dir, metrics))
        if tracked is not None and tracked.long_params:  # MLflow cuts params at 6000 characters
            files.append(outputs.write_json(out_dir / "long_params.json", tracked.long_params))
        result_tags = {
            "sampler": s.name,
            **({"vi": cfg.vi.name} if variational else {}),
            "model": metrics["model"],
            "target_id": target.target_id,
            "status": metrics["status"],
            "stop_reason": str(metrics.get("stop_reason")),  # converged, work cap or fixed length
            "health": "; ".join(metrics["warnings"]) or "ok",
            "device_platform": metrics["device_platform"],
            "device_kind": metrics["device_kind"],
        }
        log_results(tracked, metrics, files, result_tags, frame)
        if metrics["status"] == "failed":
            raise RunFailed(f"all {s.num_chains} chains produced NaN/inf; see {out_dir / 'metrics.json'}")
    return metrics
