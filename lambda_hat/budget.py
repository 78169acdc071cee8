"""Work budgets: ``budget.fge_per_chain=3000`` sizes whichever estimator runs for that much work.

1 FGE (full-gradient equivalent) = one gradient of the loss over all ``data.n`` rows, so a
minibatch gradient of ``b`` rows is b/n FGE. A budget is per chain (per fit for VI), warm-up and
tuning included. Each estimator module holds its sizing rule (``EstimatorSpec.size``, listed by
:func:`sizers`): given the sampler node, ``n``
and the budget, the sampler keys that spend it. Those rules are the arithmetic of the benchmark
presets they replace (conf/experiment/leaderboard*, sampler_benchmark, vi_benchmark: 1e3, 3e3,
1e4 and 3e4 FGE at n = 1e4, batch 500); tests/unit/test_budget.py holds their numbers.

Keys the budget sets (each sampler's other keys are read, never changed):

=====================================  ========================================================
sgld, rmsprop_sgld, adam_sgld          num_steps (what the tuning's num_tune x 2 minibatch
                                       gradients leave), thinning 10, burnin_fraction 0.5
sghmc, sgnht                           num_steps, thinning 10, burnin_fraction 0.5
hmc                                    num_warmup, num_steps (num_integration_steps read)
nuts                                   max_tree_depth 5, num_warmup, num_steps
mclmc                                  num_steps (its tuning fractions and integrator read)
adjusted_mclmc                         num_steps (sampling only: its tuning sizes itself)
vi                                     num_steps (num_samples, num_draws, whitening read)
=====================================  ========================================================

``budget.per_sampler.<estimator>.<key>``: sampler keys set for that estimator only, before the
sizing rule reads the node, and winning over it. Presets use it where a benchmark's sizes are not
the rule's (samplers_compared: Lau et al.'s steps, not matched in FGE) or for an estimator's own
settings in a sweep over several (a key a schema lacks is an error, so a preset cannot set
``sampler.num_tune`` for all of them). Only the running estimator's entry stays in the config.

Which wins: with ``budget.fge_per_chain`` set, the budget sets its keys, replacing the values a
preset gave them (that is how a preset is resized); ``budget.per_sampler`` wins over the budget.
Setting one of those keys on the command line as well is an error (ConfigError naming the key,
e.g. ``budget.fge_per_chain=3000 sampler.num_steps=5``): it would be silently replaced, so the
message says to give it as ``budget.per_sampler.<estimator>.<key>=VALUE`` (which wins) or to drop
the budget (``budget.fge_per_chain=null``). The budget is null by default: no effect.
:func:`apply_budget` is called where a run's config is composed (compose_config, which also checks
its overrides, so the command line's up-front check does; the app; runner.run; it is idempotent),
so the resolved config saved with a run, the sweep table and the MLflow params show the sized keys
next to the budget. ``python -m lambda_hat --cfg job`` prints Hydra's composition, before sizing.

JAX-free: imported while a command line is validated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lambda_hat import registry
from lambda_hat.config import ConfigError
from lambda_hat.estimators import exact


def sizers() -> dict[str, Any]:
    """Estimator name -> its sizing rule (each estimator module holds its own: EstimatorSpec.size)."""
    return {name: spec.size for name, spec in registry.ESTIMATORS.items() if spec.size is not None}


def sizes(name: str, sampler: Any, n: int, fge_per_chain: float, vi: Any = None) -> dict[str, Any]:
    """The sampler keys the budget sets for estimator ``name`` (ConfigError: one line)."""
    SIZERS = sizers()
    if name not in SIZERS:
        raise ConfigError("budget.fge_per_chain", fge_per_chain, f"no sizing rule for sampler {name!r} (budgets size {', '.join(SIZERS)})")
    if sampler.get("max_steps") is not None:
        raise ConfigError("sampler.max_steps", sampler.max_steps, "must be null with budget.fge_per_chain (a budget fixes the run's length)")
    return SIZERS[name](sampler, int(n), exact(fge_per_chain), vi=vi)


def _set(node: DictConfig, key: str, value: Any, where: str) -> None:
    try:
        node[key] = value
    except OmegaConfBaseException as e:
        allowed = ", ".join(str(k) for k in node.keys())
        why = "unknown key" if key not in node else str(getattr(e, "msg", e)).splitlines()[0]
        raise ConfigError(where, value, f"{why}; the sampler's keys: {allowed}") from None


def apply_budget(cfg: DictConfig, strict: bool = True, overrides: Sequence[str] = ()) -> DictConfig:
    """Size cfg.sampler for cfg.budget (in place; returns cfg). Idempotent; a config without a
    budget is returned unchanged. overrides: the command line cfg was composed with; one that sets
    a sampler key the budget sets is a ConfigError naming it. strict=False: an invalid budget
    leaves cfg as it is (the run reports it) instead of raising ConfigError."""
    budget = cfg.get("budget") if isinstance(cfg, DictConfig) else None
    if budget is None:
        return cfg
    fge = budget.get("fge_per_chain")
    per_sampler: Mapping[str, Any] = budget.get("per_sampler") or {}
    if fge is None and not per_sampler:
        return cfg
    try:
        _apply(cfg, fge, per_sampler, overrides)
    except ConfigError:
        if strict:
            raise
    return cfg


def _apply(cfg: DictConfig, fge: Any, per_sampler: Mapping[str, Any], overrides: Sequence[str]) -> None:
    if fge is not None and (isinstance(fge, bool) or not isinstance(fge, (int, float)) or not math.isfinite(fge) or fge <= 0):
        raise ConfigError("budget.fge_per_chain", fge, "must be > 0 (full-gradient equivalents per chain, warm-up included) or null")
    for name in per_sampler:
        if name not in sizers():
            raise ConfigError(f"budget.per_sampler.{name}", _plain(per_sampler[name]), f"not an estimator; one of {', '.join(sizers())}")
    s = cfg.sampler.copy()  # cfg changes only once every check passed
    name = str(s.name)
    explicit = per_sampler.get(name) or {}
    for key, value in explicit.items():
        _set(s, str(key), value, f"budget.per_sampler.{name}.{key}")
    sized = sizes(name, s, cfg.data.n, fge, vi=cfg.get("vi")) if fge is not None else {}
    if "until_converged" in s:  # a budget fixes the run's length (its entry may say otherwise)
        sized = {**sized, "until_converged": False}
    _check_overrides(overrides, name, fge, sized, explicit)
    for key, value in sized.items():
        if key not in explicit:
            _set(s, key, value, f"sampler.{key}")
    for key in {*explicit, *sized}:
        cfg.sampler[key] = s[key]
    if set(per_sampler) - {name}:  # only this run's entry stays: the saved config says what applied
        cfg.budget.per_sampler = {name: _plain(explicit)} if explicit else {}


def _check_overrides(overrides: Sequence[str], name: str, fge: Any, sized: Mapping[str, Any], explicit: Mapping[str, Any]) -> None:
    """A command-line sampler key that the budget would replace: a ConfigError naming it."""
    for ov in overrides:
        key = ov.split("=", 1)[0].lstrip("+~")
        leaf = key.removeprefix("sampler.")
        if leaf == key or not (leaf in sized or leaf in explicit):
            continue
        if leaf in explicit:
            how = f"set by budget.per_sampler.{name} (the preset's); give budget.per_sampler.{name}.{leaf}=VALUE instead"
        elif leaf == "until_converged":
            how = f"a budget fixes the run's length; give budget.per_sampler.{name}.until_converged=true instead"
        else:
            how = (
                f"set by budget.fge_per_chain={fge:g} (lambda_hat/budget.py); give budget.per_sampler.{name}.{leaf}=VALUE instead "
                "(it wins over the budget), or budget.fge_per_chain=null"
            )
        raise ConfigError(key, ov.split("=", 1)[1] if "=" in ov else None, how)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node) if isinstance(node, DictConfig) else node
