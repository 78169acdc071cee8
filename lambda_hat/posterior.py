"""The localized tempered posterior over a flat parameter vector.

    log p(w) = -n β L_n(w) - γ/2 |w - w*|²,   β = beta0 / log n

``Posterior`` is a pytree: data, w*, nβ, γ and L0 are array leaves, so jit-compiled samplers take
it as an argument (no large constants baked into the program, and changing γ or nβ does not
recompile); the loss function and sizes are static.

Full-data losses of a model that is linear in its input, f(x) = x P(w) (a deep linear network),
are computed from the Gram matrices of the data instead of the rows: with Δ = P(w) − P0 and the
residual R = Y − X P0 at a reference P0 (the teacher),

    L_n(w) = [tr(Δᵀ Σ Δ) − 2 tr(Δᵀ C) + r] / out,   Σ = XᵀX/n, C = XᵀR/n, r = |R|²/n,

which is the same number (exact algebra; Δ keeps it free of cancellation near w*) at a cost
independent of n: one full-data gradient of the default DLN at n = 1e5 drops from ~48 ms to
microseconds. Minibatch losses always use rows. ``posterior.gram_loss=false`` turns it off,
to time full-batch samplers as they would scale on a nonlinear model.

Otherwise a full-data loss is summed over chunks of ``eval_batch_size`` rows (``lax.map`` over
the chunks, each rematerialised under ``jax.checkpoint``), so neither the forward pass nor a
full-data gradient holds more than one chunk's activations whatever n is. The loss is a mean
over rows, so the row-weighted mean of the chunks' losses is L_n exactly (up to rounding).
"""

from __future__ import annotations

import fnmatch
import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from lambda_hat.targets.base import Target, TargetError

FlatLoss = Callable[[jax.Array, Any], jax.Array]


def nbeta_for(n: int, beta0: float) -> float:
    """n·β with β = beta0 / log n (Watanabe's WBIC inverse temperature)."""
    return n * beta0 / math.log(n)


def scalars(nbeta_n: int, beta0: float, gamma: float, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """(nβ, γ) as a posterior holds them (make_posterior; a batched grid's per-chain values)."""
    return jnp.asarray(nbeta_for(nbeta_n, beta0), dtype), jnp.asarray(gamma, dtype)


def chunked_mean_loss(loss_fn: FlatLoss, w: jax.Array, data: Any, n: int, chunk: int) -> jax.Array:
    """The mean loss over all n rows of data, computed chunk rows at a time (see the module docstring)."""
    if chunk >= n:
        return loss_fn(w, data)
    m, rest = divmod(n, chunk)
    head = jax.tree.map(lambda a: a[: m * chunk].reshape(m, chunk, *a.shape[1:]), data)
    one = jax.checkpoint(loss_fn)  # keep only the chunk's inputs for the backward pass
    total = jnp.sum(jax.lax.map(lambda b: one(w, b), head)) * chunk
    if rest:
        total = total + one(w, jax.tree.map(lambda a: a[m * chunk :], data)) * rest
    return total / n


@dataclass(frozen=True)
class Posterior:
    data: Any  # pytree of arrays, leading axis n (floating leaves in the posterior's dtype)
    w_star: jax.Array  # flat
    nbeta: jax.Array
    gamma: jax.Array
    L0: jax.Array  # L_n(w*) in the posterior's precision
    gram: dict[str, jax.Array] | None  # sufficient statistics of a linear model (see above), or None
    loss_fn: FlatLoss = field(metadata=dict(static=True))  # (w_flat, batch) -> mean loss
    n: int = field(metadata=dict(static=True))  # rows of data
    d: int = field(metadata=dict(static=True))
    # (w_flat, gram) -> L_n(w) from the sufficient statistics, when gram is set
    gram_loss_fn: Callable[[jax.Array, dict[str, jax.Array]], jax.Array] | None = field(default=None, metadata=dict(static=True))
    eval_batch_size: int = field(default=8192, metadata=dict(static=True))  # rows per full-loss chunk
    # Record a minibatch loss as L_b(w) - L_b(w*) + L_n(w*) (see recorded_loss)
    control_variate: bool = field(default=True, metadata=dict(static=True))
    # A weight-restricted posterior (posterior.restrict): only the coordinates `selected` of the
    # flat parameter vector are sampled (w, w_star are those), the rest held at w_full's values.
    w_full: jax.Array | None = None
    selected: jax.Array | None = None
    # A data-refined posterior (posterior.measure_on): the loss inside λ̂ — L0 and every draw's
    # loss — is L on this second dataset (all its rows, in chunks), while sampling uses `data`.
    measure_data: Any = None
    measure_L0: jax.Array | None = None
    measure_n: int = field(default=0, metadata=dict(static=True))

    @property
    def dtype(self) -> jnp.dtype:
        return self.w_star.dtype

    def all_params(self, w: jax.Array) -> jax.Array:
        """The model's whole flat parameter vector for the sampled coordinates w."""
        if self.selected is None:
            return w
        return self.w_full.at[self.selected].set(w)

    def full_loss(self, w: jax.Array) -> jax.Array:
        """L_n(w) on the whole data set."""
        if self.gram is not None and self.gram_loss_fn is not None:
            return self.gram_loss_fn(self.all_params(w), self.gram)
        return chunked_mean_loss(self.loss_fn, self.all_params(w), self.data, self.n, self.eval_batch_size)

    def batch_loss(self, w: jax.Array, idx: jax.Array) -> jax.Array:
        """Mean loss on the rows idx (an unbiased estimate of L_n(w) for uniform idx)."""
        return self.loss_fn(self.all_params(w), jax.tree.map(lambda a: a[idx], self.data))

    def recorded_loss(self, loss: jax.Array, idx: jax.Array) -> jax.Array:
        """The per-draw loss a minibatch sampler records, from L_b(w) on the rows idx.

        L_b(w) is an unbiased estimate of L_n(w), but its sampling noise is that of the per-row
        losses themselves: sd ≈ sd_i(ℓ_i)/√B, i.e. nβ·sd_i(ℓ_i)/√B per draw of λ̂ — on a network
        whose loss at w* is not ~0 (labels with noise, classification), hundreds of times λ itself
        (softmax regression, n = 1e5, B = 500: ~230 per draw for λ = 5), so λ̂'s standard error
        stays large however long the chains run. With the control variate, the same rows at w*:
        L_b(w) − L_b(w*) + L_n(w*) has the same mean, L_n(w), and a noise that shrinks with
        |w − w*| (one forward pass on the batch per step, no gradient). On a noiseless target at
        its teacher (the DLNs) L_b(w*) ≈ 0 and nothing changes. ``posterior.control_variate=false``
        records L_b(w) as devinterp does.
        """
        if not self.control_variate:
            return loss
        at_w_star = jax.lax.stop_gradient(self.batch_loss(self.w_star, idx))
        return loss - at_w_star + self.L0

    @property
    def measuring(self) -> bool:
        return self.measure_data is not None

    def measured_loss(self, w: jax.Array) -> jax.Array:
        """L(w) on the measure dataset, all its rows (a data-refined λ̂'s per-draw loss)."""
        return chunked_mean_loss(self.loss_fn, self.all_params(w), self.measure_data, self.measure_n, self.eval_batch_size)

    @property
    def llc_L0(self) -> jax.Array:
        """The L(w*) that λ̂ subtracts: on the measure dataset when there is one."""
        return self.measure_L0 if self.measuring else self.L0

    def localization(self, w: jax.Array) -> jax.Array:
        return 0.5 * self.gamma * jnp.sum((w - self.w_star) ** 2)

    def logdensity(self, w: jax.Array) -> jax.Array:
        """Full-data log density (up to a constant)."""
        return -self.nbeta * self.full_loss(w) - self.localization(w)

    def loss_of_logdensity(self, logdensity: jax.Array, w: jax.Array) -> jax.Array:
        """L_n(w) back from a full-batch sampler's cached log density at w (no other forward pass)."""
        return -(logdensity + self.localization(w)) / self.nbeta

    def llc_of_loss(self, loss: jax.Array) -> jax.Array:
        """The per-draw λ̂ contribution nβ (L(w) - L0)."""
        return self.nbeta * (loss - self.L0)


jax.tree_util.register_dataclass(Posterior)


def gram_statistics(x: np.ndarray, y: np.ndarray, p0: np.ndarray) -> dict[str, np.ndarray]:
    """Σ = XᵀX/n, C = XᵀR/n, r = |R|²/n with R = Y − X P0, in float64 (see the module docstring)."""
    x, y, p0 = (np.asarray(a, np.float64) for a in (x, y, p0))
    n = x.shape[0]
    resid = y - x @ p0
    return {"sigma": x.T @ x / n, "c": x.T @ resid / n, "r": np.asarray(np.sum(resid**2) / n), "p0": p0}


def _gram_mse(product: Callable[[Any], jax.Array], out: int) -> Callable[[Any, dict[str, jax.Array]], jax.Array]:
    def loss(params: Any, g: dict[str, jax.Array]) -> jax.Array:
        delta = product(params) - g["p0"]
        return (jnp.sum(delta * (g["sigma"] @ delta)) - 2 * jnp.sum(delta * g["c"]) + g["r"]) / out

    return loss


@functools.lru_cache(maxsize=64)
def _loss_functions(
    loss: Callable, product: Callable | None, structure: Any, shapes: tuple[tuple[int, ...], ...], dtype: str, out: int
) -> tuple[FlatLoss, Callable | None]:
    """(loss_fn, gram_loss_fn) on flat parameters, for a target's loss and parameter structure.

    The same objects for every target of that structure (a sweep's jobs differ mostly in seeds):
    they are static fields of the Posterior, so they are part of every compiled sampler's cache
    key, and new closures per job would make every job trace and compile its programs again.
    """
    jdtype = jnp.dtype(dtype)
    _, unravel = ravel_pytree(jax.tree.unflatten(structure, [jnp.zeros(s, jdtype) for s in shapes]))

    def loss_fn(w: jax.Array, batch: Any) -> jax.Array:
        return loss(unravel(w), batch)

    gram_loss_fn = None
    if product is not None:
        by_params = _gram_mse(product, out)
        gram_loss_fn = lambda w, g: by_params(unravel(w), g)  # noqa: E731
    return loss_fn, gram_loss_fn


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _full_loss(loss_fn: FlatLoss, w: jax.Array, data: Any, n: int, chunk: int) -> jax.Array:
    return chunked_mean_loss(loss_fn, w, data, n, chunk)


def _cast_data(data: Any, jdtype: jnp.dtype) -> Any:
    """Floating leaves in the posterior's dtype; integer leaves (labels, tokens, masks) as they are."""

    def cast(a: Any) -> jax.Array:
        a = jnp.asarray(a) if not isinstance(a, np.ndarray) else a
        return jnp.asarray(a, jdtype) if jnp.issubdtype(a.dtype, jnp.floating) else jnp.asarray(a)

    return jax.tree.map(cast, data)


def make_posterior(
    target: Target,
    beta0: float,
    gamma: float,
    dtype: str,
    *,
    gram_loss: bool = True,
    eval_batch_size: int = 8192,
    nbeta_n: int | None = None,
    control_variate: bool = True,
    restrict: Sequence[str] | None = None,
    measure: Any = None,
) -> Posterior:
    """Cast the target to ``dtype`` and flatten its parameters; call inside the dtype's x64 scope.

    gram_loss: full-data losses from the Gram matrices when the target is linear in its input.
    eval_batch_size: rows per chunk of a full-data loss. nbeta_n: the n in nβ = n·beta0/log n
    (default: the target's sample size; a minibatch size for devinterp's convention).
    control_variate: minibatch losses recorded with the control variate (Posterior.recorded_loss).
    restrict: sample only the parameters whose key paths match one of these patterns (fnmatch, e.g.
    "1/*" or "params/Dense_0/kernel"; see parameter_paths), the rest held at w* (a weight-refined
    LLC); None = all. measure: a second dataset shaped like the target's data on which λ̂'s loss is
    measured (a data-refined LLC: Posterior.measure_data); None = the sampling data.

    Raises TargetError when the loss at w* is not a finite scalar.
    """
    jdtype = jnp.dtype(dtype)
    template = jax.tree.map(lambda a: jnp.asarray(a, jdtype), target.w_star)
    w_star, _ = ravel_pytree(template)
    leaves, structure = jax.tree.flatten(template)
    w_full, selected = w_star, None
    if restrict is not None:
        selected = jnp.asarray(select(template, expand_groups(restrict, target.groups)))
        w_star = w_full[selected]
    use_gram = gram_loss and target.product is not None
    data = _cast_data(target.data, jdtype)
    out = int(np.shape(data["y"])[1]) if use_gram else 0
    key = (target.loss, target.product if use_gram else None, structure, tuple(tuple(a.shape) for a in leaves), jdtype.name, out)
    try:
        hash(key)
    except TypeError:  # an unhashable callable loss (e.g. a module holding arrays): build it uncached
        loss_fn, gram_loss_fn = _loss_functions.__wrapped__(*key)
    else:
        loss_fn, gram_loss_fn = _loss_functions(*key)
    n = target.n_rows
    chunk = int(eval_batch_size)
    gram = None
    if use_gram:
        p0 = np.asarray(target.product(target.w_star), np.float64)
        gram = {k: jnp.asarray(v, jdtype) for k, v in gram_statistics(target.x, target.y, p0).items()}
        L0 = jax.jit(gram_loss_fn)(w_full, gram)
    else:
        try:
            shape = jax.eval_shape(loss_fn, w_full, jax.tree.map(lambda a: a[: min(n, chunk)], data)).shape
        except Exception as e:  # the user's loss does not run on this data: say where, in one line
            raise TargetError("loss", f"fails on a batch of the data: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from e
        if shape != ():
            raise TargetError("loss", f"must return a scalar (the mean loss over the batch), returned shape {list(shape)}")
        L0 = _full_loss(loss_fn, w_full, data, n, chunk)
    if not np.isfinite(float(L0)):
        raise TargetError("loss", f"is {float(L0)} at w* on the full data; λ̂ needs a finite loss at w*")
    measure_data, measure_L0, measure_n = None, None, 0
    if measure is not None:
        measure_data = _cast_data(measure, jdtype)
        measure_n = int(np.shape(jax.tree.leaves(measure_data)[0])[0])
        measure_L0 = _full_loss(loss_fn, w_full, measure_data, measure_n, chunk)
        if not np.isfinite(float(measure_L0)):
            raise TargetError("posterior.measure_on", f"the loss at w* on that subset is {float(measure_L0)}; λ̂ needs a finite one")
    nbeta, gamma_ = scalars(nbeta_n or target.sample_size, beta0, gamma, jdtype)
    return Posterior(
        data=data,
        w_star=w_star,
        nbeta=nbeta,
        gamma=gamma_,
        L0=L0,
        gram=gram,
        loss_fn=loss_fn,
        gram_loss_fn=gram_loss_fn,
        n=n,
        d=int(w_star.size),
        eval_batch_size=chunk,
        control_variate=bool(control_variate),
        w_full=None if selected is None else w_full,
        selected=selected,
        measure_data=measure_data,
        measure_L0=measure_L0,
        measure_n=measure_n,
    )


def parameter_paths(params: Any) -> list[str]:
    """The key path of each parameter array, as posterior.restrict patterns match them ("0", "1/w",
    "params/Dense_0/kernel", "0.weight")."""
    from lambda_hat.targets.checkpoints import key_of

    return [key_of(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


_INDEX = re.compile(r"^(?P<path>.+?)\[(?P<index>[-0-9:, .]*[:,.][-0-9:, .]*|-?\d+)\]$")


def _parse_index(text: str) -> tuple[Any, ...]:
    """A numpy basic index from "0", ":, 2", "0:16", "..., 3:5" (integers, slices, an ellipsis)."""
    out: list[Any] = []
    for part in text.split(","):
        part = part.strip()
        if part == "...":
            out.append(Ellipsis)
        elif ":" in part:
            bounds = [int(b) if b.strip() else None for b in part.split(":")]
            if len(bounds) > 3:
                raise ValueError(part)
            out.append(slice(*bounds))
        else:
            out.append(int(part))
    return tuple(out)


def expand_groups(patterns: Sequence[str], groups: dict[str, Sequence[str]] | None) -> list[str]:
    """Patterns with the names of a target's parameter groups (Target.groups, e.g. "l0h1" for one
    attention head's Q/K/V/O slices) replaced by the groups' patterns."""
    out: list[str] = []
    for p in patterns:
        out.extend(groups[p] if groups and p in groups else [p])
    return out


def select(params: Any, patterns: Sequence[str]) -> np.ndarray:
    """Indices into the flat parameter vector (ravel_pytree's order) of the parameters the patterns
    name: an array by its key path (fnmatch: "1/*", "params/Dense_0/kernel"), or part of one by a
    trailing numpy index of integers and slices ("attn/query/kernel[:, 0]" = head 0 of a Flax
    attention kernel shaped (features, heads, head_dim); "0.self_attn.in_proj_weight[0:16]").
    TargetError naming the paths when a pattern matches nothing or its index does not apply."""
    paths = parameter_paths(params)
    shapes = [np.shape(a) for a in jax.tree.leaves(params)]
    sizes = [int(np.prod(s, dtype=int)) for s in shapes]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
    chosen: dict[int, np.ndarray] = {}
    unmatched = []
    for pattern in map(str, patterns):
        m = _INDEX.match(pattern)
        glob_part, index = (m["path"], m["index"]) if m else (pattern, None)
        hits = [i for i, path in enumerate(paths) if fnmatch.fnmatchcase(path, glob_part)]
        if not hits:
            unmatched.append(pattern)
        for i in hits:
            flat = np.arange(starts[i], starts[i] + sizes[i]).reshape(shapes[i])
            if index is not None:
                try:
                    flat = flat[_parse_index(index)]
                except (ValueError, IndexError, TypeError) as e:
                    raise TargetError(
                        "posterior.restrict", f"{pattern!r}: index [{index}] does not apply to {paths[i]} of shape {list(shapes[i])} ({e})"
                    ) from None
            chosen[i] = np.union1d(chosen.get(i, np.array([], int)), np.ravel(flat))
    if unmatched:
        listing = ", ".join(paths[:24]) + (", ..." if len(paths) > 24 else "")
        raise TargetError("posterior.restrict", f"{unmatched} matches no parameter; the parameters are: {listing}")
    return np.concatenate([chosen[i] for i in sorted(chosen)]).astype(int)
