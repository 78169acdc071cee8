"""A torch.nn.Module as a pure JAX function, through torchax (the ``torch`` extra).

torchax (PyTorch's own torch-on-JAX project) traces a module's aten ops into jax.numpy, so the
result jits, differentiates and vmaps over chains like any JAX model; nothing calls back into
torch in the hot loop. Measured here (Dec 2026): torchax 0.0.13 with torch 2.13.0 matches torch
to ~1e-7 (float32) on MLPs, CNNs, BatchNorm/Dropout in eval mode, an attention block,
``nn.TransformerEncoderLayer`` and embeddings.

Why the import shim: torchax 0.0.13 (and 0.0.7-0.0.12) lists named-tensor overloads in its op
tables (``aten.prod.dim_Dimname``, ``aten.norm.names_out``, ...) that torch 2.13 no longer has,
so ``import torchax`` raises AttributeError. While torchax imports, and only then, a missing
overload whose name is a named-tensor one resolves to an inert placeholder (not an operator, so
torch's decomposition tables skip it and no real op maps to it); any other missing overload
still raises, and torch's lookup is restored afterwards. A torchax that fixed its tables never
triggers it. Which versions work: torch 2.13.0 + torchax 0.0.13 (tested); the fallback for a
module torchax cannot trace is writing the model in JAX (Flax/Equinox) and loading its
state_dict with ``model.checkpoint=... model.checkpoint_format=torch``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from lambda_hat.targets.base import TargetError

_torchax: Any = None


class _MissingOverload:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<missing overload {self.name}>"


def import_torchax() -> Any:
    """torchax, imported with the named-tensor shim (see the module docstring); TargetError naming
    the extra when torch or torchax is not installed."""
    global _torchax
    if _torchax is not None:
        return _torchax
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchax") is None:
        raise TargetError("from_torch", "needs the 'torch' extra: pip install -e \".[torch]\" (a CPU build of torch 2.13.0 and torchax 0.0.13)")
    from torch._ops import OpOverloadPacket

    original = OpOverloadPacket.__getattr__

    def lookup(self: Any, key: str) -> Any:
        try:
            return original(self, key)
        except AttributeError:
            if "dimname" not in key.lower() and "names" not in key:  # named-tensor overloads only
                raise
            return _MissingOverload(f"{self}.{key}")

    OpOverloadPacket.__getattr__ = lookup
    try:
        import torchax
        import torchax.decompositions  # noqa: F401  (imported lazily by torchax; its tables need the shim)
        import torchax.ops.jaten  # noqa: F401
        import torchax.ops.jtorch  # noqa: F401
    finally:
        OpOverloadPacket.__getattr__ = original
    _torchax = torchax
    return torchax


def extract(module: Any) -> tuple[dict[str, Any], dict[str, Any], Any, dict[str, str]]:
    """(params, buffers, fn, tied) of a torch module in eval mode: fn(states, args_tuple) is pure
    JAX, params are the trainable tensors (by state_dict name), buffers the rest (running
    statistics), held fixed. tied: each further state_dict name of a tensor the module shares
    (tied embeddings: ``head.weight`` is ``embed.weight``) -> the one name it is sampled under;
    torch's state_dict saves it under both, so a checkpoint has both (lambda_hat.targets.checkpoints)."""
    torchax = import_torchax()
    module.eval()  # batch norm on running statistics, dropout off
    states, fn = torchax.extract_jax(module)  # one entry per shared tensor (named_parameters' first name)
    trainable = {k for k, p in module.named_parameters() if p.requires_grad}
    params = {k: v for k, v in states.items() if k in trainable}
    buffers = {k: v for k, v in states.items() if k not in trainable}
    first = {id(t): k for k, t in (*module.named_parameters(), *module.named_buffers())}
    tied = {k: first[id(t)] for k, t in module.state_dict(keep_vars=True).items() if first.get(id(t), k) != k}
    return params, buffers, fn, tied
