"""Targets: a loss, its data and the parameter w* at which λ is estimated.

``build_target(cfg)`` turns the ``model``/``data``/``training`` config into a :class:`Target`
through the target registry (lambda_hat.registry.TARGETS: name -> schema, builder). The built-in
synthetic targets are built here, reusing a cached build when the defining spec has been seen
before (see ``store.py``); a user's own network is ``model=user`` (lambda_hat.targets.user).
"""

from __future__ import annotations

import logging
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import DictConfig, OmegaConf

from lambda_hat import losses
from lambda_hat.losses import mse
from lambda_hat.targets import aoyagi, dln, fiber, mlp, polynomial, store
from lambda_hat.targets.base import Target, TargetError
from lambda_hat.targets.training import train

__all__ = ["Target", "TargetError", "build_target", "target_spec", "mse"]

log = logging.getLogger(__name__)

ApplyFn = Callable[[Any, jnp.ndarray], jnp.ndarray]


def _inputs(data: DictConfig, width: int, rng: np.random.Generator) -> np.ndarray:
    if data.input_dist == "uniform":
        return rng.uniform(-data.input_scale, data.input_scale, size=(data.n, width))
    return rng.normal(0.0, data.input_scale, size=(data.n, width))


def _labels(clean: np.ndarray, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    return clean + noise_std * rng.normal(size=clean.shape) if noise_std > 0 else clean


def _streams(seed: int) -> list[np.random.Generator]:
    """Independent generators for teacher, inputs, label noise and student init."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]


def _dln_teacher(widths: list[int], rank: int | None, mode: str, rng: np.random.Generator) -> list[np.ndarray]:
    if rank is None or rank == min(widths):  # full rank: a generic teacher is on the top component
        return dln.make_teacher(widths, None, rng)
    if mode == "top":
        return fiber.make_top_component_teacher(widths, rank, rng)
    if mode == "first_layer":
        return dln.make_teacher(widths, rank, rng)
    return dln.truncated_teacher(widths, rank, rng)


def _build_dln(spec: dict[str, Any]) -> tuple[store.Arrays, store.Meta]:
    model = spec["model"]
    widths, rank = model["widths"], model["true_rank"]
    data = OmegaConf.create(spec["data"])
    g_teacher, g_x, g_noise, _ = _streams(spec["seed"])
    teacher = _dln_teacher(widths, rank, model["teacher"], g_teacher)
    x = _inputs(data, widths[0], g_x)
    y = _labels(np.asarray(dln.forward(teacher, x)), data.noise_std, g_noise)
    # float64 Hessian rank of the loss at w* (with these inputs): it tells whether the local λ
    # at the teacher is known exactly (top component, or Morse–Bott), see targets/fiber.py.
    check = fiber.hessian_rank_check(teacher, x)
    r = int(check["product_rank"])
    llc_local = fiber.local_llc_from_check(check) if np.linalg.matrix_rank(x) == widths[0] else None
    arrays = {f"w{i}": w for i, w in enumerate(teacher)} | {"x": x, "y": y}
    hessian = {k: check[k] for k in ("hessian_rank", "expected_rank", "orbit_codim", "top_component", "morse_bott", "method")}
    hessian["gap"] = check["gap"] if np.isfinite(check["gap"]) else None
    meta = {
        "kind": "dln",
        "rank": r,
        "llc_true": llc_local,  # exact local λ at w*, or None where no check proves it
        "llc_global": aoyagi.aoyagi_lambda(widths, r),  # Aoyagi's λ (the global RLCT of the fiber)
        "hessian_check": hessian,
        "layer_ranks": [int(check["ranks"][(i, i + 1)]) for i in range(len(widths) - 1)],
    }
    return arrays, meta


def _mlp_parts(model: dict[str, Any]) -> tuple[list[int], str, bool]:
    widths = model["teacher_widths"] or model["widths"]
    act = model["teacher_activation"] or model["activation"]
    bias = model["bias"] if model["teacher_bias"] is None else model["teacher_bias"]
    return list(widths), act, bool(bias)


def _build_mlp(spec: dict[str, Any]) -> tuple[store.Arrays, store.Meta]:
    model, data = spec["model"], OmegaConf.create(spec["data"])
    g_teacher, g_x, g_noise, g_student = _streams(spec["seed"])
    t_widths, t_act, t_bias = _mlp_parts(model)
    teacher = mlp.init_params(t_widths, t_bias, g_teacher, bias_std=0.1)
    x = _inputs(data, t_widths[0], g_x)
    with jax.enable_x64(True):
        clean = np.asarray(mlp.forward(jax.tree.map(jnp.asarray, teacher), jnp.asarray(x), t_act))
    y = _labels(clean, data.noise_std, g_noise)
    student = mlp.init_params(model["widths"], model["bias"], g_student)
    apply = mlp.make_apply(model["activation"])
    w_star, info = train(lambda p, xb, yb: mse(apply(p, xb), yb), student, x, y, OmegaConf.create(spec["training"]), spec["seed"])
    leaves = jax.tree.leaves(w_star)
    arrays = {f"p{i}": np.asarray(a, np.float64) for i, a in enumerate(leaves)} | {"x": x, "y": y}
    return arrays, {"kind": "mlp", "llc_true": None, **info}


def _build_polynomial(spec: dict[str, Any]) -> tuple[store.Arrays, store.Meta]:
    exponents, data = spec["model"]["exponents"], OmegaConf.create(spec["data"])
    _, g_x, g_noise, _ = _streams(spec["seed"])
    x = _inputs(data, 1, g_x)
    y = _labels(np.zeros_like(x), data.noise_std, g_noise)  # f* = 0: the truth is w* = 0
    arrays = {"w": polynomial.w_star(exponents)["w"], "x": x, "y": y}
    return arrays, {"kind": "polynomial", "llc_true": polynomial.llc(exponents)}


def target_spec(cfg: DictConfig) -> dict[str, Any]:
    """The part of the config that defines the target (and therefore its cache key)."""
    spec: dict[str, Any] = {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "data": OmegaConf.to_container(cfg.data, resolve=True),
        "seed": int(cfg.seed if cfg.target_seed is None else cfg.target_seed),
    }
    if "teacher_seed" in cfg.model:  # a random DLN: its teacher's seed is drawn with it
        spec["seed"] = int(cfg.model.teacher_seed)
    if cfg.model.name == "mlp":
        spec["training"] = OmegaConf.to_container(cfg.training, resolve=True)
    return spec


@functools.cache  # one loss object per model function: compiled samplers are keyed on it (posterior.py)
def mse_loss(apply: ApplyFn) -> Callable[[Any, Any], Any]:
    """loss(params, {"x", "y"}) = mse(apply(params, x), y), the built-in targets' loss."""
    return losses.from_apply("mse", apply)


def build_builtin(cfg: DictConfig, cache_dir: Path | None = None) -> Target:
    """A built-in synthetic target (dln, dln_random, mlp, polynomial), built or loaded from the cache."""
    spec = target_spec(cfg)
    kind = spec["model"]["name"]
    builder = {"dln": _build_dln, "mlp": _build_mlp, "polynomial": _build_polynomial}[kind]
    tid, arrays, meta, cached = store.get_or_build(cache_dir or store.default_cache_dir(), spec, lambda: builder(spec))
    log.info("target %s (%s) %s", tid, kind, "loaded from cache" if cached else "built")
    if kind == "dln":
        n_layers = len(spec["model"]["widths"]) - 1
        w_star: Any = [arrays[f"w{i}"] for i in range(n_layers)]
        apply: ApplyFn = dln.forward
        product = dln.product
    elif kind == "polynomial":
        w_star = {"w": arrays["w"]}
        apply, product = polynomial.model_fns(tuple(spec["model"]["exponents"]))
    else:
        template = mlp.init_params(spec["model"]["widths"], spec["model"]["bias"], np.random.default_rng(0))
        treedef = jax.tree.structure(template)
        w_star = jax.tree.unflatten(treedef, [arrays[f"p{i}"] for i in range(treedef.num_leaves)])
        apply = mlp.make_apply(spec["model"]["activation"])
        product = None
    return Target(
        loss=mse_loss(apply),
        w_star=w_star,
        data={"x": arrays["x"], "y": arrays["y"]},
        name=kind,
        target_id=tid,
        llc_true=meta.get("llc_true"),
        meta={**meta, "cached": cached},
        product=product,
    )


def build_target(cfg: DictConfig, cache_dir: Path | None = None) -> Target:
    """Build (or load from the cache) the target that cfg.model names, through the target registry."""
    from lambda_hat.registry import get_target

    return get_target(cfg.model.name).build(cfg, cache_dir)
