"""A small CNN on scikit-learn's handwritten digits (8×8, shipped in its wheel), trained with optax,
checkpointed along training, and λ̂ at every checkpoint.

    python examples/digits_cnn.py curve      # train (checkpoints in cnn_ckpts/), then λ̂ at each
    python examples/digits_cnn.py train      # only train: digits_cnn.npz + cnn_ckpts/step_*.npz (+ .json)
    python -m lambda_hat model=user model.factory=examples.digits_cnn:target model.checkpoint=digits_cnn.npz

Two 3×3 convolutions (8 and 16 channels, the second with stride 2, ReLU) and a dense layer to the 10
classes: 3,818 parameters, in plain JAX. Same data split as
examples/digits_mlp.py: 1,500 training images, the last 297 held out for the test loss.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import optax

import lambda_hat as lh
from examples.curves import save_checkpoint
from examples.digits_mlp import load_digits

CKPTS = "cnn_ckpts"
# The curve's one setting, from a calibration sweep on the last checkpoint (docs: calibration):
# SGLD at a fixed step 1e-4 (MALA acceptance 0.93; 3e-4 was 0.84, too large, and 3e-5 had not
# mixed), minibatch 128, 5,000 steps.
CURVE_SAMPLER = ["sampler.target_mala_accept=null", "sampler.step_size=1e-4", "sampler.batch_size=128", "sampler.num_steps=5000"]


def init_params(seed: int = 0) -> dict:
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    he = lambda key, shape, fan_in: jax.random.normal(key, shape) * jnp.sqrt(2.0 / fan_in)  # noqa: E731
    return {
        "conv1": {"w": he(k1, (3, 3, 1, 8), 9), "b": jnp.zeros(8)},
        "conv2": {"w": he(k2, (3, 3, 8, 16), 72), "b": jnp.zeros(16)},
        "dense": {"w": he(k3, (4 * 4 * 16, 10), 256), "b": jnp.zeros(10)},
    }


def apply(params: dict, x: jax.Array) -> jax.Array:
    """Logits (n, 10) from flat 8×8 images (n, 64)."""
    h = x.reshape(-1, 8, 8, 1)
    for name, stride in (("conv1", 1), ("conv2", 2)):
        # A convolution as patches @ kernel (the same numbers): vmapped over chains, lax.conv with a
        # batch of kernels ran ~17 ms per SGLD step of 4 chains on 2 CPU cores, this a fraction.
        patches = jax.lax.conv_general_dilated_patches(h, (3, 3), (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        w = params[name]["w"]  # (3, 3, in, out); patches' features are ordered (in, 3, 3)
        h = jax.nn.relu(patches @ jnp.transpose(w, (2, 0, 1, 3)).reshape(-1, w.shape[-1]) + params[name]["b"])
    return h.reshape(h.shape[0], -1) @ params["dense"]["w"] + params["dense"]["b"]


def target(seed: int = 0) -> lh.Target:
    """The factory: the CNN on the 1,500 training images, cross-entropy."""
    x, y = load_digits("train")
    return lh.from_apply(apply, init_params(seed), (x, y), loss="cross_entropy", name="digits_cnn")


def train(steps: int = 2000, every: int = 250, seed: int = 0, path: str = "digits_cnn.npz") -> None:
    """Full-batch Adam (learning rate 3e-3); a checkpoint every `every` steps in cnn_ckpts/."""
    x, y = load_digits("train")
    xt, yt = load_digits("test")
    params = init_params(seed)
    opt = optax.adam(3e-3)
    state = opt.init(params)

    def mean_loss(p, xs, ys):
        return optax.softmax_cross_entropy_with_integer_labels(apply(p, xs), ys).mean()

    @jax.jit
    def step(params, state):
        grads = jax.grad(mean_loss)(params, x, y)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state

    evaluate = jax.jit(mean_loss)
    for t in range(1, steps + 1):
        params, state = step(params, state)
        if every and t % every == 0:
            save_checkpoint(CKPTS, t, params, {"train_loss": float(evaluate(params, x, y)), "test_loss": float(evaluate(params, xt, yt))})
    lh.save_npz(path, params)


if __name__ == "__main__":
    from examples.curves import main

    raise SystemExit(main("the digits CNN: train it, then λ̂ at each checkpoint", train, "examples.digits_cnn:target", CKPTS, CURVE_SAMPLER, 2000, 250))
