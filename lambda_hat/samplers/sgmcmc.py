"""SGLD and its diagonally preconditioned variants (RMSprop-SGLD, Adam-SGLD).

Update, with U(w) = nβ L_batch(w) + γ/2 |w - w*|² and a diagonal preconditioner G:

    w <- w - (ε/2) G ⊙ ∇U(w) + sqrt(ε G) ⊙ ξ,   ξ ~ N(0, I)

(devinterp's convention: ε is the step size). Plain SGLD (G = 1) uses blackjax's overdamped
Langevin integrator. blackjax has no preconditioned SGLD, so RMSprop/Adam are written here,
following Hitchcock & Hoogland 2025 (arXiv:2507.21449) App. D.3: the moment estimates use the
loss gradient ∇L_batch only, not the localization term. As in pSGLD (Li et al. 2016) the small
Γ correction term is dropped.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.sgmcmc.diffusions import overdamped_langevin

from lambda_hat.posterior import Posterior
from lambda_hat.samplers.base import Kernel, StepInfo


class SGMCMCState(NamedTuple):
    position: jax.Array
    m: jax.Array  # first moment of ∇L_batch (Adam only; shape () otherwise)
    v: jax.Array  # second moment of ∇L_batch (RMSprop/Adam; shape () otherwise)
    t: jax.Array  # steps taken (for Adam's bias correction)


def _minibatch_loss_and_grad(key: jax.Array, w: jax.Array, post: Posterior, batch_size: int):
    # Sampling with replacement: O(batch) per step on device, unlike a permutation of n.
    idx = jax.random.randint(key, (batch_size,), 0, post.n)
    return jax.value_and_grad(post.batch_loss)(w, idx)


def build(cfg: Any, n: int) -> Kernel:
    """Kernel for cfg.name in {sgld, rmsprop_sgld, adam_sgld}; n is the data size (for FGE)."""
    name, eps, batch = cfg.name, float(cfg.step_size), int(cfg.batch_size)
    langevin = overdamped_langevin()
    moments = name in ("rmsprop_sgld", "adam_sgld")

    def init(key: jax.Array, w0: jax.Array, post: Posterior) -> SGMCMCState:
        del key, post
        zeros = jnp.zeros_like(w0) if moments else jnp.zeros((), w0.dtype)
        return SGMCMCState(w0, zeros, zeros, jnp.zeros((), jnp.int32))

    def step(key: jax.Array, state: SGMCMCState, post: Posterior) -> tuple[SGMCMCState, StepInfo]:
        k_batch, k_noise = jax.random.split(key)
        w = state.position
        loss, g = _minibatch_loss_and_grad(k_batch, w, post, batch)
        pull = post.gamma * (w - post.w_star)
        t = state.t + 1
        if name == "sgld":
            # blackjax: w + s ∇log p + sqrt(2 s) ξ with s = ε/2 is exactly the update above.
            new_w = langevin(k_noise, w, -(post.nbeta * g + pull), eps / 2)
            return SGMCMCState(new_w, state.m, state.v, t), StepInfo(loss)
        if name == "rmsprop_sgld":
            m = state.m
            v = cfg.alpha * state.v + (1 - cfg.alpha) * g**2
            drift_g, v_hat = g, v
        else:  # adam_sgld
            m = cfg.beta1 * state.m + (1 - cfg.beta1) * g
            v = cfg.beta2 * state.v + (1 - cfg.beta2) * g**2
            tf = t.astype(w.dtype)
            drift_g = m / (1 - cfg.beta1**tf)
            v_hat = v / (1 - cfg.beta2**tf)
        precond = 1.0 / (jnp.sqrt(v_hat) + cfg.eps)
        noise = jax.random.normal(k_noise, w.shape, w.dtype)
        new_w = w - 0.5 * eps * precond * (post.nbeta * drift_g + pull) + jnp.sqrt(eps * precond) * noise
        return SGMCMCState(new_w, m, v, t), StepInfo(loss)

    return Kernel(init=init, step=step, position=lambda s: s.position, fge_per_step=batch / n)
