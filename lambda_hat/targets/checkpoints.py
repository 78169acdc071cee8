"""Load a checkpoint's weights into a model's parameter pytree (the template), with checks.

Formats: npz of a flattened pytree (keys = the template's key paths, as ``save_npz`` writes
them), safetensors (the same keys; or a torch ``state_dict``'s names for ``from_torch``
targets), Orbax (Flax's default), Equinox's ``tree_serialise_leaves`` and a torch ``state_dict``
file (``torch.load(weights_only=True)``). Every array must have the template leaf's shape and
dtype (TargetError names the first that does not). Nothing here executes code from the file:
npz is read without pickle, torch with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lambda_hat.targets.base import TargetError, check_like

FORMATS = ("npz", "safetensors", "orbax", "equinox", "torch")
_SUFFIXES = {".npz": "npz", ".safetensors": "safetensors", ".eqx": "equinox", ".pt": "torch", ".pth": "torch", ".bin": "torch"}
_EXTRA = {
    "safetensors": ("safetensors", "checkpoints"),
    "orbax": ("orbax.checkpoint", "checkpoints"),
    "equinox": ("equinox", "equinox"),
    "torch": ("torch", "torch"),
}


def key_of(path: tuple[Any, ...]) -> str:
    """A pytree key path as a flat name: ('params', 'Dense_0', 'kernel') -> 'params/Dense_0/kernel'."""
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def flatten(params: Any) -> dict[str, np.ndarray]:
    """{key path: array} of a pytree (the names npz and safetensors checkpoints use)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    return {key_of(p): np.asarray(a) for p, a in leaves}


def save_npz(path: str | Path, params: Any) -> Path:
    """Write params as an npz of its flattened pytree (``model.checkpoint=PATH`` reads it back)."""
    path = Path(path)
    np.savez(path, **flatten(params))
    return path if path.suffix == ".npz" else path.with_suffix(path.suffix + ".npz")


def sha256(path: Path) -> str:
    """Hash of a checkpoint file, or of a folder's files (Orbax) in name order."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "orbax"
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise TargetError("model.checkpoint", f"cannot tell the format of {path.name}; set model.checkpoint_format to one of {', '.join(FORMATS)}")
    return fmt


def _require(fmt: str) -> None:
    module, extra = _EXTRA.get(fmt, (None, None))
    if module is not None and importlib.util.find_spec(module.split(".")[0]) is None:
        raise TargetError("model.checkpoint", f"a {fmt} checkpoint needs the '{extra}' extra: pip install -e \".[{extra}]\"")


def _from_flat(flat: dict[str, np.ndarray], template: Any) -> Any:
    """The template's pytree with each leaf taken from flat by its key path."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    for path, _ in leaves:
        key = name = key_of(path)
        if name not in flat:
            known = ", ".join(sorted(flat)[:8])
            raise TargetError("model.checkpoint", f"has no array {name!r} for parameter {key} (it has: {known}{', ...' if len(flat) > 8 else ''})")
        out.append(flat.pop(name))
    if flat:
        raise TargetError("model.checkpoint", f"has arrays the model does not: {', '.join(sorted(flat)[:8])}")
    return jax.tree.unflatten(jax.tree.structure(template), out)


def _untie(flat: dict[str, np.ndarray], tied: dict[str, str] | None) -> None:
    """Fold each tied name into the one the model samples (in place): a torch state_dict saves a
    shared tensor under every name; the two copies must agree, else the file is not of this model."""
    for alias, name in (tied or {}).items():
        if alias not in flat:
            continue
        value = flat.pop(alias)
        if name not in flat:
            flat[name] = value
        elif np.shape(flat[name]) != np.shape(value) or not np.array_equal(flat[name], value):
            raise TargetError("model.checkpoint", f"{alias} and {name} are one tied tensor in the model but differ in the checkpoint")


def _take_held(flat: dict[str, np.ndarray], held: dict[str, Any] | None) -> None:
    """Move the arrays a target holds fixed (batch-norm statistics, torch buffers) out of flat and
    into held (in place: the target's loss reads that dict), shape-checked, in held's dtype."""
    if not held:
        return
    targets = {key_of(p): p for p, _ in jax.tree_util.tree_flatten_with_path(held)[0]}
    for name, path in targets.items():
        if name not in flat:
            continue
        value = flat.pop(name)
        node = held
        for k in path[:-1]:
            node = node[getattr(k, "key", getattr(k, "idx", None))]
        last = getattr(path[-1], "key", getattr(path[-1], "idx", None))
        old = node[last]
        if np.shape(value) != np.shape(old):
            raise TargetError("model.checkpoint", f"{name} has shape {list(np.shape(value))}, the model expects {list(np.shape(old))}")
        node[last] = jax.numpy.asarray(value, dtype=np.asarray(old).dtype)


def load(
    path: str | Path,
    template: Any,
    fmt: str = "auto",
    held: dict[str, Any] | None = None,
    equinox_static: Any = None,
    tied: dict[str, str] | None = None,
) -> Any:
    """The checkpoint at path as a pytree shaped like template (shape and dtype checked per leaf).

    held: the target's held state (Target.held): arrays of the file with its names (a torch
    state_dict's running statistics, a linen checkpoint's batch_stats/...) are loaded into it.
    equinox_static: the non-array part of an Equinox model (from_equinox), so that a file written
    from the whole model (``eqx.tree_serialise_leaves(path, model)``) reads back leaf for leaf.
    tied: a torch module's shared tensors (``target.meta["tied"]``, from_torch): second name ->
    the name sampled; the file's copy under the second name must equal the first.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise TargetError("model.checkpoint", f"{path} does not exist")
    fmt = detect_format(path) if fmt == "auto" else fmt
    _require(fmt)
    try:
        if fmt == "npz":
            with np.load(path, allow_pickle=False) as z:
                flat = {k: z[k] for k in z.files}
            _untie(flat, tied)
            _take_held(flat, held)
            params = _from_flat(flat, template)
        elif fmt == "safetensors":
            from safetensors.numpy import load_file

            flat = dict(load_file(str(path)))
            _untie(flat, tied)
            _take_held(flat, held)
            params = _from_flat(flat, template)
        elif fmt == "torch":
            import torch

            state = torch.load(str(path), map_location="cpu", weights_only=True)
            flat = {k: v.detach().cpu().numpy() for k, v in state.items()}
            _untie(flat, tied)
            _take_held(flat, held)
            params = _from_flat(flat, template)
        elif fmt == "equinox":
            import equinox as eqx

            if equinox_static is not None:  # the whole model's leaves, then its float arrays again
                model = eqx.tree_deserialise_leaves(str(path), eqx.combine(template, equinox_static))
                params = eqx.partition(model, eqx.is_inexact_array)[0]
            else:
                params = eqx.tree_deserialise_leaves(str(path), template)
        elif fmt == "orbax":
            import orbax.checkpoint as ocp

            with ocp.StandardCheckpointer() as ckpt:
                abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), template)
                params = ckpt.restore(path.resolve(), abstract)
        else:
            raise TargetError("model.checkpoint_format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    except TargetError:
        raise
    except Exception as e:  # a corrupt or foreign file: one line, not a traceback
        raise TargetError("model.checkpoint", f"cannot read {path.name} as {fmt}: {type(e).__name__}: {' '.join(str(e).split())[:200]}") from e
    params = jax.tree.map(np.asarray, params)
    check_like(params, jax.tree.map(np.asarray, template), "model.checkpoint")
    return params
