"""Factories for `model=user` in the tests (model.factory=tests.factories:NAME): each returns a
lambda_hat.Target, as a user's own module would."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import lambda_hat as lh


def dln(widths: list[int] | None = None, true_rank: int | None = None, n: int = 100_000, seed: int = 0) -> lh.Target:
    """The built-in DLN target (same teacher, data and loss) written as a user would: its loss
    is a plain function of (params, batch); no Gram-matrix shortcut."""
    from lambda_hat.composition import compose_config
    from lambda_hat.targets import build_target

    overrides = [f"model.widths=[{','.join(map(str, widths or [10, 20, 20, 10]))}]", f"data.n={n}", f"seed={seed}"]
    if true_rank is not None:
        overrides.append(f"model.true_rank={true_rank}")
    built = build_target(compose_config(overrides))

    def loss(params: list[jax.Array], batch: dict[str, jax.Array]) -> jax.Array:
        pred = batch["x"]
        for w in params:
            pred = pred @ w
        return jnp.mean((pred - batch["y"]) ** 2)

    return lh.Target.from_loss(loss, built.w_star, built.data, name="dln_user", llc_true=built.llc_true)


def linear(n: int = 2000, d_in: int = 3, seed: int = 0, rows_y: int | None = None) -> lh.Target:
    """y = x w + noise; rows_y != n gives data whose leading axes differ (a bad input)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d_in))
    w = rng.normal(size=(d_in, 1))
    y = x @ w + 0.1 * rng.normal(size=(n, 1))
    w_hat = np.linalg.lstsq(x, y, rcond=None)[0]  # the fit: w* is the minimum of L_n
    y = y[: rows_y or n]
    return lh.Target.from_loss(lambda p, b: jnp.mean((b["x"] @ p["w"] - b["y"]) ** 2), {"w": w_hat}, {"x": x, "y": y})


def not_a_target() -> dict:
    return {"loss": None}


def vector_loss(n: int = 500) -> lh.Target:
    x = np.random.default_rng(0).normal(size=(n, 2))
    return lh.Target.from_loss(lambda p, b: (b["x"] @ p) ** 2, np.ones(2), {"x": x})


def nan_loss(n: int = 500) -> lh.Target:
    x = np.random.default_rng(0).normal(size=(n, 2))
    return lh.Target.from_loss(lambda p, b: jnp.mean(jnp.log(b["x"] @ p - 100.0)), np.ones(2), {"x": x})


def _classification(n: int, p: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x ~ N(0, I_p), labels from a random softmax teacher (float32 x, int32 labels)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p))
    logits = x @ rng.normal(size=(p, k)) + rng.normal(size=k)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    y = (probs.cumsum(1) > rng.uniform(size=(n, 1))).argmax(1)
    return x.astype(np.float32), y.astype(np.int32)


def classifier(framework: str = "jax", n: int = 600, hidden: int = 8, seed: int = 0) -> lh.Target:
    """A 5-hidden-3 ReLU MLP classifier at its initial weights, in the framework named."""
    x, y = _classification(n, 5, 3, seed)
    if framework == "jax":
        from examples.digits_mlp import apply, init_params

        return lh.from_apply(apply, init_params([5, hidden, 3], seed), (x, y), loss="cross_entropy", name="clf_jax")
    if framework == "flax_nnx":
        from flax import nnx

        rngs = nnx.Rngs(seed)
        net = nnx.Sequential(nnx.Linear(5, hidden, rngs=rngs), jax.nn.relu, nnx.Linear(hidden, 3, rngs=rngs))
        return lh.from_flax(net, (x, y), loss="cross_entropy", name="clf_nnx")
    if framework == "flax_linen":
        import flax.linen as nn

        class MLP(nn.Module):
            @nn.compact
            def __call__(self, x: jax.Array) -> jax.Array:
                return nn.Dense(3)(nn.relu(nn.Dense(hidden)(x)))

        net = MLP()
        return lh.from_flax(net, (x, y), loss="cross_entropy", variables=net.init(jax.random.key(seed), x[:1]), name="clf_linen")
    if framework == "equinox":
        import equinox as eqx

        net = eqx.nn.MLP(5, 3, hidden, 1, activation=jax.nn.relu, key=jax.random.key(seed))
        return lh.from_equinox(net, (x, y), loss="cross_entropy", name="clf_eqx")
    if framework == "torch":
        import torch

        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(5, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 3))
        return lh.from_torch(net, (x, y), loss="cross_entropy", name="clf_torch")
    raise ValueError(f"unknown framework {framework!r}")


def raises(n: int = 10) -> lh.Target:
    raise FileNotFoundError(f"no data file for n={n}")


def torch_bn(seed: int = 0) -> lh.Target:
    """A torch classifier with batch norm, at its initial weights and statistics (a fresh module)."""
    import torch

    x, y = _classification(256, 5, 3, seed=3)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    return lh.from_torch(net, (x, y), loss="cross_entropy", name="torch_bn")


def nnx_bn(seed: int = 0) -> lh.Target:
    from flax import nnx

    x, y = _classification(256, 5, 3, seed=3)
    rngs = nnx.Rngs(seed)
    net = nnx.Sequential(nnx.Linear(5, 16, rngs=rngs), nnx.BatchNorm(16, rngs=rngs), jax.nn.relu, nnx.Linear(16, 3, rngs=rngs))
    return lh.from_flax(net, (x, y), loss="cross_entropy")


def refined_linear(n: int = 20000, n_sub: int = 2000, seed: int = 0) -> lh.Target:
    """y = x w + noise on 4 inputs (λ = 2 at the fit), with a subset "two_inputs" whose rows use
    only the first two inputs: a data-refined λ measured there is 1 (two directions count)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = x @ rng.normal(size=(4, 1)) + 0.1 * rng.normal(size=(n, 1))
    w_hat = np.linalg.lstsq(x, y, rcond=None)[0]
    xs = np.concatenate([rng.normal(size=(n_sub, 2)), np.zeros((n_sub, 2))], axis=1)
    subset = {"x": xs, "y": xs @ w_hat}  # noiseless at w*: L(w*) = 0 there
    loss = lambda p, b: jnp.mean((b["x"] @ p["w"] - b["y"]) ** 2)  # noqa: E731
    return lh.Target.from_loss(loss, {"w": w_hat}, {"x": x, "y": y}, subsets={"two_inputs": subset})
