"""Find w* for trained targets: optax optimisation of the mean loss with early stopping."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0  # a progress line at most this often, only for trainings that last longer

LossFn = Callable[[Any, jnp.ndarray, jnp.ndarray], jnp.ndarray]


def _optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    return {"adam": optax.adam, "adamw": optax.adamw, "sgd": optax.sgd}[name](learning_rate)


def train(loss_fn: LossFn, params: Any, x: np.ndarray, y: np.ndarray, cfg: Any, seed: int) -> tuple[Any, dict[str, Any]]:
    """Minimise loss_fn(params, x, y) and return the best parameters seen and a summary.

    Steps run in jit-compiled chunks of ``cfg.eval_every`` (a ``lax.scan``); after each chunk the
    full-data loss is evaluated and training stops once it has not improved by a relative
    ``cfg.min_rel_improvement`` for ``cfg.patience`` evaluations.
    """
    opt = _optimizer(cfg.optimizer, cfg.learning_rate)
    xj, yj = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    n = xj.shape[0]
    batch = cfg.batch_size

    def one_step(carry, key):
        p, s = carry
        if batch is None:
            xb, yb = xj, yj
        else:
            idx = jax.random.randint(key, (batch,), 0, n)
            xb, yb = xj[idx], yj[idx]
        grads = jax.grad(loss_fn)(p, xb, yb)
        updates, s = opt.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), None

    @jax.jit
    def chunk(p, s, key):
        keys = jax.random.split(key, cfg.eval_every)
        (p, s), _ = jax.lax.scan(one_step, (p, s), keys)
        return p, s, loss_fn(p, xj, yj)

    state = opt.init(params)
    key = jax.random.key(seed)
    best_params, best_loss = params, float(loss_fn(params, xj, yj))
    initial_loss, stale, steps = best_loss, 0, 0
    last_report = time.perf_counter()
    while steps < cfg.max_steps and stale < cfg.patience:
        key, sub = jax.random.split(key)
        params, state, loss = chunk(params, state, sub)
        steps += cfg.eval_every
        loss = float(loss)
        if not np.isfinite(loss):
            log.warning("training diverged at step %d; keeping the best parameters so far", steps)
            break
        if loss < best_loss * (1.0 - cfg.min_rel_improvement):
            stale = 0
        else:
            stale += 1
        if loss < best_loss:
            best_params, best_loss = params, loss
        if time.perf_counter() - last_report > PROGRESS_EVERY_S:  # long trainings show progress
            log.info("training w*: step %d/%d, loss %.4g (best %.4g)", steps, cfg.max_steps, loss, best_loss)
            last_report = time.perf_counter()
    info = {
        "train_steps": steps,
        "train_initial_loss": initial_loss,
        "train_final_loss": best_loss,
        "train_early_stopped": stale >= cfg.patience,
    }
    log.info("trained w*: %d steps, loss %.4g -> %.4g", steps, initial_loss, best_loss)
    return jax.tree.map(np.asarray, best_params), info
