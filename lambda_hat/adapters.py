"""Adapters: a Flax, Equinox or PyTorch model plus its data and a loss, as a lambda_hat.Target.

Each splits the model into the parameters that are sampled (w*: the float weights) and what is
held fixed (structure, batch-norm statistics, buffers), and builds ``apply(params, inputs)``;
``loss`` (a name from lambda_hat.losses or a callable ``loss(params, batch)``) turns that into
the Target's ``loss(params, batch)``. Models are evaluated in inference mode (batch norm on its
running statistics, dropout off).

Data: ``(x, y)`` or ``{"x": x, "y": y}`` for ``mse``/``cross_entropy``; an integer token array
(n, T) or ``{"tokens": ...}`` for ``next_token``; any pytree with a callable loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lambda_hat import losses
from lambda_hat.targets.base import Target, TargetError


def from_apply(
    apply: Callable[[Any, Any], Any],
    params: Any,
    data: Any,
    *,
    loss: str | losses.Loss = "mse",
    n: int | None = None,
    name: str | None = None,
    llc_true: float | None = None,
    meta: dict[str, Any] | None = None,
    held: dict[str, Any] | None = None,
    held_unloadable: bool = False,
) -> Target:
    """A target from ``apply(params, inputs) -> outputs``, w* and data, with a loss by name.

    Args:
        apply: the model's forward pass on a batch of inputs (pure JAX).
        params: w*, the parameters sampled (a pytree of float arrays).
        data: see the module docstring.
        loss: "mse", "cross_entropy", "next_token" or a callable loss(params, batch).
        n: the sample size in nβ (default: the data's rows), as for Target.from_loss.
        name: a short name for run names and tables.
        llc_true: the true λ, when known.
        meta: recorded with the target.
        held: the state apply reads but does not sample (Target.held), restored by checkpoints.
        held_unloadable: the model holds float state no checkpoint can restore (Target.held_unloadable).

    Returns:
        The Target; for cross_entropy / next_token the labels were checked to be integers in
        [0, number of classes).
    """
    batch = losses.as_batch(data, loss)
    try:
        loss_fn = losses.from_apply(loss, apply)
    except ValueError as e:
        raise TargetError("loss", str(e).split(": ", 1)[-1]) from None
    target = Target.from_loss(loss_fn, params, batch, n=n, name=name, llc_true=llc_true)
    if loss in ("cross_entropy", "next_token"):
        _check_labels(apply, params, target.data, loss)
    return replace(
        target,
        meta={**(meta or {}), "loss": loss if isinstance(loss, str) else "callable"},
        held=held or None,
        held_unloadable=held_unloadable,
    )


def _check_labels(apply: Callable, params: Any, batch: dict[str, Any], loss: str) -> None:
    """Integer labels in [0, classes): optax would return NaN (or a wrong loss) otherwise."""
    if loss == "next_token":
        if "tokens" not in batch:
            raise TargetError("data", "next_token needs {'tokens': (n, T) integer array}")
        labels, inputs = batch["tokens"], batch["tokens"][:2, :-1]
    else:
        if not isinstance(batch, dict) or "x" not in batch or "y" not in batch:
            raise TargetError("data", f"{loss} needs (x, y) or {{'x': ..., 'y': ...}}")
        labels, inputs = batch["y"], jax.tree.map(lambda a: a[:2], batch["x"])
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TargetError("data", f"{loss} needs integer class labels, got {labels.dtype}")
    classes = int(jax.eval_shape(apply, params, inputs).shape[-1])
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        raise TargetError("data", f"class labels must be in [0, {classes}) (the model's {classes} logits); found {low}..{high}")


def from_flax(
    model: Any,
    data: Any,
    *,
    loss: str | losses.Loss = "mse",
    variables: Any = None,
    apply_kwargs: dict[str, Any] | None = None,
    n: int | None = None,
    name: str | None = None,
) -> Target:
    """A Flax model as a Target: an NNX module (its ``nnx.Param`` state is sampled, everything
    else held), or a linen module with its ``variables`` (``{"params": ..., "batch_stats": ...}``:
    the "params" collection is sampled).

    Args:
        model: an ``nnx.Module`` (put in eval mode here) or a ``flax.linen.Module``.
        data: as for from_apply.
        loss: as for from_apply.
        n: as for from_apply.
        name: as for from_apply.
        variables: linen only, the trained variables.
        apply_kwargs: linen only, keyword arguments of ``model.apply`` for inference, e.g.
            ``{"train": False}`` for a model with batch norm or dropout.

    Example:
        >>> from flax import nnx
        >>> net = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
        >>> t = lh.from_flax(net, (x, y), loss="mse")   # doctest: +SKIP
    """
    try:
        from flax import nnx
        import flax.linen as linen
    except ImportError:
        raise TargetError("from_flax", "needs the 'flax' extra: pip install -e \".[flax]\"") from None
    if isinstance(model, nnx.Module):
        model.eval()  # batch norm on running statistics, dropout off (nnx's inference mode)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # params: an nnx.State pytree

        def apply_nnx(p: Any, x: Any) -> Any:
            return nnx.merge(graphdef, p, rest)(x)

        # batch statistics live in `rest`; a checkpoint of the parameters would not restore them
        stats = any(jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) for a in jax.tree.leaves(rest) if hasattr(a, "dtype"))
        return from_apply(apply_nnx, params, data, loss=loss, n=n, name=name or type(model).__name__, held_unloadable=stats)
    if isinstance(model, linen.Module):
        if variables is None:
            raise TargetError("from_flax", "a linen module needs its trained variables: from_flax(module, data, variables=...)")
        params = variables["params"]
        rest = {k: v for k, v in variables.items() if k != "params"}
        kwargs = dict(apply_kwargs or {})

        from flax.core import unfreeze

        rest = unfreeze(rest)  # a mutable copy: a checkpoint's batch_stats/... load into it

        def apply_linen(p: Any, x: Any) -> Any:
            return model.apply({"params": p, **rest}, x, **kwargs)

        return from_apply(apply_linen, params, data, loss=loss, n=n, name=name or type(model).__name__, held=rest)
    raise TargetError("from_flax", f"expects an nnx.Module or a linen.Module, got {type(model).__name__}")


def from_equinox(
    model: Any,
    data: Any,
    *,
    loss: str | losses.Loss = "mse",
    batched: bool = False,
    n: int | None = None,
    name: str | None = None,
) -> Target:
    """An Equinox model as a Target: its inexact (float) arrays are sampled, the rest held.

    Args:
        model: an ``eqx.Module`` (put in inference mode here: dropout off).
        batched: False (Equinox's convention) = the model maps one example, and is vmapped over
            the batch; True = it takes a batch.
        data: as for from_apply.
        loss: as for from_apply.
        n: as for from_apply.
        name: as for from_apply.
    """
    try:
        import equinox as eqx
    except ImportError:
        raise TargetError("from_equinox", "needs the 'vi' extra (equinox): pip install -e \".[vi]\"") from None
    model = eqx.nn.inference_mode(model)
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def apply_eqx(p: Any, x: Any) -> Any:
        net = eqx.combine(p, static)
        return net(x) if batched else jax.vmap(net)(x)

    return from_apply(apply_eqx, params, data, loss=loss, n=n, name=name or type(model).__name__, meta={"equinox_static": static})


def from_torch(
    module: Any,
    data: Any,
    *,
    loss: str | losses.Loss = "mse",
    n: int | None = None,
    name: str | None = None,
) -> Target:
    """A ``torch.nn.Module`` as a Target, sampled by the same JAX engine (chains vmapped): torchax
    turns the module into a pure JAX function (lambda_hat.torch_bridge; the ``torch`` extra).

    Its trainable parameters (by ``state_dict`` name) are sampled; buffers (batch-norm running
    statistics) are held; the module is evaluated in eval mode. Data may be torch tensors or
    arrays. A checkpoint for ``model.checkpoint`` is the module's ``state_dict`` (torch.save) or a
    safetensors / npz file with the same names. A tied tensor (an output layer sharing the
    embedding's weight) is one parameter, sampled once; its second name is recorded in
    ``meta["tied"]`` so that a state_dict holding it under both names loads.
    """
    from lambda_hat.torch_bridge import extract

    params, buffers, fn, tied = extract(module)

    def apply_torch(p: Any, x: Any) -> Any:
        # torchax swaps its arguments into the module: they must be JAX arrays, not numpy
        return fn(jax.tree.map(jnp.asarray, {**p, **buffers}), (jnp.asarray(x),))

    data = jax.tree.map(_to_numpy, data)
    params = jax.tree.map(np.asarray, params)
    # state_dict names are the checkpoint's keys; its buffers (running statistics) load into `buffers`
    meta = {"tied": tied} if tied else None
    return from_apply(apply_torch, params, data, loss=loss, n=n, name=name or type(module).__name__, meta=meta, held=buffers)


def _to_numpy(a: Any) -> Any:
    if hasattr(a, "detach"):  # a torch tensor
        return a.detach().cpu().numpy()
    return a if isinstance(a, (np.ndarray, jax.Array)) else jnp.asarray(a)
