"""Files a run leaves in its output folder: metrics.json, trace.parquet, plots, resolved config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from lambda_hat.files import atomic_path, write_json, write_text
from lambda_hat.samplers.driver import Trace

__all__ = ["write_json"]  # re-exported: the runner writes its small records through here


def write_metrics(out_dir: Path, metrics: dict[str, Any]) -> Path:
    path = out_dir / "metrics.json"
    write_text(path, json.dumps(metrics, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path


def write_failure(out_dir: Path, status: str, error: str) -> Path:
    """failure.json: why a job produced no metrics.json ("failed" or "killed"), for the sweep table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "failure.json"
    write_text(path, json.dumps({"status": status, "error": error}, indent=2) + "\n")
    return path


def write_resolved_config(out_dir: Path, cfg: DictConfig) -> Path:
    path = out_dir / "config_resolved.yaml"
    write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
    return path


def trace_frame(trace: Trace, nbeta: float, L0: float) -> pd.DataFrame:
    """Long table: one row per (chain, draw): step, loss, λ̂ draw, burn-in flag, sampler diagnostics."""
    chains, draws = trace.loss.shape
    extras = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in trace.extras.items()}
    return pd.DataFrame(
        {
            "chain": np.repeat(np.arange(chains), draws),
            "draw": np.tile(np.arange(draws), chains),
            "step": np.tile(trace.step, chains),
            "burnin": np.tile(np.arange(draws) < trace.num_burnin_draws, chains),
            "loss": trace.loss.reshape(-1).astype(np.float64),
            "llc": (nbeta * (trace.loss.astype(np.float64) - L0)).reshape(-1),
            **extras,
        }
    )


def write_trace(out_dir: Path, frame: pd.DataFrame) -> Path:
    return write_table(out_dir / "trace.parquet", frame)


def write_table(path: Path, frame: pd.DataFrame) -> Path:
    """A parquet table, written atomically."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path


def fit_frame(trace: Trace) -> pd.DataFrame:
    """A VI run's fit, long: one row per (chain, optimiser step): ELBO, gradient norm, diagnostics."""
    chains, steps = np.asarray(trace.fit["elbo"]).shape
    return pd.DataFrame(
        {
            "chain": np.repeat(np.arange(chains), steps),
            "step": np.tile(np.arange(1, steps + 1), chains),
            **{k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in trace.fit.items()},
        }
    )


def _pyplot():
    import matplotlib  # heavy: imported only when plots are made

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    """A figure as PNG, atomically (the temporary name has no .png: the format is given)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)


def write_energy_plot(out_dir: Path, energy: np.ndarray, title: str) -> Path:
    """Energy plot (as in Stan/ArviZ): marginal energy vs energy transitions, centred, all chains."""
    plt = _pyplot()
    energy = np.asarray(energy, dtype=np.float64)
    marginal = (energy - energy.mean(axis=1, keepdims=True)).reshape(-1)
    transition = np.diff(energy, axis=1).reshape(-1)
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.histogram_bin_edges(np.concatenate([marginal, transition]), bins=50)
    ax.hist(marginal, bins=bins, alpha=0.5, density=True, label="marginal energy (centred)")
    ax.hist(transition, bins=bins, alpha=0.5, density=True, label="energy transition ΔE")
    ax.set(xlabel="energy", ylabel="density", title=f"{title}: energy (E-BFMI)")
    ax.legend(fontsize="small")
    path = out_dir / "energy.png"
    _save(fig, path)
    return path


def write_plots(out_dir: Path, frame: pd.DataFrame, llc_true: float | None, title: str) -> list[Path]:
    """Loss trace per chain, and the running λ̂ per chain after burn-in (true λ marked if known)."""
    plt = _pyplot()
    paths = []
    fig, ax = plt.subplots(figsize=(8, 4))
    for chain, rows in frame.groupby("chain"):
        ax.plot(rows["step"], rows["llc"], lw=0.6, label=f"chain {chain}")
    burnin_rows = frame[frame["burnin"]]
    if len(burnin_rows):
        ax.axvline(burnin_rows["step"].max(), color="grey", ls=":", label="end of burn-in")
    ax.set(xlabel="step", ylabel="nβ (L(w) − L0)", title=f"{title}: trace per chain")
    ax.legend(fontsize="small", ncol=2)
    paths.append(out_dir / "trace.png")
    _save(fig, paths[-1])

    paths.append(_write_running_llc(out_dir, frame[~frame["burnin"]], llc_true, "chain", "step", f"{title}: running λ̂ after burn-in"))
    return paths


def _write_running_llc(out_dir: Path, frame: pd.DataFrame, llc_true: float | None, who: str, xlabel: str, title: str) -> Path:
    """llc_running.png: the running mean of the λ̂ draws per chain (or fit), true λ marked if known."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    for chain, rows in frame.groupby("chain"):
        ax.plot(rows["step"], rows["llc"].expanding().mean(), lw=1.0, label=f"{who} {chain}")
    if llc_true is not None:
        ax.axhline(llc_true, color="black", ls="--", label=f"true λ = {llc_true:g}")
    ax.set(xlabel=xlabel, ylabel="running λ̂", title=title)
    ax.legend(fontsize="small", ncol=2)
    path = out_dir / "llc_running.png"
    _save(fig, path)
    return path


def write_vi_plots(out_dir: Path, fit: pd.DataFrame, frame: pd.DataFrame, llc_true: float | None, title: str) -> list[Path]:
    """A VI run's plots: ELBO and gradient norm per fit over the optimiser steps (elbo.png, in
    place of chain traces), and the running λ̂ over the draws of each fitted q (llc_running.png)."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for chain, rows in fit.groupby("chain"):
        # a running median over ~1% of the steps: the per-step ELBO estimate is noisy
        window = max(1, len(rows) // 100)
        top.plot(rows["step"], rows["elbo"].rolling(window, min_periods=1).median(), lw=0.8, label=f"fit {chain}")
        bottom.plot(rows["step"], rows["grad_norm"], lw=0.4, alpha=0.7)
    elbo = fit["elbo"][np.isfinite(fit["elbo"])]
    if len(elbo):  # the first steps' ELBO can be orders of magnitude lower: show the converged part
        top.set_ylim(np.quantile(elbo, 0.1), elbo.max() + 0.05 * (elbo.max() - np.quantile(elbo, 0.1) + 1e-9))
    top.set(ylabel="ELBO (running median)", title=f"{title}: fit")
    top.legend(fontsize="small", ncol=2)
    bottom.set(xlabel="optimiser step", ylabel="gradient norm", yscale="log")
    paths = [out_dir / "elbo.png"]
    _save(fig, paths[-1])

    paths.append(_write_running_llc(out_dir, frame, llc_true, "fit", "draw of q", f"{title}: running λ̂ over draws of q"))
    return paths
