"""The Target: what λ̂ is estimated of — a loss, the parameters w* and the data.

Every estimator sees a target only through ``loss(params, batch)`` (the mean loss over a batch's
rows), the parameter pytree w* and a data pytree whose leaves share a leading axis of n rows. The
built-in targets (lambda_hat.registry.TARGETS) and a user's own network (``Target.from_loss``, the
adapters in lambda_hat.adapters, or ``model=user`` on the command line) are all this one type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lambda_hat.config import ConfigError

Loss = Callable[[Any, Any], Any]


class TargetError(ConfigError):
    """A target that cannot be estimated as given (bad data, checkpoint, factory or loss); the
    message is one line naming what to fix (the CLI prints it and exits 2)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(key, message=f"{key}: {message}")


@dataclass(frozen=True)
class Target:
    """A loss, its parameters w* and its data.

    Attributes:
        loss: ``loss(params, batch) -> scalar``, the mean loss over the rows of ``batch`` (a pytree
            shaped like ``data`` with fewer rows). Pure JAX: it is jitted, differentiated and
            vmapped over chains.
        w_star: the parameters at which λ is estimated (any pytree of float arrays).
        data: a pytree of arrays sharing a leading axis of length ``n_rows``.
        name: a short name (run names, metrics' ``model``).
        target_id: identifies the target in caches and tables (a hash for built-in and CLI targets).
        llc_true: the true λ where known (synthetic targets), else None.
        meta: anything else worth recording (true rank, training info, factory, checkpoint).
        n: the sample size in nβ = n·beta0/log n; None = the data's rows.
        product: P(params) for a model linear in its input with the MSE loss, f(x) = x @ P
            (full-data losses then use the Gram matrix, see lambda_hat.posterior); else None.
    """

    loss: Loss
    w_star: Any
    data: Any
    name: str = "user"
    target_id: str = ""
    llc_true: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    n: int | None = None
    product: Callable[[Any], Any] | None = None
    # State the loss uses but does not sample (batch-norm statistics, torch buffers), as a mutable
    # dict of arrays by name (the adapters' loss reads it): a checkpoint restores it with w*.
    held: dict[str, Any] | None = None
    # True when the model holds float state (batch statistics) that no checkpoint can restore
    # here (Flax NNX): loading a checkpoint is then refused rather than silently mixing states.
    held_unloadable: bool = False
    # Named second datasets for a data-refined λ̂ (posterior.measure_on): pytrees shaped like data
    # (same structure, same per-row shapes), e.g. one class or one token type.
    subsets: dict[str, Any] = field(default_factory=dict)
    # Named parameter groups for a weight-refined λ̂: posterior.restrict=[l0h1] stands for these
    # patterns (e.g. one attention head's Q/K/V/O slices; lambda_hat.posterior.select).
    groups: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_loss(
        cls,
        loss_fn: Loss,
        params: Any,
        data: Any,
        *,
        n: int | None = None,
        name: str | None = None,
        llc_true: float | None = None,
        subsets: dict[str, Any] | None = None,
        groups: dict[str, list[str]] | None = None,
    ) -> Target:
        """A target from a plain loss function, its parameters w* and its data.

        Args:
            loss_fn: ``loss_fn(params, batch)`` returns the mean loss over the batch (a scalar).
            params: w*, any JAX pytree of float arrays (e.g. a trained network's weights).
            data: a pytree of arrays (x, y, tokens, masks, ...) with a shared leading axis.
            n: the sample size entering nβ = n·β (default: the data's number of rows).
            name: a short name for run names and tables (default "user").
            llc_true: the true λ, when known (then λ̂'s relative error is reported).
            subsets: named second datasets shaped like ``data`` (e.g. ``{"class_3": ...}``): a
                data-refined λ̂ measures its loss on one of them (``posterior.measure_on``).
            groups: named parameter groups, name -> restrict patterns (e.g. ``{"l0h1":
                ["attn/query/kernel[:, 1]", ...]}``): ``posterior.restrict=[l0h1]`` samples them.

        Returns:
            A Target whose data's leading axes were checked to agree.

        Example:
            >>> import jax.numpy as jnp, numpy as np
            >>> import lambda_hat as lh
            >>> x = np.random.default_rng(0).normal(size=(1000, 3)); y = x @ np.ones((3, 1))
            >>> loss = lambda w, b: jnp.mean((b["x"] @ w - b["y"]) ** 2)
            >>> t = lh.Target.from_loss(loss, jnp.ones((3, 1)), {"x": x, "y": y})
            >>> t.n_rows, t.d
            (1000, 3)
        """
        if not callable(loss_fn):
            raise TargetError("loss", f"must be a callable loss(params, batch), got {type(loss_fn).__name__}")
        target = cls(
            loss=loss_fn,
            w_star=params,
            data=data,
            name=name or "user",
            llc_true=llc_true,
            n=n,
            subsets=dict(subsets or {}),
            groups={str(k): [str(p) for p in v] for k, v in (groups or {}).items()},
        )
        target.check_data()
        return target

    @property
    def params(self) -> Any:
        """w*, the parameters at which λ is estimated (same as ``w_star``)."""
        return self.w_star

    @property
    def n_rows(self) -> int:
        return int(np.shape(jax.tree.leaves(self.data)[0])[0])

    @property
    def sample_size(self) -> int:
        """The n in nβ: ``n`` if given, else the data's rows."""
        return int(self.n) if self.n is not None else self.n_rows

    @property
    def d(self) -> int:
        return int(sum(np.size(a) for a in jax.tree.leaves(self.w_star)))

    # The built-in regression targets' data, {"x": (n, in), "y": (n, out)}.
    @property
    def x(self) -> np.ndarray:
        return self.data["x"]

    @property
    def y(self) -> np.ndarray:
        return self.data["y"]

    @property
    def kind(self) -> str:
        return self.name

    def with_params(self, params: Any) -> Target:
        """The same target at other parameters (a checkpoint): the pytree structure, shapes and
        dtypes must match w*'s (TargetError otherwise)."""
        check_like(params, self.w_star, "params")
        return replace(self, w_star=params)

    def with_subset(self, name: str, data: Any) -> Target:
        """The same target with one more named dataset for a data-refined λ̂ (checked like data)."""
        target = replace(self, subsets={**self.subsets, str(name): data})
        target.check_data()
        return target

    def with_group(self, name: str, patterns: list[str]) -> Target:
        """The same target with one more named parameter group (posterior.restrict=[name])."""
        return replace(self, groups={**self.groups, str(name): [str(p) for p in patterns]})

    def subset(self, name: str) -> Any:
        """The named subset's data; TargetError listing the subsets when there is none of that name."""
        if name not in self.subsets:
            have = ", ".join(sorted(self.subsets)) or "none (give them with Target.from_loss(..., subsets={...}))"
            raise TargetError("posterior.measure_on", f"{name!r}: the target has no such subset; it has: {have}")
        return self.subsets[name]

    def check_data(self) -> None:
        """Raise TargetError unless data is a non-empty pytree of arrays with one leading length."""
        leaves = jax.tree.leaves(self.data)
        if not leaves:
            raise TargetError("data", "has no arrays (give a pytree of arrays with a leading axis of n rows)")
        paths = [jax.tree_util.keystr(p) or "data" for p, _ in jax.tree_util.tree_flatten_with_path(self.data)[0]]
        lengths = []
        for path, leaf in zip(paths, leaves):
            shape = np.shape(leaf)
            if len(shape) == 0:
                raise TargetError("data", f"{path} is a scalar; every array needs a leading axis of n rows")
            lengths.append(shape[0])
        if len(set(lengths)) > 1:
            listing = ", ".join(f"{p}: {n}" for p, n in zip(paths, lengths))
            raise TargetError("data", f"leading axes differ ({listing}); every array needs the same number of rows")
        if lengths[0] < 2:
            raise TargetError("data", f"has {lengths[0]} row(s); needs n >= 2 (beta = beta0 / log n)")
        if not jax.tree.leaves(self.w_star):
            raise TargetError("params", "has no arrays")
        bad = [np.asarray(a).dtype for a in jax.tree.leaves(self.w_star) if not jnp.issubdtype(np.asarray(a).dtype, jnp.floating)]
        if bad:
            raise TargetError("params", f"must be float arrays (found {bad[0]}); keep integer state out of params")
        if self.n is not None and self.n < 2:
            raise TargetError("n", f"is {self.n}; must be >= 2")
        for name, subset in self.subsets.items():
            if jax.tree.structure(subset) != jax.tree.structure(self.data):
                raise TargetError(f"subsets[{name!r}]", "pytree structure differs from the data's")
            rows = set()
            for a, b in zip(jax.tree.leaves(subset), leaves):
                if np.shape(a)[1:] != np.shape(b)[1:] or np.ndim(a) == 0:
                    raise TargetError(
                        f"subsets[{name!r}]", f"an array has shape {list(np.shape(a))}, the data's {list(np.shape(b))} (rows may differ, not the rest)"
                    )
                rows.add(np.shape(a)[0])
            if len(rows) > 1 or min(rows) < 1:
                raise TargetError(f"subsets[{name!r}]", f"leading axes differ or are empty ({sorted(rows)})")


def check_like(new: Any, template: Any, what: str) -> None:
    """TargetError unless new has template's pytree structure and each leaf its shape and dtype."""
    new_leaves, new_def = jax.tree_util.tree_flatten_with_path(new)
    old_leaves, old_def = jax.tree_util.tree_flatten_with_path(template)
    if len(new_leaves) != len(old_leaves):
        raise TargetError(what, f"has {len(new_leaves)} arrays, the model's parameters {len(old_leaves)}")
    for (path, a), (_, b) in zip(new_leaves, old_leaves):
        name = jax.tree_util.keystr(path) or "params"
        a_shape, b_shape = np.shape(a), np.shape(b)
        if a_shape != b_shape:
            raise TargetError(what, f"{name} has shape {list(a_shape)}, the model expects {list(b_shape)}")
        a_dt, b_dt = np.asarray(a).dtype, np.asarray(b).dtype
        if a_dt != b_dt:
            raise TargetError(what, f"{name} has dtype {a_dt}, the model expects {b_dt}")
    if new_def != old_def:
        raise TargetError(what, "pytree structure differs from the model's parameters")
