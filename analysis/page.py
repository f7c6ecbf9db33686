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
from analysis.plots import axis_label, display_scale, published_points

W, H, LEFT, RIGHT, TOP, BOTTOM = 1000, 520, 70, 250, 20, 50
_DETAILS = ("discretization_gap", "params_m", "gmacs", "device", "completion_order", "status")

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
svg{background:#fff;border:1px solid #ddd} .dom{fill:#9aa5b1;opacity:.5} .front{fill:#1f5fbf}
circle:hover,circle:focus{stroke:#000;stroke-width:2;outline:none} .knee{fill:none;stroke:#d1495b;
stroke-width:2.5;pointer-events:none} .step{fill:none;stroke:#1f5fbf;stroke-width:1.2} .axis{stroke:#444}
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


def _plain(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts of plain Python values, NA as None (vectorised, no iterrows)."""
    objects = frame.astype(object)
    return objects.where(frame.notna(), None).to_dict("records")


def _genotype(text: Any) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _points(pool: pd.DataFrame, analysis: FrontAnalysis) -> list[dict[str, Any]]:
    """What hovering a point shows: identity, objectives, a few results, config, genotype."""
    columns = ["trial_id", "genotype_id", *(c for c, _ in analysis.objectives)]
    columns += [c for c in _DETAILS if c in pool.columns and c not in columns]
    cfg_columns = [c for c in pool.columns if c.startswith("cfg.")]
    base = _plain(pool[columns])
    config = _plain(pool[cfg_columns].rename(columns=lambda c: c.removeprefix("cfg.")))
    genotypes = _plain(pool[["genotype"]])
    flags = zip(pool["on_front"].to_numpy(dtype=bool), pool["is_knee"].to_numpy(dtype=bool))
    out = []
    for row, cfg, geno, (front, knee) in zip(base, config, genotypes, flags):
        info = {k: v for k, v in row.items() if v is not None or k == "genotype_id"}
        info.update(on_front=bool(front), knee=bool(knee))
        info["config"] = {k: v for k, v in cfg.items() if v is not None}
        info["genotype"] = _genotype(geno["genotype"])
        out.append(info)
    return out


class _Scale:
    """Data -> pixel coordinates with round ticks and a little padding around the data."""

    def __init__(self, xs: np.ndarray, ys: np.ndarray) -> None:
        def padded(v: np.ndarray) -> np.ndarray:
            span = float(v.max() - v.min()) or max(abs(float(v.max())), 1.0)
            return _ticks(float(v.min()) - 0.04 * span, float(v.max()) + 0.04 * span)

        self.xt, self.yt = padded(xs), padded(ys)

    def x(self, v: float) -> float:
        return LEFT + (v - self.xt[0]) / (self.xt[-1] - self.xt[0]) * (W - LEFT - RIGHT)

    def y(self, v: float) -> float:
        return H - BOTTOM - (v - self.yt[0]) / (self.yt[-1] - self.yt[0]) * (H - TOP - BOTTOM)


def _axes(sc: _Scale, x_label: str, y_label: str) -> list[str]:
    parts = []
    for t in sc.xt:
        parts.append(
            f'<line class="grid" x1="{sc.x(t):.1f}" x2="{sc.x(t):.1f}" y1="{TOP}" '
            f'y2="{H - BOTTOM}"/><text x="{sc.x(t):.1f}" y="{H - BOTTOM + 15}" '
            f'text-anchor="middle">{t:g}</text>'
        )
    for t in sc.yt:
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{sc.y(t):.1f}" '
            f'y2="{sc.y(t):.1f}"/><text x="{LEFT - 6}" y="{sc.y(t) + 4:.1f}" '
            f'text-anchor="end">{t:g}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{LEFT}" x2="{W - RIGHT}" y1="{H - BOTTOM}" y2="{H - BOTTOM}"/>'
        f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{H - BOTTOM}"/>'
        f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 12}" text-anchor="middle">'
        f"{html.escape(x_label)}</text>"
        f'<text transform="translate(16 {(TOP + H - BOTTOM) / 2}) rotate(-90)" '
        f'text-anchor="middle">{html.escape(y_label)}</text>'
    )
    return parts


def _label(sc: _Scale, x: float, y: float, text: str, color: str) -> str:
    """A point label, to the left of points near the right edge so it stays inside."""
    right = sc.x(x) > W - RIGHT - 110
    anchor, dx = ("end", -7) if right else ("start", 7)
    return (
        f'<text x="{sc.x(x) + dx:.1f}" y="{sc.y(y) - 6:.1f}" text-anchor="{anchor}" '
        f'fill="{color}">{html.escape(text)}</text>'
    )


def _legend(published: bool) -> str:
    items = [
        ('<circle cx="6" cy="-4" r="4" class="dom"/>', "dominated"),
        ('<circle cx="6" cy="-4" r="5" class="front"/>', "Pareto front"),
        ('<circle cx="6" cy="-4" r="7" class="knee"/>', "knee"),
        ('<path d="M1,-9l10,10m0,-10l-10,10" stroke="#000"/>', "hypervolume reference"),
    ]
    if published:
        items.append(
            (
                '<path d="M6,-10l6,6l-6,6l-6,-6z" fill="#2a9d5c"/>',
                "published (Cityscapes test, 2080Ti)",
            )
        )
    rows = [
        f'<g transform="translate({W - RIGHT + 20} {TOP + 16 + 18 * i})">{mark}'
        f'<text x="18" y="0">{html.escape(text)}</text></g>'
        for i, (mark, text) in enumerate(items)
    ]
    return "".join(rows)


def _svg(analysis: FrontAnalysis, pool: pd.DataFrame) -> str:
    """The scatter: first objective up, second across, like :func:`analysis.plots.plot_front`."""
    (y_col, y_max), (x_col, x_max) = analysis.objectives[:2]
    x = pool[x_col].to_numpy(dtype=float) * display_scale(x_col)
    y = pool[y_col].to_numpy(dtype=float) * display_scale(y_col)
    ref_x = analysis.reference[1] * display_scale(x_col)
    ref_y = analysis.reference[0] * display_scale(y_col)
    published = published_points(analysis)
    pub_x = np.array([q.fps for q in published])
    pub_y = np.array([q.miou * 100 for q in published])
    sc = _Scale(np.r_[x, ref_x, pub_x], np.r_[y, ref_y, pub_y])
    parts = [f'<svg width="{W}" height="{H}" role="img" aria-label="Pareto front">']
    parts += _axes(sc, axis_label(x_col, x_max), axis_label(y_col, y_max))
    front = pool["on_front"].to_numpy(dtype=bool)
    if len(analysis.objectives) == 2 and front.any():
        sx, sy = staircase(np.c_[x[front], y[front]], [x_max, y_max])
        path = " ".join(f"{sc.x(a):.1f},{sc.y(b):.1f}" for a, b in zip(sx, sy))
        parts.append(f'<polyline class="step" points="{path}"/>')
    parts.append(
        f'<path d="M{sc.x(ref_x) - 5:.1f},{sc.y(ref_y) - 5:.1f}l10,10m0,-10l-10,10" '
        f'stroke="#000" stroke-width="1.5"><title>hypervolume reference</title></path>'
    )
    for q, qx, qy in zip(published, pub_x, pub_y):
        parts.append(
            f'<path d="M{sc.x(qx):.1f},{sc.y(qy) - 6:.1f}l6,6l-6,6l-6,-6z" fill="#2a9d5c">'
            f"<title>{html.escape(q.name)}: published, Cityscapes test mIoU, {q.note} "
            "(other hardware, not comparable)</title></path>"
        )
        parts.append(_label(sc, qx, qy, q.name, "#2a9d5c"))
    genotypes = pool["genotype_id"].astype("string").fillna("?").to_numpy()
    for i in np.r_[np.flatnonzero(~front), np.flatnonzero(front)]:  # front drawn on top
        parts.append(
            f'<circle class="{"front" if front[i] else "dom"}" data-i="{i}" tabindex="0" '
            f'cx="{sc.x(x[i]):.1f}" cy="{sc.y(y[i]):.1f}" r="{5 if front[i] else 4}"/>'
        )
        if front[i] and front.sum() <= 40:
            parts.append(_label(sc, x[i], y[i], str(genotypes[i]), "#1f5fbf"))
    for i in np.flatnonzero(pool["is_knee"].to_numpy(dtype=bool)):
        parts.append(f'<circle class="knee" cx="{sc.x(x[i]):.1f}" cy="{sc.y(y[i]):.1f}" r="10"/>')
    parts.append(_legend(bool(published)))
    parts.append("</svg>")
    return "\n".join(parts)


def front_html(analysis: FrontAnalysis, title: str = "SSR sweep: Pareto front") -> str:
    """The page as a string (see :func:`write_front_html`)."""
    pool = analysis.trials[analysis.trials["excluded_reason"].isna()].reset_index(drop=True)
    points = _points(pool, analysis)
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
