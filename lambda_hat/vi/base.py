"""The protocol every variational family implements (pure functions of a parameter pytree).

A family is a distribution q_φ over the *whitened* coordinates z ∈ R^d of the posterior: the fit
driver (:mod:`lambda_hat.vi.fit`) maps w = w* + s ⊙ z, with s a per-coordinate scale it computes
(whitening pre-pass) — so a family never sees w*, nβ or the data, starts centred at 0 with scales
of order 1, and the same family code serves every target. Densities are in z:
log q_w(w) = log q_z(z) − Σ log s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

Params = Any  # a pytree of float arrays only (optax optimises it); static parts are closed over
LogDensity = Callable[[jax.Array], jax.Array]  # z: (d,) -> log p(z), differentiable


class VIFamily(NamedTuple):
    """A variational family q_φ over z (length d).

    init(key) -> φ0: q centred at/near 0 with scales of order 1.
    sample(φ, key, S) -> (z: (S, d), log q_φ(z): (S,)): reparameterised (differentiable in φ).
    log_q(φ, z: (d,)) -> log q_φ(z).
    surrogate(φ, key, logp, S) -> (loss, diagnostics): a loss whose φ-gradient is an unbiased
        estimate of −∇ELBO (plus any prior on φ), and the ELBO estimate under
        diagnostics["elbo"]; None: the driver uses −mean_s[logp(z_s) − log q(z_s)] over
        sample(φ, key, S). ``logp`` is the minibatch log density of z.
    diagnostics(φ) -> {name: scalar}: traced per step (e.g. the mixture weights' entropy).
    draws_per_step(S) -> how many draws (so minibatch gradients) one step's surrogate evaluates
        (MFA's stratified estimator draws S per component); None: S.
    """

    init: Callable[[jax.Array], Params]
    sample: Callable[[Params, jax.Array, int], tuple[jax.Array, jax.Array]]
    log_q: Callable[[Params, jax.Array], jax.Array]
    surrogate: Callable[[Params, jax.Array, LogDensity, int], tuple[jax.Array, dict[str, jax.Array]]] | None = None
    diagnostics: Callable[[Params], dict[str, jax.Array]] | None = None
    draws_per_step: Callable[[int], int] | None = None


def elbo_surrogate(family: VIFamily, params: Params, key: jax.Array, logp: LogDensity, num_samples: int):
    """The family's surrogate loss, or the plain reparameterised −ELBO estimate."""
    if family.surrogate is not None:
        return family.surrogate(params, key, logp, num_samples)
    z, log_q = family.sample(params, key, num_samples)
    elbo = jax.numpy.mean(jax.vmap(logp)(z) - log_q)
    return -elbo, {"elbo": elbo}


def draws_per_step(family: VIFamily, num_samples: int) -> int:
    return num_samples if family.draws_per_step is None else int(family.draws_per_step(num_samples))
