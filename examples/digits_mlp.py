"""Your own network, end to end: an MLP on scikit-learn's handwritten digits (shipped in its wheel,
nothing downloaded), trained with optax, saved as a checkpoint, then λ̂ from the CLI and from Python.

    python examples/digits_mlp.py train                 # writes digits_mlp.npz (w* after 2,000 Adam steps)
    python -m lambda_hat model=user model.factory=examples.digits_mlp:target \\
        model.checkpoint=digits_mlp.npz sampler=sgld     # λ̂ from the CLI
    python examples/digits_mlp.py estimate              # the same from the Python API

``target()`` is the factory: it returns a lambda_hat.Target (loss, parameters, data) at freshly
initialised weights; ``model.checkpoint`` replaces them with the trained ones.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lambda_hat as lh


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """1,797 8×8 images scaled to [0, 1] (float32) and their labels 0-9 (int32)."""
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int32)


def init_params(widths: list[int], seed: int = 0) -> list[dict[str, jax.Array]]:
    keys = jax.random.split(jax.random.key(seed), len(widths) - 1)
    return [
        {"w": jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a), "b": jnp.zeros(b)}
        for k, a, b in zip(keys, widths[:-1], widths[1:])
    ]


def apply(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    """Logits of the MLP (ReLU hidden layers)."""
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def target(hidden: int = 32, seed: int = 0) -> lh.Target:
    """The factory: the MLP 64-hidden-10 on the digits with the cross-entropy loss."""
    x, y = load_digits()
    return lh.from_apply(apply, init_params([64, hidden, 10], seed), (x, y), loss="cross_entropy", name=f"digits_mlp{hidden}")


def train(steps: int = 2000, hidden: int = 32, seed: int = 0, path: str = "digits_mlp.npz") -> None:
    x, y = load_digits()
    params = init_params([64, hidden, 10], seed)
    opt = optax.adam(1e-2)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(
            lambda p: optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean()
        )(params)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    for _ in range(steps):
        params, state, loss = step(params, state)
    lh.save_npz(path, params)
    print(f"trained {steps} full-batch Adam steps: train loss {float(loss):.4g}; saved {path}")


def estimate(path: str = "digits_mlp.npz") -> None:
    t = target()
    t = t.with_params(lh.load_checkpoint(path, t.params))
    result = lh.estimate(t, "sgld", seed=0)
    print(result)
    print("warnings:", result.warnings or "none")


if __name__ == "__main__":
    {"train": train, "estimate": estimate}[sys.argv[1] if len(sys.argv) > 1 else "train"]()
