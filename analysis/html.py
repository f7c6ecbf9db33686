"""A self-contained interactive HTML page of the front: inline SVG plus a few lines of JS.

No CDN and no plotting library: the page must open offline. Hovering (or focusing) a point shows
its trial, objectives, config and genotype. The data is embedded as JSON.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.front import FrontAnalysis
from analysis.pareto import staircase
from analysis.plots import axis_label, display_scale

W, H, LEFT, RIGHT, TOP, BOTTOM = 820, 520, 70, 20, 20, 50

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
svg{background:#fff;border:1px solid #ddd} .dom{fill:#9aa5b1;opacity:.5} .front{fill:#1f5fbf}
circle:hover,circle:focus{stroke:#000;stroke-width:2;outline:none} .knee{fill:none;stroke:#d1495b;
stroke-width:2.5} .step{fill:none;stroke:#1f5fbf;stroke-width:1.2} .axis{stroke:#444}
.grid{stroke:#eee} text{font-size:11px} #tip{position:fixed;display:none;background:#fffff4;
border:1px solid #888;padding:.5em;max-width:34em;max-height:70vh;overflow:auto;font-size:11px;
white-space:pre-wrap;pointer-events:none;box-shadow:2px 2px 6px #0003}
table{border-collapse:collapse;font-size:12px} td,th{border:1px solid #ccc;padding:2px 6px}
"""

_SCRIPT = """
const data = JSON.parse(document.getElementById('points').textContent);
const tip = document.getElementById('tip');
function show(ev){const d=data[+ev.target.dataset.i]; tip.textContent=JSON.stringify(d,null,1);
 tip.style.display='block'; const r=ev.target.getBoundingClientRect();
 tip.style.left=Math.min(r.right+12, innerWidth-420)+'px'; tip.style.top=Math.max(8,r.top-20)+'px';}
function hide(){tip.style.display='none';}
for (const c of document.querySelectorAll('circle[data-i]')){
 c.addEventListener('mouseenter',show); c.addEventListener('focus',show);
 c.addEventListener('mouseleave',hide); c.addEventListener('blur',hide);}
"""


def _ticks(lo: float, hi: float, n: int = 6) -> np.ndarray:
    """Round tick values covering [lo, hi] (the 1-2-5 rule)."""
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return np.arange(math.floor(lo / step) * step, hi + step * 0.5, step)


def _jsonable(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _point_info(row: pd.Series, analysis: FrontAnalysis) -> dict[str, Any]:
    info: dict[str, Any] = {
        "trial_id": _jsonable(row["trial_id"]),
        "genotype_id": _jsonable(row["genotype_id"]),
        "on_front": bool(row["on_front"]),
        "knee": bool(row["is_knee"]),
    }
    for column, _ in analysis.objectives:
        info[column] = _jsonable(row[column])
    for column in ("discretization_gap", "params_m", "gmacs", "device", "completion_order"):
        if column in row.index and pd.notna(row[column]):
            info[column] = _jsonable(row[column])
    info["config"] = {
        c.removeprefix("cfg."): _jsonable(row[c])
        for c in row.index
        if c.startswith("cfg.") and pd.notna(row[c])
    }
    genotype = row.get("genotype")
    try:
        info["genotype"] = json.loads(genotype) if pd.notna(genotype) else None
    except (TypeError, ValueError):
        info["genotype"] = genotype
    return info


def _svg(analysis: FrontAnalysis, pool: pd.DataFrame) -> str:
    (y_col, y_max), (x_col, x_max) = analysis.objectives[:2]
    x = pool[x_col].to_numpy(dtype=float) * display_scale(x_col)
    y = pool[y_col].to_numpy(dtype=float) * display_scale(y_col)
    ref_x = analysis.reference[1] * display_scale(x_col)
    ref_y = analysis.reference[0] * display_scale(y_col)
    xt = _ticks(min(x.min(), ref_x), max(x.max(), ref_x))
    yt = _ticks(min(y.min(), ref_y), max(y.max(), ref_y))

    def px(v: float) -> float:
        return LEFT + (v - xt[0]) / (xt[-1] - xt[0]) * (W - LEFT - RIGHT)

    def py(v: float) -> float:
        return H - BOTTOM - (v - yt[0]) / (yt[-1] - yt[0]) * (H - TOP - BOTTOM)

    parts = [f'<svg width="{W}" height="{H}" role="img" aria-label="Pareto front">']
    for t in xt:
        parts.append(
            f'<line class="grid" x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{TOP}" '
            f'y2="{H - BOTTOM}"/><text x="{px(t):.1f}" y="{H - BOTTOM + 15}" '
            f'text-anchor="middle">{t:g}</text>'
        )
    for t in yt:
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{py(t):.1f}" '
            f'y2="{py(t):.1f}"/><text x="{LEFT - 6}" y="{py(t) + 4:.1f}" '
            f'text-anchor="end">{t:g}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{LEFT}" x2="{W - RIGHT}" y1="{H - BOTTOM}" '
        f'y2="{H - BOTTOM}"/><line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" '
        f'y2="{H - BOTTOM}"/>'
    )
    parts.append(
        f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 12}" text-anchor="middle">'
        f"{html.escape(axis_label(x_col, x_max))}</text>"
    )
    parts.append(
        f'<text transform="translate(16 {(TOP + H - BOTTOM) / 2}) rotate(-90)" '
        f'text-anchor="middle">{html.escape(axis_label(y_col, y_max))}</text>'
    )
    front = pool["on_front"].to_numpy(dtype=bool)
    if len(analysis.objectives) == 2 and front.any():
        sx, sy = staircase(np.c_[x[front], y[front]], [x_max, y_max])
        path = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(sx, sy))
        parts.append(f'<polyline class="step" points="{path}"/>')
    parts.append(
        f'<path d="M{px(ref_x) - 5:.1f},{py(ref_y) - 5:.1f}l10,10m0,-10l-10,10" '
        f'stroke="#000" stroke-width="1.5"><title>hypervolume reference</title></path>'
    )
    genotypes = pool["genotype_id"].astype("string").fillna("?").to_numpy()
    for i in np.r_[np.flatnonzero(~front), np.flatnonzero(front)]:  # front drawn on top
        cls = "front" if front[i] else "dom"
        parts.append(
            f'<circle class="{cls}" data-i="{i}" tabindex="0" cx="{px(x[i]):.1f}" '
            f'cy="{py(y[i]):.1f}" r="{5 if front[i] else 4}"/>'
        )
        if front[i]:
            parts.append(
                f'<text x="{px(x[i]) + 6:.1f}" y="{py(y[i]) - 6:.1f}" fill="#1f5fbf">'
                f"{html.escape(str(genotypes[i]))}</text>"
            )
    knee = np.flatnonzero(pool["is_knee"].to_numpy(dtype=bool))
    for i in knee:
        parts.append(f'<circle class="knee" cx="{px(x[i]):.1f}" cy="{py(y[i]):.1f}" r="10"/>')
    parts.append("</svg>")
    return "\n".join(parts)


def front_html(analysis: FrontAnalysis, title: str = "SSR sweep: Pareto front") -> str:
    """The page as a string (see :func:`write_front_html`)."""
    pool = analysis.trials[analysis.trials["excluded_reason"].isna()].reset_index(drop=True)
    points = [_point_info(row, analysis) for _, row in pool.iterrows()]
    payload = json.dumps(points, default=str).replace("</", "<\\/")
    ref = ", ".join(f"{c} = {v:.4g}" for (c, _), v in zip(analysis.objectives, analysis.reference))
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in analysis.notes)
    shown = [c for c in ("trial_id", "genotype_id") if c in analysis.front.columns]
    shown += [c for c, _ in analysis.objectives]
    table = analysis.front[shown].to_html(index=False, na_rep="", float_format="{:.4g}".format)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(analysis.front)} non-dominated of {len(pool)} usable trials
({len(analysis.excluded)} excluded). Hypervolume <b>{analysis.hypervolume:.6g}</b> with reference
point {html.escape(ref)} ({html.escape(analysis.reference_rule)}). Hover a point for its config and
genotype; dominated points are grey, the knee is ringed in red.</p>
{_svg(analysis, pool)}
<ul>{notes}</ul>
<h2>Front</h2>
{table}
<div id="tip"></div>
<script type="application/json" id="points">{payload}</script>
<script>{_SCRIPT}</script>
</body></html>
"""


def write_front_html(analysis: FrontAnalysis, path: str | Path) -> Path:
    """Write the interactive page to ``path`` and return it."""
    path = Path(path)
    path.write_text(front_html(analysis), encoding="utf-8")
    return path
