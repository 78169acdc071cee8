"""Your own network, end to end: an MLP on scikit-learn's handwritten digits (shipped in its wheel,
nothing downloaded), trained with optax, saved as checkpoints, then λ̂ from the CLI and from Python.

    python examples/digits_mlp.py train                 # writes digits_mlp.npz (w* after 2,000 Adam steps)
    python -m lambda_hat model=user model.factory=examples.digits_mlp:target \
        model.checkpoint=digits_mlp.npz                  # λ̂ from the CLI
    python examples/digits_mlp.py estimate              # the same from the Python API

    python examples/digits_mlp.py train --every 250     # also ckpts/step_*.npz (+ .json: step, losses)
    python -m lambda_hat --multirun model=user model.factory=examples.digits_mlp:target \
        model.checkpoint=ckpts/                          # λ̂ at every checkpoint: llc_over_training.png

``target()`` is the factory: it returns a lambda_hat.Target (loss, parameters, data: the 1,500
training images) at freshly initialised weights; ``model.checkpoint`` replaces them with trained
ones. The last 297 images are held out for the test loss recorded beside each checkpoint.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lambda_hat as lh


TRAIN = 1500  # the first 1,500 of the 1,797 images; the rest is the test set


def load_digits(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """8×8 images scaled to [0, 1] (float32) and their labels 0-9 (int32): the training or test split."""
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    x, y = (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int32)
    return (x[:TRAIN], y[:TRAIN]) if split == "train" else (x[TRAIN:], y[TRAIN:])


def init_params(widths: list[int], seed: int = 0) -> list[dict[str, jax.Array]]:
    keys = jax.random.split(jax.random.key(seed), len(widths) - 1)
    return [{"w": jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a), "b": jnp.zeros(b)} for k, a, b in zip(keys, widths[:-1], widths[1:])]


def apply(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    """Logits of the MLP (ReLU hidden layers)."""
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def target(hidden: int = 32, seed: int = 0) -> lh.Target:
    """The factory: the MLP 64-hidden-10 on the digits with the cross-entropy loss."""
    x, y = load_digits("train")
    return lh.from_apply(apply, init_params([64, hidden, 10], seed), (x, y), loss="cross_entropy", name=f"digits_mlp{hidden}")


def train(steps: int = 2000, every: int = 0, hidden: int = 32, seed: int = 0, path: str = "digits_mlp.npz") -> None:
    """Full-batch Adam; w* to path, and with every > 0 a checkpoint every that many steps in ckpts/
    (step_000250.npz + step_000250.json with the step and the train and test loss)."""
    import json
    from pathlib import Path

    x, y = load_digits("train")
    x_test, y_test = load_digits("test")
    params = init_params([64, hidden, 10], seed)
    opt = optax.adam(1e-2)
    state = opt.init(params)

    def mean_loss(p, xs, ys):
        return optax.softmax_cross_entropy_with_integer_labels(apply(p, xs), ys).mean()

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(mean_loss)(params, x, y)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    for t in range(1, steps + 1):
        params, state, loss = step(params, state)
        if every and t % every == 0:
            Path("ckpts").mkdir(exist_ok=True)
            lh.save_npz(f"ckpts/step_{t:06d}.npz", params)
            losses = {"train_loss": float(mean_loss(params, x, y)), "test_loss": float(mean_loss(params, x_test, y_test))}
            Path(f"ckpts/step_{t:06d}.json").write_text(json.dumps({"step": t, **losses}))
    lh.save_npz(path, params)
    print(
        f"trained {steps} full-batch Adam steps: train loss {float(mean_loss(params, x, y)):.4g}, "
        f"test loss {float(mean_loss(params, x_test, y_test)):.4g}; saved {path}" + (f" and ckpts/ every {every} steps" if every else "")
    )


def estimate(path: str = "digits_mlp.npz") -> None:
    t = target()
    t = t.with_params(lh.load_checkpoint(path, t.params))
    result = lh.estimate(t, "sgld", seed=0)
    print(result)
    print("warnings:", result.warnings or "none")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="the digits MLP: train it, or estimate λ̂ at digits_mlp.npz")
    ap.add_argument("command", choices=["train", "estimate"], nargs="?", default="train")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, default=0, help="also save a checkpoint every this many steps (ckpts/)")
    args = ap.parse_args()
    train(args.steps, args.every) if args.command == "train" else estimate()
