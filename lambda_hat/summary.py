"""How a run is named and summed up in one line: the target's short name (run names, plot
titles) and the summary line printed last (the CLI, lambda_hat.Result's str)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lambda_hat.targets.base import Target


def target_name(model: Any, target: Target | None = None) -> str:
    """A short name of the target for run names (MLflow's runs list, plot titles): a DLN's widths
    and rank (model=dln_random resolves to one too), a user target's name, else the model's name;
    so the children of a sweep over targets are told apart at a glance."""
    if target is not None and model.name == "user":
        return target.name
    if model.name == "dln":
        rank = f"r{model.true_rank}" if model.get("true_rank") is not None else ""
        return "dln[" + ",".join(str(w) for w in model.widths) + "]" + rank
    return str(model.name)


def summary_line(m: dict[str, Any]) -> str:
    """The one-line result printed last: λ̂ ± se, the true λ when known, and the time."""
    if m["llc_mean"] is None:
        est = "λ̂ = n/a (all chains diverged)"
    else:
        est = f"λ̂ = {m['llc_mean']:.3f} ± {m['llc_sem']:.3f}"
        if m.get("llc_ci95") is not None:
            est += f" (95% CI {m['llc_ci95'][0]:.3f}–{m['llc_ci95'][1]:.3f})"
    refined = [f"weights {','.join(m['restrict'])}"] if m.get("restrict") else []
    if m.get("measure_on"):
        refined.append(f"loss on {m['measure_on']}" + (", sampled there" if m.get("sample_on") == "subset" else ""))
    if refined:
        est += f" (refined: {'; '.join(refined)})"
    truth = ""
    if m["llc_true"] is not None:
        truth = f" | true λ = {m['llc_true']:g}"
        if m.get("llc_rel_error") is not None:
            truth += f" ({100 * m['llc_rel_error']:+.1f}%)"
    elif m.get("llc_global") is not None:  # a teacher whose local λ no check proves
        truth = f" | local λ unknown (Aoyagi's global λ = {m['llc_global']:g})"
    # warm-up/tuning runs before sampling and can take as long
    warmup = f"warm-up {m['warmup_time_s']:.2f}s + " if m.get("warmup_time_s") else ""
    compile_s = m["compile_time_s"] + (m.get("warmup_compile_time_s") or 0.0)
    return (
        f"{est}{truth} | {m['sampler']} on {m['model']} d={m['d']}, {m['chains_ok']}/{m['num_chains']} chains"
        f" | {warmup}sampling {m['sampling_time_s']:.2f}s + compile {compile_s:.2f}s"
        + (f" (its share of a {m['batch_points']}-point batch)" if (m.get("batch_points") or 1) > 1 else "")
        + f" | status {m['status']}"
        + (f" | {m['stop_reason']} after {m['num_steps']:,} steps" if m.get("stop_reason") not in (None, "fixed length") else "")
        + (f" | {len(m['warnings'])} health warning(s) above" if m.get("warnings") else "")
    )
