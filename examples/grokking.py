"""A one-layer transformer trained into grokking on modular addition, and λ̂ through the transition.

    python examples/grokking.py curve       # train (checkpoints in grok_ckpts/), then λ̂ at each
    python examples/grokking.py train       # only train: grok.npz + grok_ckpts/step_*.npz (+ .json)
    python -m lambda_hat --multirun model=user model.factory=examples.grokking:target \\
        model.checkpoint=grok_ckpts/ sampler.batch_size=128 sampler.num_steps=2000 \
        sampler.num_tune=500                                           # the curve, by hand
    python -m lambda_hat --multirun model=user model.factory=examples.grokking:target \\
        model.checkpoint=grok.npz 'posterior.restrict=[h0],[h1],[h2],[h3],[mlp],[embed]'  # λ̂ per head

(a + b) mod P with P = 47: every pair is a sequence "a b =", the label the sum. 60% of the
2,209 pairs train the network (AdamW, weight decay 1, full batch), the rest is the test set. The
network first memorises the training pairs (train loss ~0, test loss high), then, thousands of
steps later, generalises (test loss drops): grokking (Power et al. 2022; Nanda et al. 2023). λ̂
is measured on the training pairs at each checkpoint (Lau et al. 2023 and the developmental-
interpretability papers track it through the transition).

The model is plain JAX (no framework), the shape of Nanda et al.'s: token and position embeddings,
one attention layer with H heads (no LayerNorm), a ReLU MLP, an unembedding; logits at "=".
``target()`` is the factory; its parameter groups name each head's Q/K/V/O slices ("h0" ...),
the MLP ("mlp") and the embeddings ("embed") for weight-refined λ̂.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import optax

import lambda_hat as lh
from examples.curves import save_checkpoint

P = 47  # the modulus (vocabulary: 0..P-1 and "=")
D, HEADS, MLP = 32, 4, 128  # width, heads (head width D / HEADS), MLP width
TRAIN_FRACTION = 0.6
CKPTS = "grok_ckpts"
# The curve's one sampler setting: the default SGLD (step tuned per chain) at a smaller minibatch
# and a fifth of the steps, so 20 checkpoints take minutes on a laptop CPU.
CURVE_SAMPLER = ["sampler.batch_size=128", "sampler.num_steps=2000", "sampler.num_tune=500"]


def data(split: str = "train", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Token sequences (n, 3) "a b =" and labels (a + b) mod P, int32: the train or test pairs."""
    a, b = np.meshgrid(np.arange(P), np.arange(P), indexing="ij")
    x = np.stack([a.ravel(), b.ravel(), np.full(P * P, P)], axis=1).astype(np.int32)
    y = ((a + b) % P).ravel().astype(np.int32)
    order = np.random.default_rng(seed).permutation(P * P)
    cut = int(TRAIN_FRACTION * P * P)
    rows = order[:cut] if split == "train" else order[cut:]
    return x[rows], y[rows]


def init_params(seed: int = 0) -> dict:
    k = iter(jax.random.split(jax.random.key(seed), 8))
    dh = D // HEADS
    normal = lambda key, shape, fan_in: jax.random.normal(key, shape) / jnp.sqrt(fan_in)  # noqa: E731
    return {
        "embed": {"tok": normal(next(k), (P + 1, D), 1.0) * 0.3, "pos": normal(next(k), (3, D), 1.0) * 0.3},
        "attn": {
            "q": normal(next(k), (HEADS, D, dh), D),
            "k": normal(next(k), (HEADS, D, dh), D),
            "v": normal(next(k), (HEADS, D, dh), D),
            "o": normal(next(k), (HEADS, dh, D), D),
        },
        "mlp": {"w_in": normal(next(k), (D, MLP), D), "b_in": jnp.zeros(MLP), "w_out": jnp.zeros((MLP, D)), "b_out": jnp.zeros(D)},
        "unembed": normal(next(k), (D, P), D),
    }


def apply(params: dict, tokens: jax.Array) -> jax.Array:
    """Logits (n, P) at the last position."""
    h = params["embed"]["tok"][tokens] + params["embed"]["pos"]  # (n, 3, D)
    a = params["attn"]
    q, k, v = (jnp.einsum("nsd,hde->nhse", h, a[name]) for name in ("q", "k", "v"))
    scores = jnp.einsum("nhse,nhte->nhst", q, k) / jnp.sqrt(q.shape[-1])
    causal = jnp.tril(jnp.ones((3, 3), bool))
    weights = jax.nn.softmax(jnp.where(causal, scores, -1e9), axis=-1)
    h = h + jnp.einsum("nhst,nhte,hed->nsd", weights, v, a["o"])
    m = params["mlp"]
    h = h + jax.nn.relu(h @ m["w_in"] + m["b_in"]) @ m["w_out"] + m["b_out"]
    return h[:, -1] @ params["unembed"]


GROUPS = {
    **{f"h{i}": [f"attn/{w}[{i}]" for w in ("q", "k", "v", "o")] for i in range(HEADS)},
    "mlp": ["mlp/*"],
    "embed": ["embed/*"],
    "attn": ["attn/*"],
    "unembed": ["unembed"],
}


def target(seed: int = 0) -> lh.Target:
    """The factory: the transformer on the training pairs, cross-entropy, with its parameter groups."""
    x, y = data("train")
    t = lh.from_apply(apply, init_params(seed), (x, y), loss="cross_entropy", name="grokking_p47")
    for name, patterns in GROUPS.items():
        t = t.with_group(name, patterns)
    return t


def train(steps: int = 5000, every: int = 250, seed: int = 0, path: str = "grok.npz", lr: float = 1e-3, weight_decay: float = 1.0) -> None:
    """Full-batch AdamW (Nanda et al.'s β2 = 0.98); checkpoints every `every` steps in grok_ckpts/
    with the train and test loss and accuracy beside each."""
    x, y = data("train")
    xt, yt = data("test")
    params = init_params(seed)
    opt = optax.adamw(lr, b1=0.9, b2=0.98, weight_decay=weight_decay)
    state = opt.init(params)

    def loss_acc(p, xs, ys):
        logits = apply(p, xs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, ys).mean(), (logits.argmax(-1) == ys).mean()

    @jax.jit
    def step(params, state):
        (loss, _), grads = jax.value_and_grad(loss_acc, has_aux=True)(params, x, y)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    evaluate = jax.jit(loss_acc)
    for t in range(1, steps + 1):
        params, state = step(params, state)
        if every and t % every == 0:
            (train_loss, train_acc), (test_loss, test_acc) = evaluate(params, x, y), evaluate(params, xt, yt)
            info = {"train_loss": train_loss, "test_loss": test_loss, "train_acc": train_acc, "test_acc": test_acc}
            save_checkpoint(CKPTS, t, params, {k: float(v) for k, v in info.items()})
    lh.save_npz(path, params)


if __name__ == "__main__":
    from examples.curves import main

    raise SystemExit(main("the grokking transformer: train it, then λ̂ at each checkpoint", train, "examples.grokking:target", CKPTS, CURVE_SAMPLER, 5000, 250))
