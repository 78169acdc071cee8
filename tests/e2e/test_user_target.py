"""Your own network: the Python API, adapters, the model=user CLI, checkpoints, chunked losses,
health for targets without a known λ, and bad input in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import lambda_hat as lh
from lambda_hat import app
from lambda_hat.posterior import make_posterior
from lambda_hat.runner import estimate_target
from lambda_hat.targets import build_target
from tests import factories
from tests.conftest import TINY, run_cli

QUICK = {"sampler.num_chains": 2, "sampler.num_steps": 400, "sampler.num_tune": 200, "sampler.batch_size": 64}
QUICK_CLI = [f"{k}={v}" for k, v in QUICK.items()] + ["progress=false", "mlflow.enabled=false"]


def test_user_dln_reproduces_the_builtin_dln_to_the_last_bit(make_cfg) -> None:
    """The default DLN as a user target (a plain loss function, no Gram shortcut on either side)
    gives the same draws and λ̂ as model=dln with the same seed, bit for bit."""
    cfg = make_cfg(*TINY, "posterior.gram_loss=false", "sampler.num_steps=1000", "sampler.num_burnin=500")
    builtin, _, builtin_trace = estimate_target(cfg, build_target(cfg))
    user = factories.dln(widths=[4, 6, 4], true_rank=2, n=10000)
    result = lh.estimate(
        user,
        "sgld",
        overrides=[o for o in TINY if not o.startswith(("model.", "data."))]
        + ["posterior.gram_loss=false", "sampler.num_steps=1000", "sampler.num_burnin=500"],
    )
    assert result.llc_mean == builtin["llc_mean"]
    assert result.metrics["L0"] == builtin["L0"] and result.metrics["nbeta"] == builtin["nbeta"]
    np.testing.assert_array_equal(result.trace["loss"].to_numpy(), builtin_trace["loss"].to_numpy())
    assert result.metrics["llc_true"] == builtin["llc_true"] == 8.0


def test_api_and_cli_give_the_same_metrics(tmp_path: Path) -> None:
    proc = run_cli(["model=user", "model.factory=tests.factories:linear", *QUICK_CLI, f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cli = json.loads((tmp_path / "run" / "metrics.json").read_text())
    api = lh.estimate(factories.linear(), "sgld", overrides=QUICK)
    for key in ("llc_mean", "llc_sem", "llc_per_chain", "L0", "nbeta", "n", "d", "step_size", "r_hat", "ess_bulk", "target_id"):
        if key == "target_id":
            continue  # the CLI's id hashes the factory; a Python target has none
        assert api.metrics[key] == cli[key], key
    assert cli["model"] == "linear" and cli["factory"] == "tests.factories:linear"
    assert api.llc_mean == cli["llc_mean"] and api.llc_sem == cli["llc_sem"] and api.llc_ci95 == cli["llc_ci95"]
    assert api.stop_reason == cli["stop_reason"] in ("converged", "work cap") and api.metrics["num_steps"] == cli["num_steps"]
    assert isinstance(api.trace, pd.DataFrame) and {"loss", "llc", "distance"} <= set(api.trace.columns)
    assert str(api).startswith("λ̂ = ")
    before = set(Path.cwd().iterdir())
    lh.estimate(factories.linear(), "sgld", overrides=QUICK)
    assert set(Path.cwd().iterdir()) == before


def test_api_rejects_a_typo_in_one_line() -> None:
    with pytest.raises(lh.ConfigError) as e:
        lh.estimate(factories.linear(), "sgld", overrides={"sampler.stepsize": 1e-6})
    assert str(e.value).startswith("sampler.stepsize: unknown key; allowed keys here:") and "\n" not in str(e.value)
    with pytest.raises(lh.ConfigError, match="posterior.gamma=-1.0 is invalid"):
        lh.estimate(factories.linear(), "hmc", **{"posterior.gamma": -1.0})


def test_api_writes_files_only_when_asked(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = lh.estimate(factories.linear(), "sgld", overrides=QUICK, out_dir=out)
    assert {"metrics.json", "trace.parquet", "config_resolved.yaml", "trace.png"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "metrics.json").read_text())["llc_mean"] == r.llc_mean


def test_softmax_regression_recovers_its_known_lambda() -> None:
    """K classes, p inputs plus a bias, all K(p+1) weights sampled: invariant to adding one vector
    to every class's weights, so λ = (K - 1)(p + 1)/2. w* is the maximum-likelihood fit (Newton's
    method in float64 to convergence), not the teacher (whose finite-n offset biases λ̂ by ~-1/log n)."""
    k, p, n = 3, 4, 100_000
    x, y = factories._classification(n, p, k, seed=1)
    x = x.astype(np.float64)

    def apply(params: dict[str, jax.Array], xb: jax.Array) -> jax.Array:
        return xb @ params["w"] + params["b"]

    loss = lh.losses.from_apply("cross_entropy", apply)
    with jax.enable_x64(True):
        params = {"w": jnp.zeros((p, k)), "b": jnp.zeros(k)}
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        f = lambda v: loss(unravel(v), {"x": jnp.asarray(x), "y": jnp.asarray(y)})  # noqa: E731
        newton = jax.jit(lambda v: v - jnp.linalg.pinv(jax.hessian(f)(v), rtol=1e-10) @ jax.grad(f)(v))
        for _ in range(20):  # Newton with a pseudo-inverse: the Hessian is singular along the gauge
            flat = newton(flat)
        assert float(jnp.linalg.norm(jax.grad(f)(flat))) < 1e-9
        w_hat = jax.tree.map(np.asarray, unravel(flat))
    target = lh.from_apply(apply, w_hat, (x, y), loss="cross_entropy", llc_true=(k - 1) * (p + 1) / 2)
    # 50k steps: the slowest regular direction relaxes over ~3.5k steps of the tuned ε (the
    # default 10k steps give ±20% from seed to seed here; 50k: within ±2.5% over seeds 0-3)
    r = lh.estimate(target, "sgld", seed=0, overrides={"sampler.num_steps": 50_000})
    assert r.metrics["llc_true"] == 5.0
    assert abs(r.llc_mean / 5.0 - 1) < 0.05, str(r)
    assert not any("local minimum" in w for w in r.warnings)


def test_torch_mlp_matches_the_same_mlp_in_jax() -> None:
    """from_torch and a hand-written JAX MLP with the same weights: same L_n(w*) to 1e-5, λ̂
    within two standard errors of each other."""
    torch = _require_torch()
    x, y = factories._classification(4000, 5, 3, seed=2)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    t_torch = lh.from_torch(net, (x, y), loss="cross_entropy")
    params = [{"w": sd["0.weight"].T, "b": sd["0.bias"]}, {"w": sd["2.weight"].T, "b": sd["2.bias"]}]
    t_jax = lh.from_apply(_tanh_mlp, params, (x, y), loss="cross_entropy")
    # w* is the initial weights (not a minimum, hence γ = 100): the comparison is of the engine's
    # two paths to the same posterior, not of the estimate's health
    overrides = {"sampler.num_steps": 3000, "posterior.gamma": 100.0, "posterior.check_minimum": False}
    a, b = lh.estimate(t_torch, "sgld", overrides=overrides), lh.estimate(t_jax, "sgld", overrides=overrides)
    assert a.metrics["L0"] == pytest.approx(b.metrics["L0"], abs=1e-5)
    assert abs(a.llc_mean - b.llc_mean) <= 2 * math.hypot(a.llc_sem, b.llc_sem), (str(a), str(b))


def test_a_torch_module_with_tied_weights_samples_the_shared_tensor_once_and_loads_its_state_dict(tmp_path: Path) -> None:
    """An output layer sharing the input layer's weight (tied embeddings' pattern): one parameter,
    moving both layers; torch.save(state_dict) holds it under both names and loads; a file whose
    two copies differ is refused with a line naming both."""
    torch = _require_torch()
    x, y = factories._classification(200, 5, 5, seed=3)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 5), torch.nn.Tanh(), torch.nn.Linear(5, 5))
    net[2].weight = net[0].weight
    t = lh.from_torch(net, (x, y), loss="cross_entropy")
    assert sorted(t.w_star) == ["0.bias", "0.weight", "2.bias"] and t.meta["tied"] == {"2.weight": "0.weight"}
    moved = {**t.w_star, "0.weight": t.w_star["0.weight"] + 0.1}
    with torch.no_grad():
        net[0].weight += 0.1  # moves net[2].weight too: the same tensor
        expected = torch.nn.functional.cross_entropy(net(torch.as_tensor(x)), torch.as_tensor(y).long()).item()
    assert float(t.loss(moved, t.data)) == pytest.approx(expected, rel=1e-5)
    path = tmp_path / "tied.pt"
    torch.save(net.state_dict(), path)
    assert set(torch.load(path, weights_only=True)) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    loaded = lh.load_checkpoint(path, t.w_star, tied=t.meta["tied"])
    np.testing.assert_allclose(loaded["0.weight"], moved["0.weight"], rtol=1e-6)
    state = net.state_dict()
    state["2.weight"] = state["2.weight"].clone() + 1.0  # no longer one tensor
    torch.save(state, path)
    with pytest.raises(lh.TargetError, match="2.weight and 0.weight are one tied tensor"):
        lh.load_checkpoint(path, t.w_star, tied=t.meta["tied"])


def _tanh_mlp(p: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    return jnp.tanh(x @ p[0]["w"] + p[0]["b"]) @ p[1]["w"] + p[1]["b"]


def _require_torch():
    """torch, or a skip on a laptop without the torch extra (a failure in CI, which installs it)."""
    import importlib.util
    import os

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchax") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI must run the from_torch tests: scripts/dev.py sync installs torch's CPU build", pytrace=False)
        pytest.skip("the torch extra is not installed")
    import torch

    return torch


@pytest.mark.parametrize("n, chunk", [(1000, 1000), (1000, 300), (1001, 250), (7, 3)])
def test_full_data_loss_and_gradient_in_chunks_equal_one_pass(n: int, chunk: int) -> None:
    target = factories.linear(n=n)
    with jax.enable_x64(True):
        whole = make_posterior(target, 1.0, 1.0, "float64", eval_batch_size=n)
        parts = make_posterior(target, 1.0, 1.0, "float64", eval_batch_size=chunk)
        w = whole.w_star + 0.1
        assert float(parts.L0) == pytest.approx(float(whole.L0), rel=1e-12)
        assert float(parts.full_loss(w)) == pytest.approx(float(whole.full_loss(w)), rel=1e-12)
        np.testing.assert_allclose(jax.grad(parts.full_loss)(w), jax.grad(whole.full_loss)(w), rtol=1e-10)


def test_full_data_gradient_memory_does_not_scale_with_n() -> None:
    """The compiled full-data gradient's temporary buffers are bounded by the chunk, not n."""

    def temp_bytes(n: int) -> int:
        target = factories.linear(n=n, d_in=64)
        post = make_posterior(target, 1.0, 1.0, "float32", eval_batch_size=1024)
        compiled = jax.jit(jax.grad(post.full_loss)).lower(post.w_star).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    small, large = temp_bytes(8192), temp_bytes(65536)
    assert large < 2 * small + (1 << 20), (small, large)


def test_next_token_loss_is_the_mean_per_token_cross_entropy() -> None:
    rng = np.random.default_rng(0)
    vocab, tokens = 7, rng.integers(0, 7, size=(50, 9)).astype(np.int32)

    def apply(p: dict[str, jax.Array], t: jax.Array) -> jax.Array:  # a bigram model: logits from the current token
        return p["table"][t]

    params = {"table": rng.normal(size=(vocab, vocab)).astype(np.float32)}
    target = lh.from_apply(apply, params, tokens, loss="next_token")
    logits = params["table"][tokens[:, :-1]]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    manual = -np.take_along_axis(logp, tokens[:, 1:, None], -1).mean()
    assert float(target.loss(params, target.data)) == pytest.approx(manual, rel=1e-5)
    r = lh.estimate(target, "sgld", overrides={**QUICK, "sampler.batch_size": 16, "posterior.check_minimum": False})
    assert r.metrics["n"] == 50 and r.metrics["d"] == vocab * vocab and r.llc_mean is not None


def test_nbeta_from_the_batch_size_is_devinterps_convention_and_recorded() -> None:
    r = lh.estimate(factories.linear(), "sgld", overrides={**QUICK, "posterior.nbeta_from": "batch_size"})
    assert r.metrics["nbeta"] == pytest.approx(64 / math.log(64), rel=1e-6)
    assert r.metrics["nbeta_from"] == "batch_size" and r.metrics["nbeta_n"] == 64 and r.metrics["n"] == 2000
    with pytest.raises(lh.ConfigError, match="needs a minibatch sampler"):
        lh.compose("hmc", {"posterior.nbeta_from": "batch_size"})


def test_n_sets_the_sample_size_of_nbeta() -> None:
    t = factories.linear()
    t = lh.Target.from_loss(t.loss, t.params, t.data, n=50_000)
    r = lh.estimate(t, "sgld", overrides=QUICK)
    assert r.metrics["nbeta"] == pytest.approx(50_000 / math.log(50_000), rel=1e-6) and r.metrics["n"] == 2000


# ---------------------------------------------------------------- health without a known λ


def test_a_point_that_is_not_a_minimum_is_flagged() -> None:
    good = factories.linear()
    r = lh.estimate(good, "sgld", overrides=QUICK)
    assert not any("local minimum" in w for w in r.warnings), r.warnings
    off = good.with_params({"w": good.params["w"] + 0.2})
    r = lh.estimate(off, "sgld", overrides=QUICK)
    assert r.metrics["wstar_newton_drop"] > 10 and r.metrics["wstar_grad_norm"] > 0.1
    assert any(w.startswith("w* is not a local minimum") and "train w* to convergence" in w for w in r.warnings)
    assert any("λ̂ = " in w and "< 0" in w for w in r.warnings)  # the chains slid below L_n(w*)


def test_chains_drifting_away_from_w_star_are_flagged() -> None:
    """A model that ignores 20 of its parameters (flat directions, as over-parametrised networks
    have): with γ = 0 the chains random-walk away along them; with γ = 100 they are held."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 1))
    target = lh.Target.from_loss(lambda p, b: jnp.mean((b["x"][:, 0] * p[0]) ** 2), np.zeros(21), {"x": x})
    overrides = {
        "sampler.num_steps": 4000,
        "sampler.target_mala_accept": None,
        "sampler.step_size": 1e-3,
        "sampler.batch_size": 64,
        "posterior.check_minimum": False,
    }
    free = lh.estimate(target, "sgld", overrides={**overrides, "posterior.gamma": 0.0})
    assert any(w.startswith("chains drift away from w*") and "posterior.gamma" in w for w in free.warnings), free.warnings
    held = lh.estimate(target, "sgld", overrides={**overrides, "posterior.gamma": 100.0})
    assert not any("drift" in w for w in held.warnings), held.warnings


# ---------------------------------------------------------------- the CLI: frameworks, checkpoints


def test_cli_runs_flax_equinox_torch_and_jax_models(tmp_path: Path) -> None:
    _require_torch()
    frameworks = ["jax", "flax_nnx", "flax_linen", "equinox", "torch"]
    sweep = tmp_path / "sweep"
    proc = run_cli(
        [
            "--multirun",
            "model=user",
            "model.factory=tests.factories:classifier",
            f"+model.args.framework={','.join(frameworks)}",
            *QUICK_CLI,
            "sampler.until_converged=false",  # the adapters are under test, not the sampling length
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_parquet(sweep / "llc_runs.parquet")
    assert sorted(table["status"]) == ["ok"] * 5
    models = {json.loads((sweep / str(i) / "metrics.json").read_text())["model"] for i in range(5)}
    assert models == {"clf_jax", "clf_nnx", "clf_linen", "clf_eqx", "clf_torch"}
    assert len(set(table["target_id"])) == 5  # keyed by the factory's arguments


def _save_all_formats(folder: Path) -> dict[str, tuple[str, Path, float]]:
    """Each checkpoint format, of weights w* / 2: {format: (framework, path, L_n at those weights)}."""
    import equinox as eqx
    import orbax.checkpoint as ocp
    import torch
    from safetensors.numpy import save_file

    from lambda_hat.targets.checkpoints import flatten

    out = {}
    jx = factories.classifier("jax")
    half = jax.tree.map(lambda a: np.asarray(a) / 2, jx.params)
    loss = float(jx.loss(half, jx.data))
    out["npz"] = ("jax", lh.save_npz(folder / "w.npz", half), loss)
    save_file(flatten(half), str(folder / "w.safetensors"))
    out["safetensors"] = ("jax", folder / "w.safetensors", loss)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save((folder / "w_orbax").resolve(), half)
    out["orbax"] = ("jax", folder / "w_orbax", loss)
    eq = factories.classifier("equinox")
    eq_half = jax.tree.map(lambda a: a / 2, eq.params)
    eqx.tree_serialise_leaves(folder / "w.eqx", eq_half)
    out["equinox"] = ("equinox", folder / "w.eqx", float(eq.loss(eq_half, eq.data)))
    tt = factories.classifier("torch")
    torch.manual_seed(0)
    sd = {k: torch.from_numpy(np.asarray(v) / 2) for k, v in tt.params.items()}
    torch.save(sd, folder / "w.pt")
    out["torch"] = ("torch", folder / "w.pt", float(tt.loss({k: v.numpy() for k, v in sd.items()}, tt.data)))
    return out


@pytest.mark.slow  # 31 s on CI; checkpoints in: test_checkpoints_restore_held_state_and_whole_equinox_models, test_checkpoint_curves.py
def test_cli_loads_every_checkpoint_format(tmp_path: Path) -> None:
    _require_torch()
    saved = _save_all_formats(tmp_path)
    by_framework: dict[str, list[str]] = {}
    for framework, path, _ in saved.values():
        by_framework.setdefault(framework, []).append(str(path))
    for framework, paths in by_framework.items():
        sweep = tmp_path / f"sweep_{framework}"
        proc = run_cli(
            [
                "--multirun",
                "model=user",
                "model.factory=tests.factories:classifier",
                f"+model.args.framework={framework}",
                f"model.checkpoint={','.join(paths)}",
                *QUICK_CLI,
                "sampler.until_converged=false",  # w* from the checkpoint is under test
                f"hydra.sweep.dir={sweep}",
            ],
            cwd=tmp_path,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        for i, path in enumerate(paths):
            m = json.loads((sweep / str(i) / "metrics.json").read_text())
            fmt = next(f for f, (_, p, _) in saved.items() if str(p) == path)
            assert m["checkpoint"] == path and len(m["checkpoint_sha256"]) == 64, fmt
            assert m["L0"] == pytest.approx(saved[fmt][2], rel=1e-5), fmt  # w* is the checkpoint's


# ---------------------------------------------------------------- bad input: one line, exit 2


def _bad(tmp_path: Path) -> list[tuple[list[str], str]]:
    wrong_shape = tmp_path / "wrong.npz"
    np.savez(wrong_shape, **{"w": np.zeros((4, 1))})
    wrong_dtype = tmp_path / "dtype.npz"
    np.savez(wrong_dtype, **{"w": np.zeros((3, 1), np.float32)})
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint")
    f = "model.factory=tests.factories:"
    return [
        ([f + "nope"], "model.factory: tests.factories has no function 'nope'"),
        (["model.factory=tests.no_such_module:f"], "model.factory: cannot import tests.no_such_module"),
        (["model.factory=not-a-path"], "model.factory='not-a-path' is invalid: must name a function as PKG.MODULE:FUNCTION"),
        ([], "model.factory: is required with model=user"),
        ([f + "not_a_target"], "returned dict, not a lambda_hat.Target"),
        ([f + "vector_loss"], "loss: must return a scalar"),
        ([f + "nan_loss"], "loss: is nan at w*"),
        ([f + "linear", "+model.args.rows_y=1999"], "data: leading axes differ (['x']: 2000, ['y']: 1999)"),
        ([f + "linear", "+model.args.nope=1"], "model.args: tests.factories:linear(nope=): got an unexpected keyword argument 'nope'"),
        ([f + "linear", "model.args.n=5"], "model.args.n: a new factory argument; add it with a '+'"),
        ([f + "linear", "sampler.batch_size=5000"], "sampler.batch_size: 5000 exceeds the data's 2000 rows"),
        ([f + "linear", f"model.checkpoint={tmp_path}/none.npz"], "does not exist"),
        ([f + "linear", f"model.checkpoint={wrong_shape}"], "['w'] has shape [4, 1], the model expects [3, 1]"),
        ([f + "linear", f"model.checkpoint={wrong_dtype}"], "['w'] has dtype float32, the model expects float64"),
        ([f + "linear", f"model.checkpoint={garbage}"], "model.checkpoint: cannot read garbage.safetensors as safetensors"),
        ([f + "linear", f"model.checkpoint={tmp_path}/x.ckpt"], "does not exist"),
        ([f + "classifier", "+model.args.framework=jax", "model.checkpoint_format=pickle"], "model.checkpoint_format='pickle' is invalid"),
    ]


def test_bad_user_input_is_one_line_naming_what_to_fix(tmp_path: Path) -> None:
    for args, expected in _bad(tmp_path):
        line = app.check_overrides(["model=user", *args, "mlflow.enabled=false"])
        assert line is not None and expected in line and "\n" not in line, (args, line)


def test_class_labels_out_of_range_are_rejected() -> None:
    x, y = factories._classification(100, 5, 3, seed=0)
    from examples.digits_mlp import apply, init_params

    with pytest.raises(lh.TargetError, match=r"data: class labels must be in \[0, 3\) .* found 1\.\.3"):
        lh.from_apply(apply, init_params([5, 4, 3]), (x, np.where(y == 0, 3, y)), loss="cross_entropy")
    with pytest.raises(lh.TargetError, match="integer class labels"):
        lh.from_apply(apply, init_params([5, 4, 3]), (x, y.astype(np.float32)), loss="cross_entropy")


def test_bad_user_input_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    proc = run_cli(["model=user", "model.factory=tests.factories:linear", "+model.args.rows_y=10", "mlflow.enabled=false"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "lambda_hat: error: data: leading axes differ (['x']: 2000, ['y']: 10); every array needs the same number of rows"
    ]
    assert list(tmp_path.iterdir()) == []


def test_models_with_batch_norm_and_dropout_are_evaluated_in_inference_mode() -> None:
    """Batch norm on its running statistics (held fixed, not sampled), dropout off: the target's
    loss at w* equals the framework's own eval-mode loss, and is deterministic."""
    torch = _require_torch()
    x, y = factories._classification(256, 5, 3, seed=3)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(16, 3))
    net.train()
    for _ in range(3):  # move the running statistics away from their initial values
        net(torch.from_numpy(x))
    t = lh.from_torch(net, (x, y), loss="cross_entropy")
    assert set(t.params) == {"0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"}  # buffers held
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(net.eval()(torch.from_numpy(x)), torch.from_numpy(y).long()).item()
    assert float(t.loss(t.params, t.data)) == pytest.approx(expected, rel=1e-5)

    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.lin1, self.bn = nnx.Linear(5, 16, rngs=rngs), nnx.BatchNorm(16, rngs=rngs)
            self.drop, self.lin2 = nnx.Dropout(0.5, rngs=rngs), nnx.Linear(16, 3, rngs=rngs)

        def __call__(self, x: jax.Array) -> jax.Array:
            return self.lin2(self.drop(jax.nn.relu(self.bn(self.lin1(x)))))

    model = Net(nnx.Rngs(0))
    model.train()
    model(jnp.asarray(x))  # updates the batch statistics
    t = lh.from_flax(model, (x, y), loss="cross_entropy")
    assert "mean" not in str(jax.tree_util.tree_structure(t.params))  # BatchStats are held, not sampled
    expected = float(jnp.mean(__import__("optax").softmax_cross_entropy_with_integer_labels(model(jnp.asarray(x)), y)))
    assert float(t.loss(t.params, t.data)) == pytest.approx(expected, rel=1e-6)
    assert float(t.loss(t.params, t.data)) == float(t.loss(t.params, t.data))  # no dropout draws


def test_a_users_module_in_the_working_folder_runs_under_a_process_launcher(tmp_path: Path) -> None:
    """The factory's module sits in the folder the command runs from (not installed, not on
    PYTHONPATH); local_parallel runs each job in its own process, which must import it too."""
    (tmp_path / "mynet.py").write_text(
        "import jax.numpy as jnp, numpy as np\nimport lambda_hat as lh\n\n"
        "def make(n: int = 3000, seed: int = 0):\n"
        "    rng = np.random.default_rng(seed)\n"
        "    x = rng.normal(size=(n, 4)); y = x @ rng.normal(size=(4, 2)) + 0.1 * rng.normal(size=(n, 2))\n"
        "    w = np.linalg.lstsq(x, y, rcond=None)[0]\n"
        "    return lh.Target.from_loss(lambda p, b: jnp.mean((b['x'] @ p - b['y']) ** 2), w, {'x': x, 'y': y}, name='mynet')\n"
    )
    sweep = tmp_path / "sweep"
    proc = run_cli(
        [
            "--multirun",
            "hydra/launcher=local_parallel",
            "model=user",
            "model.factory=mynet:make",
            "+model.args.seed=0,1",
            *QUICK_CLI,
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_parquet(sweep / "llc_runs.parquet")
    assert list(table["status"]) == ["ok", "ok"] and table["target_id"].nunique() == 2
    assert all(json.loads((sweep / str(i) / "metrics.json").read_text())["model"] == "mynet" for i in range(2))


def test_a_missing_extra_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util
    import sys

    from lambda_hat import torch_bridge
    from lambda_hat.targets import checkpoints

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("torch", "torchax", "safetensors") else real(name, *a))
    monkeypatch.setattr(torch_bridge, "_torchax", None)
    with pytest.raises(lh.TargetError, match=r"^from_torch: needs the 'torch' extra: pip install -e \"\.\[torch\]\""):
        lh.from_torch(object(), (np.zeros((4, 2)), np.zeros((4, 1))))
    (tmp_path / "w.safetensors").write_bytes(b"x")
    with pytest.raises(lh.TargetError, match=r"^model.checkpoint: a safetensors checkpoint needs the 'checkpoints' extra"):
        checkpoints.load(tmp_path / "w.safetensors", {"w": np.zeros(2)})
    monkeypatch.setitem(sys.modules, "flax", None)
    with pytest.raises(lh.TargetError, match=r"^from_flax: needs the 'flax' extra"):
        lh.from_flax(object(), (np.zeros((4, 2)), np.zeros((4, 1))))


def test_weight_restricted_llc_samples_only_the_matching_layer() -> None:
    """DLN [4,6,4] at a full-rank teacher: with one layer held at w*, the map from the other
    layer's 24 weights to the product has rank 16, so the restricted λ is 8 for either layer."""
    t = factories.dln(widths=[4, 6, 4], n=10000)
    quick = {"sampler.num_warmup": 300, "sampler.num_steps": 400, "sampler.until_converged": False}
    # layer "1" (layer "0" is the same by symmetry: one run keeps CI short)
    r = lh.estimate(t, "hmc", overrides={**quick, "posterior.restrict": ["1"]})
    assert r.metrics["d"] == 24 and r.metrics["d_total"] == 48 and r.metrics["restrict"] == ["1"]
    assert r.metrics["llc_true"] is None  # the whole model's λ is not this quantity
    assert abs(r.llc_mean / 8.0 - 1) < 0.1, str(r)
    with pytest.raises(lh.TargetError, match=r"posterior.restrict: \['2/\*'\] matches no parameter; the parameters are: 0, 1"):
        lh.estimate(t, "hmc", overrides={"posterior.restrict": ["2/*"]})


def test_checkpoints_restore_held_state_and_whole_equinox_models(tmp_path: Path) -> None:
    """A torch state_dict restores the running statistics too; an Equinox file of the whole model
    (Dropout's non-array leaves included) reads back; NNX batch statistics are refused, not mixed."""
    torch = _require_torch()
    from lambda_hat.targets import checkpoints

    trained = factories.torch_bn(seed=1)  # another init ...
    x, y = factories._classification(256, 5, 3, seed=3)
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    net.train()
    for _ in range(5):
        net(torch.from_numpy(x) * 3 + 1)  # ... and running statistics far from their initial values
    torch.save(net.state_dict(), tmp_path / "bn.pt")
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(net.eval()(torch.from_numpy(x)), torch.from_numpy(y).long()).item()
    del trained
    proc_line = app.check_overrides(
        ["model=user", "model.factory=tests.factories:torch_bn", f"model.checkpoint={tmp_path / 'bn.pt'}", "sampler.batch_size=64", "mlflow.enabled=false"]
    )
    assert proc_line is None
    from lambda_hat.composition import compose_config
    from lambda_hat.targets import build_target as build

    t = build(compose_config(["model=user", "model.factory=tests.factories:torch_bn", f"model.checkpoint={tmp_path / 'bn.pt'}"]))
    assert float(t.loss(t.params, t.data)) == pytest.approx(expected, rel=1e-5)

    import equinox as eqx

    class Net(eqx.Module):
        mlp: eqx.nn.MLP
        drop: eqx.nn.Dropout

        def __call__(self, x: jax.Array) -> jax.Array:
            return self.drop(self.mlp(x), inference=True)

    net_eqx = Net(eqx.nn.MLP(5, 3, 8, 1, key=jax.random.key(0)), eqx.nn.Dropout(0.3))
    t = lh.from_equinox(net_eqx, (x, y), loss="cross_entropy")
    halved = jax.tree.map(lambda a: a / 2 if eqx.is_inexact_array(a) else a, net_eqx)
    eqx.tree_serialise_leaves(tmp_path / "whole.eqx", halved)
    params = checkpoints.load(tmp_path / "whole.eqx", t.params, equinox_static=t.meta["equinox_static"])
    assert float(t.loss(params, t.data)) == pytest.approx(float(t.loss(jax.tree.map(lambda a: a / 2, t.params), t.data)), rel=1e-6)

    lh.save_npz(tmp_path / "nnx.npz", factories.nnx_bn().params)
    line = app.check_overrides(["model=user", "model.factory=tests.factories:nnx_bn", f"model.checkpoint={tmp_path / 'nnx.npz'}", "mlflow.enabled=false"])
    assert line is not None and line.startswith("model.checkpoint: tests.factories:nnx_bn returns a model with batch statistics")


def test_a_factory_that_raises_is_one_line() -> None:
    line = app.check_overrides(["model=user", "model.factory=tests.factories:raises", "mlflow.enabled=false"])
    assert line == "model.factory: tests.factories:raises raised FileNotFoundError: no data file for n=10"


@pytest.mark.parametrize("sample_on", ["data", "subset"])
def test_data_refined_llc_measures_the_loss_on_a_subset(sample_on: str) -> None:
    """Linear regression on 4 inputs (λ = 2); on a subset using only two inputs the refined λ is 1,
    whether sampling uses the data or the subset (then the other two directions are free)."""
    target = factories.refined_linear()
    quick = {"sampler.num_chains": 4, "sampler.num_steps": 8000, "progress": False}
    plain = lh.estimate(target, "sgld", seed=0, overrides=quick)
    refined = lh.estimate(target, "sgld", seed=0, overrides={**quick, "posterior.measure_on": "two_inputs", "posterior.sample_on": sample_on})
    assert abs(plain.llc_mean / 2.0 - 1) < 0.1
    assert abs(refined.llc_mean / 1.0 - 1) < 0.1, refined.metrics
    m = refined.metrics
    assert (m["measure_on"], m["sample_on"], m["n_measure"]) == ("two_inputs", sample_on, 2000)
    assert m["n"] == (20000 if sample_on == "data" else 2000) and m["L0"] < 1e-12
    if sample_on == "data":  # the subset's forward pass per draw is counted: 2000/20000 FGE per draw and chain
        assert m["n_fge"] > plain.metrics["n_fge"]


def test_data_refined_bad_subset_is_one_line() -> None:
    target = factories.refined_linear(n=1000, n_sub=100)
    with pytest.raises(lh.TargetError, match=r"posterior.measure_on: 'nope': the target has no such subset; it has: two_inputs"):
        lh.estimate(target, "sgld", overrides={"posterior.measure_on": "nope"})
    with pytest.raises(lh.ConfigError, match="posterior.sample_on"):
        lh.estimate(target, "sgld", overrides={"posterior.sample_on": "subset"})
    with pytest.raises(lh.TargetError, match=r"subsets\['bad'\]"):
        target.with_subset("bad", {"x": np.zeros((10, 3)), "y": np.zeros((10, 1))})


def test_restrict_takes_index_slices_and_named_groups() -> None:
    """A trailing numpy index picks part of an array (one attention head's slice); a target's
    named group stands for its patterns; a bad index is one line."""
    from lambda_hat.posterior import expand_groups, select

    params = {"attn": {"query": np.zeros((8, 4, 2)), "out": np.zeros((4, 2, 8))}, "b": np.zeros(3)}
    flat_out = np.arange(64).reshape(4, 2, 8)  # "attn/out" comes first in ravel order (sorted keys)
    head1 = select(params, ["attn/query[:, 1]", "attn/out[1]"])
    assert len(head1) == 16 + 16
    assert set(head1[:16]) == set(flat_out[1].ravel())
    query = 64 + np.arange(64).reshape(8, 4, 2)
    assert set(head1[16:]) == set(query[:, 1].ravel())
    assert list(select(params, ["b[0:2]"])) == [128, 129]
    assert len(select(params, ["attn/*"])) == 128
    assert expand_groups(["h1", "b"], {"h1": ["attn/query[:, 1]", "attn/out[1]"]}) == ["attn/query[:, 1]", "attn/out[1]", "b"]
    with pytest.raises(lh.TargetError, match=r"posterior.restrict: 'b\[5\]': index \[5\] does not apply to b of shape \[3\]"):
        select(params, ["b[5]"])
    target = factories.dln([4, 6, 4], n=2000).with_group("last", ["1"])
    r = lh.estimate(target, "sgld", overrides={"sampler.num_steps": 200, "sampler.num_chains": 1, "posterior.restrict": ["last"], "progress": False})
    assert (r.metrics["d"], r.metrics["d_total"], r.metrics["restrict"]) == (24, 48, ["last"])
