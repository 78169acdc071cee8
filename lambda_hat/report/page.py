"""The report's text: tables formatted for reading, written as markdown (report.md) and as one
self-contained HTML page (index.html: the figures embedded as base64 PNG, no external files)."""

from __future__ import annotations

import base64
import html
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lambda_hat.sweeps.aggregate import markdown_table


@dataclass
class Section:
    title: str
    text: str = ""
    table: pd.DataFrame | None = None
    figure: Path | None = None


def _pct(x: float, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if math.isinf(x):
        return "∞ (failed)"
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.1f}%"


def _g(x: float, digits: int = 3) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def leaderboard_display(board: pd.DataFrame, level: float = 0.9) -> pd.DataFrame:
    """The ranking as strings: budget, rank, estimator, median |rel. error| with its interval, runs."""
    rows = []
    for _, r in board.iterrows():
        ci = f" ({_pct(r['ci_low'])} – {_pct(r['ci_high'])})" if r["ci_low"] == r["ci_low"] else ""
        rows.append(
            {
                "budget": r["budget"],
                "rank": int(r["rank"]),
                "estimator": r["estimator"],
                f"median abs. rel. error ({level:.0%} CI)": _pct(r["median_abs_rel_error"]) + ci,
                "runs (failed)": f"{int(r['runs'])} ({int(r['failed'])})",
                "FGE per chain": f"{r['fge_per_chain']:,.0f}" if r["fge_per_chain"] == r["fge_per_chain"] else "",
                "seconds per run": _g(r["seconds"], 2),
            }
        )
    return pd.DataFrame(rows)


def summary_display(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as strings (λ̂ ± se, errors in %)."""
    rows = []
    for _, r in summary.iterrows():
        row = {"budget": r["budget"]} if "budget" in summary else {}
        row.update(
            {
                "target": r["target"],
                "λ": _g(r["reference"], 4),
                "estimator": r["estimator"],
                "runs": int(r["runs"]),
                "λ̂ ± se": f"{_g(r['llc_mean'], 4)} ± {_g(r['llc_se'], 2)}" if r["llc_mean"] == r["llc_mean"] else "",
                "rel. error": _pct(r["rel_error"], signed=True),
                "median abs. rel. error": _pct(r["median_abs_rel_error"]),
                "ESS/FGE": _g(r["ess_per_fge"], 2),
                "max R-hat": _g(r["r_hat_max"], 3),
                "health": r["health"],
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_markdown(path: Path, title: str, intro: str, sections: list[Section]) -> Path:
    """report.md: the sections with their tables, and the figures linked as files beside it."""
    lines = [f"# {title}", "", intro, ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        if s.text:
            lines += [s.text, ""]
        if s.figure is not None:
            lines += [f"![{s.title}]({s.figure.name})", ""]
        if s.table is not None and len(s.table):
            lines += [markdown_table(s.table, columns=list(s.table.columns), max_rows=10_000), ""]
    return _write(path, "\n".join(lines))


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0} th,td{padding:.25em .6em;border-bottom:1px solid #eee;text-align:left}
th{background:#f6f6f6} img{max-width:100%;height:auto} p.note{color:#555;font-size:.9em}
"""


def write_html(path: Path, title: str, intro: str, sections: list[Section]) -> Path:
    """index.html: one file, figures inline (data: URIs), so it can be mailed or attached as is."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">{html.escape(intro)}</p>',
    ]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f'<p class="note">{html.escape(s.text)}</p>')
        if s.figure is not None:
            data = base64.b64encode(s.figure.read_bytes()).decode("ascii")
            parts.append(f'<img alt="{html.escape(s.title)}" src="data:image/png;base64,{data}">')
        if s.table is not None and len(s.table):
            parts.append(s.table.to_html(index=False, escape=True, border=0))
    parts.append("</body></html>")
    return _write(path, "\n".join(parts))
