"""Losses by name: each turns a model's ``apply(params, inputs)`` into ``loss(params, batch)``.

A Target's loss is ``loss(params, batch) -> scalar``, the *mean* loss over the batch's rows (the
posterior weights chunks by their row counts, so a mean is what makes chunked full-data losses
exact). Named losses read the batch as a dict:

- ``mse``: ``{"x", "y"}``, squared error averaged over rows and outputs (torch's ``mse_loss``, Lau
  et al.'s choice, the built-in targets' loss);
- ``cross_entropy``: ``{"x", "y"}`` with ``y`` integer class labels and ``apply`` returning logits;
- ``next_token``: ``{"tokens"}`` (integer sequences, shape (n, T)); ``apply(params, tokens[:, :-1])``
  returns logits (n, T - 1, vocab) and the loss is the mean per-token cross-entropy of the next
  token (devinterp's language-model loss).

Any other callable ``loss(params, batch)`` can be given instead of a name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

Apply = Callable[[Any, Any], jax.Array]
Loss = Callable[[Any, Any], jax.Array]
NAMES = ("mse", "cross_entropy", "next_token")


def mse(pred: jax.Array, y: jax.Array) -> jax.Array:
    """Squared error averaged over samples and outputs."""
    return jnp.mean((pred - y) ** 2)


def _mse(apply: Apply) -> Loss:
    def loss(params: Any, batch: Any) -> jax.Array:
        return mse(apply(params, batch["x"]), batch["y"])

    return loss


def _cross_entropy(apply: Apply) -> Loss:
    def loss(params: Any, batch: Any) -> jax.Array:
        logits = apply(params, batch["x"])
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]))

    return loss


def _next_token(apply: Apply) -> Loss:
    def loss(params: Any, batch: Any) -> jax.Array:
        tokens = batch["tokens"]
        logits = apply(params, tokens[:, :-1])
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]))

    return loss


_BY_NAME: dict[str, Callable[[Apply], Loss]] = {"mse": _mse, "cross_entropy": _cross_entropy, "next_token": _next_token}


def from_apply(loss: str | Loss, apply: Apply) -> Loss:
    """loss(params, batch) for a model's apply(params, inputs) and a loss name (or a callable
    loss(params, batch), returned as is)."""
    if callable(loss):
        return loss
    try:
        return _BY_NAME[loss](apply)
    except KeyError:
        raise ValueError(f"loss={loss!r}: unknown loss; known: {', '.join(NAMES)}, or a callable loss(params, batch)") from None


def as_batch(data: Any, loss: str | Loss) -> Any:
    """The adapters' data convention: (x, y) or {"x", "y"} for mse/cross_entropy, a token array or
    {"tokens"} for next_token; any pytree passes through for a callable loss."""
    if loss == "next_token" and not isinstance(data, dict):
        return {"tokens": data}
    if isinstance(data, (tuple, list)) and len(data) == 2 and not callable(loss):
        return {"x": data[0], "y": data[1]}
    return data
