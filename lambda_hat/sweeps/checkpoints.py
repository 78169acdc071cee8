"""λ̂ along training: one sweep job per checkpoint of one network, each with its training step.

``python -m lambda_hat --multirun model=user model.factory=... model.checkpoint=ckpts/`` (a folder)
or ``'model.checkpoint=ckpts/step_*.npz'`` (a glob) is expanded here, before Hydra parses the
command line, into a sweep over the files, ordered by training step: one job per checkpoint, all
with the one fixed sampler setting of the command line. Everything a sweep has comes with it:
every launcher, ``resume=true`` (finished checkpoints are not run again; a later run that finds
more checkpoints appends them, since they sort after the earlier ones), the sweep table, the
MLflow parent run, the report.

A checkpoint's training step and losses come from a sidecar JSON beside it (``step_000200.npz``
-> ``step_000200.json`` or ``step_000200.npz.json``: ``{"step": 200, "train_loss": ..., "test_loss":
...}``), else the step is the last number in the file name. They are recorded in metrics.json
(``training_step``, ``train_loss``, ``test_loss``) and so in ``llc_runs.parquet``; the parent run
logs λ̂ against the training step as a metric history (MLflow's chart of ``llc`` by step) and
the report draws λ̂ ± se and the losses against the training step.
"""

from __future__ import annotations

import glob
import json
import re
from pathlib import Path
from typing import Any

SUFFIXES = (".npz", ".safetensors", ".eqx", ".pt", ".pth", ".bin")
_GLOB_CHARS = re.compile(r"[*?\[]")
KEY = "model.checkpoint"
FIGURE = "llc_over_training.png"  # beside the sweep table


def sidecar(path: Path) -> Path | None:
    for candidate in (path.with_suffix(".json"), path.with_name(path.name + ".json"), path / "meta.json"):
        if candidate != path and candidate.is_file():
            return candidate
    return None


def training_info(path: str | Path) -> dict[str, Any]:
    """{"training_step", "train_loss", "test_loss"} of a checkpoint (None where unknown)."""
    path = Path(path)
    info: dict[str, Any] = {"training_step": None, "train_loss": None, "test_loss": None}
    side = sidecar(path)
    if side is not None:
        try:
            data = json.loads(side.read_text())
        except (OSError, ValueError):
            data = {}
        if isinstance(data, dict):
            step = data.get("step", data.get("training_step"))
            info["training_step"] = int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else None
            for key, names in (("train_loss", ("train_loss", "loss")), ("test_loss", ("test_loss", "val_loss"))):
                value = next((data[n] for n in names if isinstance(data.get(n), (int, float))), None)
                info[key] = None if value is None else float(value)
    if info["training_step"] is None:
        numbers = re.findall(r"\d+", path.name if path.is_dir() else path.stem)
        info["training_step"] = int(numbers[-1]) if numbers else None
    return info


def is_checkpoint(path: Path) -> bool:
    """A checkpoint file (by suffix) or an Orbax folder (one holding _CHECKPOINT_METADATA or _METADATA)."""
    if path.is_dir():
        return any((path / m).exists() for m in ("_CHECKPOINT_METADATA", "_METADATA", "manifest.ocdbt"))
    return path.suffix.lower() in SUFFIXES


def expand(value: str) -> list[Path] | None:
    """The checkpoints a folder or glob names, ordered by training step (then name); None when
    value names one checkpoint (a file, or an Orbax folder)."""
    path = Path(value).expanduser()
    if _GLOB_CHARS.search(value):
        found = [Path(p) for p in glob.glob(str(path))]
    elif path.is_dir() and not is_checkpoint(path):
        found = list(path.iterdir())
    else:
        return None
    found = [p for p in found if is_checkpoint(p)]
    return sorted(found, key=lambda p: (training_info(p)["training_step"] is None, training_info(p)["training_step"] or 0, p.name))


def _quote(path: Path) -> str:
    # Hydra unescapes \\ only before a quote, so only quotes are escaped; ${ would interpolate
    return "'" + str(path).replace("'", "\\'").replace("${", "\\${") + "'"


def expand_argv(argv: list[str], multirun: bool) -> tuple[list[str], str | None]:
    """argv with a folder or glob of checkpoints turned into a sweep over them; or an error line."""
    out = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if key.lstrip("+") != KEY or not eq or value.startswith(("'", '"')) or "," in value:
            out.append(arg)
            continue
        found = expand(value)
        if found is None:
            out.append(arg)
            continue
        if not found:
            return argv, f"{KEY}={value}: matches no checkpoint (files ending in {', '.join(SUFFIXES)}, or Orbax folders)"
        if not multirun:
            return argv, f"{KEY}={value}: names {len(found)} checkpoints; add --multirun to estimate λ̂ at each (one job per checkpoint)"
        out.append(f"{key}={','.join(_quote(p) for p in found)}")
    return out, None


def curve(table: Any) -> Any:
    """The rows of a sweep table that form a curve over training (a checkpoint and a step), by step."""
    if "training_step" not in getattr(table, "columns", ()):
        return None
    rows = table[table["training_step"].notna()]
    return rows.sort_values("training_step") if len(rows) else None


def write_figure(sweep_dir: Path, table: Any) -> Path | None:
    """λ̂ ± se and the losses against the training step, beside the sweep table (None: not a
    sweep over checkpoints)."""
    rows = curve(table)
    if rows is None or len(rows) < 2:
        return None
    from lambda_hat.report import figures

    models = sorted({str(m) for m in rows["model"].dropna()}) if "model" in rows else []
    title = f"λ̂ over training: {', '.join(models)}" if models else ""
    return figures.save(figures.llc_over_training(rows, title), Path(sweep_dir) / FIGURE)
