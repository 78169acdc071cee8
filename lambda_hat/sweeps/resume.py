"""``resume=true``: re-running an interrupted sweep finishes it instead of starting over.

- :func:`find_sweep`: with Hydra's default timestamped sweep folders a re-run would get a new
  folder; so the launching process looks for the newest earlier sweep under ``multirun/`` whose
  command line (``multirun.yaml``'s task overrides, ``resume`` aside) is the same, and the re-run
  uses that folder (an explicit ``hydra.sweep.dir`` is used as given).
- :func:`completed`: in each job, a job folder whose ``metrics.json`` is complete (written whole,
  it always is: atomic rename; valid JSON with a status and an estimate field) and whose
  ``config_resolved.yaml`` is the job's config (``resume`` aside) is not run again: its results
  are reused, so the sweep table has every job. Jobs that failed, were killed or never started
  run. A run whose chains all diverged has a complete metrics.json (status failed): it is not
  re-run, since the same config and seed give the same result.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("lambda_hat")

SWEEP_ROOT = "multirun"  # conf/config.yaml: hydra.sweep.dir = multirun/<date>/<time>


def _without_resume(overrides: list[str]) -> list[str]:
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "resume"]


def find_sweep(launch_dir: Path, overrides: list[str]) -> Path | None:
    """The newest sweep folder under launch_dir/multirun/ started with these overrides (resume aside)."""
    wanted = _without_resume(overrides)
    found: list[tuple[float, Path]] = []
    for record in (launch_dir / SWEEP_ROOT).glob("*/*/multirun.yaml"):
        try:
            task = yaml.safe_load(record.read_text())["hydra"]["overrides"]["task"]
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            continue
        if isinstance(task, list) and _same_sweep(_without_resume([str(t) for t in task]), wanted):
            found.append((record.stat().st_mtime, record.parent))
    return max(found)[1] if found else None


def _same_sweep(earlier: list[str], wanted: list[str]) -> bool:
    """The same overrides, except that a sweep over checkpoints may have grown: a folder expanded
    later lists the earlier checkpoints first (ordered by training step), then the new ones."""
    if len(earlier) != len(wanted):
        return False
    for old, new in zip(earlier, wanted):
        if old == new:
            continue
        key, _, old_value = old.partition("=")
        new_key, _, new_value = new.partition("=")
        if key != new_key or key.lstrip("+") != "model.checkpoint" or not new_value.startswith(old_value + ","):
            return False
    return True


def _plain(cfg: Any) -> dict[str, Any]:
    data = dict(cfg)
    data.pop("resume", None)
    return data


def completed(out_dir: Path, cfg: DictConfig) -> dict[str, Any] | None:
    """The metrics of out_dir's earlier run of this same config, if complete; else None."""
    try:
        metrics = json.loads((out_dir / "metrics.json").read_text())
        earlier = OmegaConf.to_container(OmegaConf.load(out_dir / "config_resolved.yaml"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not isinstance(metrics, dict) or not metrics.get("status") or "llc_mean" not in metrics:
        return None
    now = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(earlier, dict) or _plain(earlier) != _plain(now):
        log.info("resume: %s holds a run of another config; running this job again", out_dir)
        return None
    return metrics
