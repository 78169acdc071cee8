"""Your own network from the command line: ``model=user model.factory=PKG.MODULE:FUNCTION``.

The factory is a function that returns a lambda_hat.Target (``Target.from_loss`` or one of the
adapters ``from_flax``, ``from_equinox``, ``from_torch``); it is called with ``model.args`` as
keyword arguments. Only the module the user names is imported: nothing else in a config names
code. ``model.checkpoint`` then loads other weights into the target's parameters (checked leaf by
leaf), e.g. each checkpoint saved along training. The target's id hashes the factory, its
arguments and the checkpoint file, so tables and caches tell targets apart.

Bad input is one line (TargetError, exit 2 from the CLI): a factory that cannot be imported or
returns something else, a checkpoint that does not fit, bad data.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lambda_hat.models.user import FACTORY_PATTERN
from lambda_hat.targets import checkpoints, store
from lambda_hat.targets.base import Target, TargetError

log = logging.getLogger(__name__)

FACTORY_RE = re.compile(FACTORY_PATTERN)

# Targets built in this process, by spec: the CLI's pre-flight check builds the target (so a bad
# factory or checkpoint is one line before anything is written) and the run then reuses it.
_BUILT: dict[str, Target] = {}


def load_factory(spec: str) -> Any:
    """The function "pkg.module:function" names (the current directory is importable, as for
    ``python -m``); TargetError if it cannot be imported or is not callable."""
    if not FACTORY_RE.match(spec or ""):
        raise TargetError("model.factory", f"{spec!r} must name a function as PKG.MODULE:FUNCTION (e.g. mypkg.nets:make_target)")
    module_name, func = spec.split(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise TargetError("model.factory", f"cannot import {module_name}: {type(e).__name__}: {' '.join(str(e).split())[:200]}") from e
    fn = getattr(module, func, None)
    if not callable(fn):
        raise TargetError("model.factory", f"{module_name} has no function {func!r}")
    return fn


def target_key(cfg: DictConfig) -> tuple[dict[str, Any], str]:
    """(spec, target id): the factory, its arguments and the checkpoint's sha256."""
    model = cfg.model
    spec: dict[str, Any] = {"factory": model.factory, "args": OmegaConf.to_container(model.args, resolve=True)}
    if model.checkpoint:
        path = Path(model.checkpoint).expanduser()
        if not path.exists():
            raise TargetError("model.checkpoint", f"{path} does not exist")
        spec["checkpoint_sha256"] = checkpoints.sha256(path)
    return spec, store.target_id({"user": spec})


def build(cfg: DictConfig, cache_dir: Path | None = None) -> Target:
    """The target the factory returns, at the checkpoint's weights when one is given."""
    del cache_dir  # the factory's own data and the checkpoint are the source; nothing to cache
    model = cfg.model
    if not model.factory:
        raise TargetError("model.factory", "is required with model=user (PKG.MODULE:FUNCTION returning a lambda_hat.Target)")
    spec, tid = target_key(cfg)
    if tid in _BUILT:
        return _BUILT[tid]
    fn = load_factory(model.factory)
    args = spec["args"]
    try:
        inspect.signature(fn).bind(**args)
    except TypeError as e:
        raise TargetError("model.args", f"{model.factory}({', '.join(f'{k}=' for k in args)}): {' '.join(str(e).split())[:200]}") from e
    except ValueError:  # no signature to check (a builtin): the call says
        pass
    try:
        target = fn(**args)
    except TargetError:
        raise
    except Exception as e:  # the user's code failed: one line naming it (HYDRA_FULL_ERROR=1 for the traceback)
        raise TargetError("model.factory", f"{model.factory} raised {type(e).__name__}: {' '.join(str(e).split())[:200]}") from e
    if not isinstance(target, Target):
        raise TargetError("model.factory", f"{model.factory} returned {type(target).__name__}, not a lambda_hat.Target")
    target.check_data()
    meta = {**target.meta, "factory": model.factory}
    if model.checkpoint:
        path = Path(model.checkpoint).expanduser()
        if target.held_unloadable:
            raise TargetError(
                "model.checkpoint",
                f"{model.factory} returns a model with batch statistics that a checkpoint of its "
                "parameters cannot restore; load the checkpoint inside the factory (nnx.update) and leave model.checkpoint unset",
            )
        extra = {"equinox_static": target.meta.get("equinox_static"), "tied": target.meta.get("tied")}
        params = checkpoints.load(path, target.w_star, model.checkpoint_format, held=target.held, **extra)
        target = target.with_params(params)
        from lambda_hat.sweeps.checkpoints import training_info

        meta |= {"checkpoint": str(path), "checkpoint_sha256": spec["checkpoint_sha256"], **training_info(path)}
    target = replace(target, target_id=tid, meta=meta, name=target.name if target.name != "user" else func_name(model.factory))
    log.info("target %s (%s, n=%d, d=%d) built by %s", tid, target.name, target.n_rows, target.d, model.factory)
    _BUILT.clear()  # one at a time: a target may hold a large data set
    _BUILT[tid] = target
    return target


def func_name(factory: str) -> str:
    return factory.rsplit(":", 1)[-1]
