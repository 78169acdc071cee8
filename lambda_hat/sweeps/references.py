"""Reference λ for a target without an analytic one: a long full-batch run, computed once, cached.

``get_reference(cfg)`` returns ``{"llc", "se", "source", "key", ...}``:

- ``source: analytic`` when the target has a closed-form λ (DLN: Aoyagi; polynomial), se 0;
- ``source: reference-run`` otherwise: ``cfg.objective.reference.sampler`` (a full-batch sampler:
  nuts, hmc, mclmc, ...) with ``num_chains`` / ``num_warmup`` / ``num_steps`` from
  ``cfg.objective.reference``, on the same target (model/data/training/target seed) and the same
  posterior (beta0, gamma, gram_loss) as cfg, with a fixed sampler seed (REFERENCE_SEED).

Reference runs are stored like targets (lambda_hat.targets.store): under
``<cache_dir>/references/<key>/`` with ``reference.json`` (λ, its se, ESS, R-hat, the sampler
config, lambda_hat's version, ...) and the run's own folder ``run/`` (metrics.json, trace.parquet).
The key hashes the target id, the posterior settings, the full reference sampler config and
FORMAT_VERSION. The first process to need a missing reference takes a file lock, runs it into a
temporary folder and renames that into place, so concurrent jobs compute it once and never read a
half-written entry; an unreadable or inconsistent entry is rebuilt, never used.

The one seam is :func:`run_reference` (config -> metrics): it calls ``lambda_hat.runner.run``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger("lambda_hat")

# Bump when the meaning of a stored reference changes, so stale entries are never reused.
FORMAT_VERSION = 2  # 2: reference.json carries its own sha256
REFERENCE_SEED = 0  # the reference run's sampler seed: independent of the trial's seed
REFERENCE_FILE = "reference.json"
RHAT_MAX, ESS_MIN = 1.01, 400.0  # what "converged" means for a reference (recorded, not enforced)


def _cache_dir(cfg: DictConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    from lambda_hat.config import default_cache_dir

    return default_cache_dir()


def _target_id(cfg: DictConfig) -> str:
    if cfg.model.name == "user":  # the factory, its arguments and the checkpoint's sha256
        from lambda_hat.targets.user import target_key

        return target_key(cfg)[1]
    from lambda_hat.targets import store, target_spec

    return store.target_id(target_spec(cfg))


def _compose_sampler(name: str) -> DictConfig:
    """The sampler preset `name` as the app composes it (inside a running Hydra app or not)."""
    from hydra.core.global_hydra import GlobalHydra

    overrides = [f"sampler={name}"]
    if GlobalHydra.instance().is_initialized():  # inside a job: Hydra's own compose API
        from hydra import compose

        return compose(config_name="config", overrides=overrides).sampler
    from lambda_hat.composition import compose_config

    return compose_config(overrides).sampler


def reference_sampler(cfg: DictConfig) -> DictConfig:
    """The reference run's sampler config: the preset with objective.reference's sizes."""
    from lambda_hat import registry

    ref = cfg.objective.reference
    spec = registry.get(str(ref.sampler))
    if spec.family != "full_batch":
        raise ValueError(f"objective.reference.sampler={ref.sampler!r} is invalid: must be a full-batch sampler ({', '.join(registry.names('full_batch'))})")
    node = _compose_sampler(str(ref.sampler))
    node.num_chains = int(ref.num_chains)
    node.num_steps = int(ref.num_steps)
    if "num_warmup" in node:  # MCLMC tunes on fractions of num_steps instead
        node.num_warmup = int(ref.num_warmup)
    return node


def reference_config(cfg: DictConfig) -> DictConfig:
    """cfg with the reference sampler: same target and posterior, fixed seed, no MLflow/plots/objective."""
    ref_cfg = copy.deepcopy(cfg)
    sampler = reference_sampler(cfg)
    with read_write(ref_cfg), open_dict(ref_cfg):
        ref_cfg.target_seed = int(cfg.seed if cfg.target_seed is None else cfg.target_seed)
        ref_cfg.seed = REFERENCE_SEED
        ref_cfg.sampler = sampler
        ref_cfg.objective.enabled = False
        ref_cfg.mlflow.enabled = False
        ref_cfg.plots = False
    return ref_cfg


def reference_key(cfg: DictConfig, target_id: str | None = None) -> tuple[str, dict[str, Any]]:
    """(key, what it hashes) of cfg's reference."""
    ref_cfg = reference_config(cfg)
    p = cfg.posterior
    spec = {
        "format": FORMAT_VERSION,
        "target_id": target_id or _target_id(cfg),
        "posterior": {"beta0": float(p.beta0), "gamma": float(p.gamma), "gram_loss": bool(p.gram_loss)},
        "sampler": OmegaConf.to_container(ref_cfg.sampler, resolve=True),
        "seed": REFERENCE_SEED,
        "prng_impl": str(cfg.prng_impl),
    }
    payload = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16], spec


def run_reference(ref_cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """The seam: one run of the reference config into run_dir; returns its metrics."""
    from lambda_hat.runner import run

    return run(ref_cfg, run_dir, run_dir)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("lambda_hat")
    except Exception:
        return "unknown"


def record_sha256(ref: dict[str, Any]) -> str:
    """Hash of a reference record without its own "sha256" field (recorded in it, checked on load)."""
    body = {k: v for k, v in ref.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _load(entry: Path, key: str) -> dict[str, Any] | None:
    """The stored reference, or None if missing, unreadable or inconsistent (never trust it then):
    it must be this key's, in this format, with a finite λ, and hash to its recorded sha256."""
    try:
        ref = json.loads((entry / REFERENCE_FILE).read_text())
    except (OSError, ValueError):
        return None
    ok = (
        isinstance(ref, dict)
        and ref.get("sha256") == record_sha256(ref)
        and ref.get("format") == FORMAT_VERSION
        and ref.get("key") == key
        and ref.get("source") == "reference-run"
        and isinstance(ref.get("llc"), (int, float))
        and math.isfinite(ref["llc"])
        and (ref.get("se") is None or isinstance(ref["se"], (int, float)))
    )
    if not ok:
        return None
    return {**ref, "path": str(entry)}


def _build(cfg: DictConfig, key: str, spec: dict[str, Any], root: Path, entry: Path) -> dict[str, Any]:
    ref_cfg = reference_config(cfg)
    s = ref_cfg.sampler
    log.info(
        "reference %s: building (%s, %d chains x %s warm-up + %d steps, target %s); cached for later runs",
        key,
        s.name,
        s.num_chains,
        s.get("num_warmup", "-"),
        s.num_steps,
        spec["target_id"],
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a shared cache is read by others
        started = time.perf_counter()
        m = run_reference(ref_cfg, tmp / "run")
        if m.get("target_id") != spec["target_id"]:
            raise RuntimeError(f"reference run built target {m.get('target_id')}, expected {spec['target_id']}")
        if m.get("llc_mean") is None or not math.isfinite(m["llc_mean"]):
            raise RuntimeError(f"reference run has no estimate (status {m.get('status')})")
        r_hat, ess = m.get("r_hat"), m.get("ess_bulk")
        import jax

        ref = {
            "format": FORMAT_VERSION,
            "key": key,
            "source": "reference-run",
            "llc": float(m["llc_mean"]),
            "se": None if m.get("llc_sem") is None else float(m["llc_sem"]),
            "llc_std": m.get("llc_std"),
            "llc_per_chain": m.get("llc_per_chain"),
            "ess": m.get("ess"),
            "ess_bulk": ess,
            "r_hat": r_hat,
            "converged": bool(m.get("status") == "ok" and r_hat is not None and r_hat <= RHAT_MAX and ess is not None and ess >= ESS_MIN),
            "status": m.get("status"),
            "warnings": m.get("warnings", []),
            "target_id": spec["target_id"],
            "posterior": spec["posterior"],
            "sampler": spec["sampler"],
            "seed": REFERENCE_SEED,
            "prng_impl": spec["prng_impl"],
            "n_fge_total": float((m.get("n_fge") or 0) + (m.get("n_fge_warmup") or 0)),
            "nbeta": m.get("nbeta"),
            "n": m.get("n"),
            "d": m.get("d"),
            "made_by": "lambda_hat.runner.run (lambda_hat.sweeps.references.run_reference)",
            "lambda_hat_version": _version(),
            "jax_version": jax.__version__,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_time_s": time.perf_counter() - started,
            "build_host": socket.gethostname(),
            "build_pid": os.getpid(),
        }
        ref = json.loads(json.dumps(ref, default=str))  # as it will be read back
        ref["sha256"] = record_sha256(ref)
        (tmp / REFERENCE_FILE).write_text(json.dumps(ref, indent=2, sort_keys=True))
        os.replace(tmp, entry)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not ref["converged"]:
        log.warning(
            "reference %s: not well converged (r_hat %s, ess_bulk %s, status %s); raise objective.reference.num_steps",
            key,
            r_hat,
            ess,
            m.get("status"),
        )
    log.info("reference %s: λ = %.4f ± %.4f (%s)", key, ref["llc"], ref["se"] or 0.0, entry)
    return {**ref, "path": str(entry)}


_UNKNOWN: Any = object()


def get_reference(cfg: DictConfig, *, target_id: str | None = None, llc_true: Any = _UNKNOWN) -> dict[str, Any]:
    """The reference λ of cfg's target and posterior (see the module docstring).

    target_id / llc_true: what a run of cfg reported (metrics["target_id"], metrics["llc_true"]);
    when llc_true is not given the target is loaded (or built) from the target cache to learn it.
    """
    if llc_true is _UNKNOWN:
        from lambda_hat.runner import cache_dir_of
        from lambda_hat.targets import build_target

        target = build_target(cfg, cache_dir_of(cfg))
        target_id, llc_true = target.target_id, target.llc_true
    if llc_true is not None:
        return {"llc": float(llc_true), "se": 0.0, "source": "analytic", "key": target_id or _target_id(cfg)}
    key, spec = reference_key(cfg, target_id)
    root = _cache_dir(cfg) / "references"
    root.mkdir(parents=True, exist_ok=True)
    entry = root / key
    found = _load(entry, key)
    if found is not None:
        log.info("reference %s: reused (λ = %.4f ± %.4f, %s)", key, found["llc"], found["se"] or 0.0, entry)
        return found
    lock = FileLock(str(root / f"{key}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("reference %s: another process is building it; waiting", key)
        lock.acquire()
    try:
        found = _load(entry, key)  # another process may have built it while we waited
        if found is not None:
            log.info("reference %s: reused (λ = %.4f ± %.4f, built by another process)", key, found["llc"], found["se"] or 0.0)
            return found
        if entry.exists():  # unreadable or inconsistent: rebuild, never use
            log.warning("reference %s: the stored entry is unreadable or stale; rebuilding it", key)
            shutil.rmtree(entry)
        return _build(cfg, key, spec, root, entry)
    finally:
        lock.release()
