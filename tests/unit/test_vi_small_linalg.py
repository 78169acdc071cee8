"""The plain-JAX Cholesky and triangular solves the VI families use instead of LAPACK, and the
hang they remove (jaxlib's batched LAPACK kernels deadlocking the XLA CPU thread pool)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lambda_hat.vi import small_linalg
from tests.conftest import run_cli


def _spd(key: jax.Array, r: int) -> jax.Array:
    k = jax.random.normal(key, (r, r + 3), jnp.float64)
    return jnp.eye(r, dtype=jnp.float64) + k @ k.T / r


@pytest.mark.parametrize("r", [1, 2, 7, 33])
def test_cholesky_and_solves_match_lapack(r: int) -> None:
    with jax.enable_x64(True):
        key = jax.random.key(r)
        a = _spd(key, r)
        b = jax.random.normal(jax.random.fold_in(key, 1), (r, 3), jnp.float64)
        low = small_linalg.cholesky(a)
        np.testing.assert_allclose(low, np.linalg.cholesky(np.asarray(a)), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(small_linalg.solve_lower(low, b), np.linalg.solve(np.asarray(low), b), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(small_linalg.solve_upper(low.T, b[:, 0]), np.linalg.solve(np.asarray(low.T), b[:, 0]), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(small_linalg.cho_solve(low, b), np.linalg.solve(np.asarray(a), b), rtol=1e-9, atol=1e-10)


def test_gradients_match_lapack() -> None:
    """log det and a quadratic form through the loops differentiate like jnp.linalg's, for a
    matrix built as the families build theirs (I + K Kᵀ: the loops read its lower triangle only,
    so the gradient is compared through K, where both are the full derivative)."""
    with jax.enable_x64(True):
        k0 = jax.random.normal(jax.random.key(0), (6, 4), jnp.float64)
        b = jnp.arange(1.0, 7.0, dtype=jnp.float64)

        def objective(chol, cho_solve):
            def f(k):
                low = chol(jnp.eye(6, dtype=k.dtype) + k @ k.T)
                return 2 * jnp.sum(jnp.log(jnp.diag(low))) + b @ cho_solve(low, b)

            return f

        ours = objective(small_linalg.cholesky, small_linalg.cho_solve)
        lapack = objective(jnp.linalg.cholesky, lambda low, x: jax.scipy.linalg.cho_solve((low, True), x))
        np.testing.assert_allclose(ours(k0), lapack(k0), rtol=1e-12)
        np.testing.assert_allclose(jax.grad(ours)(k0), jax.grad(lapack)(k0), rtol=1e-8, atol=1e-10)


@pytest.mark.slow  # 21 s on CI; the small-matrix algebra itself is checked above
def test_rank_64_mfa_with_several_fits_finishes(tmp_path: Path) -> None:
    """With jnp.linalg.cholesky this fit hung for good on 2 cores (vi.rank=64, 4 fits vmapped):
    jaxlib's batched LAPACK kernels waited on the XLA thread pool from inside it."""
    args = [
        "sampler=vi",
        "vi=mfa",
        "vi.components=2",
        "vi.rank=64",
        "vi.parameterization=precision",
        "model.widths=[5,8,6,4]",
        "model.true_rank=3",
        "data.n=1000",
        "sampler.num_chains=4",
        "sampler.num_steps=40",
        "sampler.batch_size=100",
        "sampler.num_samples=2",
        "sampler.num_draws=16",
        "sampler.whitening_batches=2",
        "progress=false",
        "plots=false",
        "mlflow.enabled=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    proc = run_cli(args, tmp_path, timeout=240)  # ~20 s; the old code never returned
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.json").is_file()
