"""``pareto.html``: the front as an interactive plotly page that opens offline.

Drawn with plotly (``plotly.graph_objects``); the plotly.js bundle is embedded in the page
(``include_plotlyjs=True``), so it needs no network. The figure mirrors
:func:`analysis.plots.plot_front`: first objective up, second across, one marker symbol per
baseline, front points blue and dominated ones grey, error bars from the records' intervals, the
front's step line, the knee ringed, the hypervolume reference marked, axis titles with units.
Hovering a point shows its trial, baseline, genotype id, objectives (with intervals), tie group
and the config values that vary across the sweep. Ranges follow :mod:`analysis.layout`.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from analysis.front import FrontAnalysis
from analysis.labels import (
    axis_title,
    baseline_style,
    baseline_text,
    display_scale,
    point_label,
)
from analysis.layout import label_sides, padded_range
from analysis.noise import bounds, error_bars
from analysis.pareto import staircase
from analysis.plots import FADED, FRONT, KNEE, PUBLISHED, drawn_points, published_points
from analysis.tables import front_columns, front_rows, header

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

WIDTH, HEIGHT = 1100, 600
MARGIN = {"l": 80, "r": 290, "t": 50, "b": 70}  # px; the legend sits in the right margin
FONT_PX = 10  # label font size; a character is about 0.62 of it wide
_DETAILS = ("params_m", "gmacs", "discretization_gap", "gap_at_discrete", "retrain_epochs")


def varied_config(trials: pd.DataFrame) -> list[str]:
    """The ``cfg.*`` columns whose value differs between trials (what the sweep varied)."""
    cfg = [c for c in trials.columns if c.startswith("cfg.")]
    return [c for c in cfg if trials[c].astype("string").fillna("<NA>").nunique() > 1]


def _cell(value: Any, column: str) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, float | np.floating):
        scale = display_scale(column)
        return f"{value * scale:.2f}" if scale != 1.0 else f"{value:.4g}"
    return html.escape(str(value))


def hover_texts(analysis: FrontAnalysis, pool: pd.DataFrame) -> list[str]:
    """One hover text per drawn point (plotly's ``<br>`` line breaks)."""
    objectives = [c for c, _ in analysis.objectives]
    varied = varied_config(analysis.trials)
    out = []
    for _, row in pool.iterrows():
        lines = [
            f"<b>trial {_cell(row['trial_id'], '')}</b> ({baseline_text(row['baseline'])})",
            f"genotype {_cell(row['genotype_id'], '')}",
        ]
        for c in objectives:
            lo, hi = (f"{c}_lo", f"{c}_hi")
            span = ""
            if lo in row.index and hi in row.index and pd.notna(row[lo]) and pd.notna(row[hi]):
                span = f" [{_cell(row[lo], c)}, {_cell(row[hi], c)}]"
            lines.append(f"{c}: {_cell(row[c], c)}{span}")
        if pd.notna(row.get("tie_group", pd.NA)):
            lines.append(f"statistically tied: group {row['tie_group']}")
        lines += [f"{c}: {_cell(row[c], c)}" for c in _DETAILS if pd.notna(row.get(c, pd.NA))]
        lines += ["<i>config (varied)</i>"] * bool(varied)
        lines += [f"  {c.removeprefix('cfg.')} = {_cell(row[c], '')}" for c in varied]
        out.append("<br>".join(lines))
    return out


def _error(bars: np.ndarray | None, pick: np.ndarray, scale: float) -> dict[str, Any] | None:
    if bars is None:
        return None
    return {"type": "data", "symmetric": False, "array": list(bars[1][pick] * scale),
            "arrayminus": list(bars[0][pick] * scale), "color": FADED, "thickness": 1}  # fmt: skip


def _labels(pool: pd.DataFrame, front: np.ndarray) -> np.ndarray:
    """Label text per point (empty when unlabelled): front points of a front of at most 40."""
    out = np.full(len(pool), "", dtype=object)
    if front.sum() > 40:
        return out
    ties = pool["tie_group"] if "tie_group" in pool.columns else pd.Series(pd.NA, index=pool.index)
    for i in np.flatnonzero(front):
        out[i] = point_label(pool["genotype_id"].iloc[i], pool["baseline"].iloc[i], ties.iloc[i])
    return out


def front_figure(analysis: FrontAnalysis) -> Figure:
    """The plotly figure of the page (ranges set explicitly, labels turned inwards)."""
    import plotly.graph_objects as go

    (y_col, y_max), (x_col, x_max) = analysis.objectives[:2]
    sy, sx = display_scale(y_col), display_scale(x_col)
    pool = drawn_points(analysis)
    x = pool[x_col].to_numpy(dtype=float) * sx
    y = pool[y_col].to_numpy(dtype=float) * sy
    front = pool["on_front"].to_numpy(dtype=bool)
    xerr, yerr = error_bars(pool, x_col), error_bars(pool, y_col)
    hover = np.asarray(hover_texts(analysis, pool), dtype=object)
    texts = _labels(pool, front)
    published = published_points(analysis)
    pub_x, pub_y = [p.fps for p in published], [p.miou * 100 for p in published]
    ref_y, ref_x = analysis.reference[0] * sy, analysis.reference[1] * sx
    x_lo, x_hi = (b * sx for b in bounds(pool, x_col))
    y_lo, y_hi = (b * sy for b in bounds(pool, y_col))
    x_range = padded_range(x_lo, x_hi, [ref_x], pub_x)
    y_range = padded_range(y_lo, y_hi, [ref_y], pub_y)
    # label sizes in data units (estimated from the font; 15 % spare)
    plot_w, plot_h = WIDTH - MARGIN["l"] - MARGIN["r"], HEIGHT - MARGIN["t"] - MARGIN["b"]
    all_text = np.r_[texts, [p.name for p in published]].astype(str)
    px_w = np.array([len(t) * 0.62 * FONT_PX * 1.15 + 6 for t in all_text])
    all_x, all_y = np.r_[x, pub_x], np.r_[y, pub_y]
    widths = px_w * (x_range[1] - x_range[0]) / plot_w * (all_text != "")
    height = 1.6 * FONT_PX * (y_range[1] - y_range[0]) / plot_h
    right, up, x_range, y_range = label_sides(all_x, all_y, x_range, y_range, widths, height)
    where = np.array([f"{'top' if u else 'bottom'} {'right' if r else 'left'}"
                      for r, u in zip(right, up)], dtype=object)  # fmt: skip
    fig = go.Figure()
    for base in dict.fromkeys(pool["baseline"].astype(object).fillna("?")):
        style = baseline_style(None if base == "?" else base)
        rows = (pool["baseline"].astype(object).fillna("?") == base).to_numpy()
        for on in (False, True):
            pick = rows & (front == on)
            if not pick.any():
                continue
            fig.add_trace(go.Scatter(
                x=x[pick], y=y[pick], mode="markers+text", text=list(texts[pick]),
                textposition=list(where[: len(x)][pick]), hovertext=list(hover[pick]),
                hoverinfo="text", cliponaxis=False, name=f"{'front' if on else 'dominated'}: "
                f"{style.legend}", textfont={"size": FONT_PX, "color": FRONT if on else FADED},
                marker={"symbol": style.symbol, "size": 10 if on else 7,
                        "color": FRONT if on else FADED, "opacity": 1.0 if on else 0.55},
                error_x=_error(xerr, pick, sx), error_y=_error(yerr, pick, sy),
            ))  # fmt: skip
    if len(analysis.objectives) == 2 and front.any():
        line_x, line_y = staircase(np.c_[x[front], y[front]], [x_max, y_max])
        boundary = {"color": FRONT, "width": 1.2}
        fig.add_trace(go.Scatter(x=line_x, y=line_y, mode="lines", hoverinfo="skip",
                                 line=boundary, name="front boundary"))  # fmt: skip
    knee = pool["is_knee"].to_numpy(dtype=bool)
    if knee.any():
        fig.add_trace(go.Scatter(x=x[knee], y=y[knee], mode="markers", hoverinfo="skip",
                                 marker={"symbol": "circle-open", "size": 20, "color": KNEE,
                                         "line": {"width": 2.5}}, name="knee"))  # fmt: skip
    fig.add_trace(go.Scatter(x=[ref_x], y=[ref_y], mode="markers", name="hypervolume reference",
                             marker={"symbol": "x", "size": 9, "color": "black"},
                             hovertext=["hypervolume reference"], hoverinfo="text"))  # fmt: skip
    if published:
        fig.add_trace(go.Scatter(
            x=pub_x, y=pub_y, mode="markers+text", text=[p.name for p in published],
            textposition=list(where[len(x):]), cliponaxis=False, hoverinfo="text",
            hovertext=[f"{p.name}: published Cityscapes test mIoU, {p.note} (other hardware, "
                       "not comparable)" for p in published],
            marker={"symbol": "diamond", "size": 9, "color": PUBLISHED},
            textfont={"size": FONT_PX, "color": PUBLISHED}, name="published (Cityscapes test)",
        ))  # fmt: skip
    fig.update_layout(
        width=WIDTH, height=HEIGHT, margin=MARGIN, template="plotly_white",
        title={"text": f"{int(front.sum())} of {len(pool)} trials on the front, hypervolume "
                       f"{analysis.hypervolume:.4g}", "font": {"size": 14}},
        xaxis={"title": {"text": axis_title(pool, x_col, x_max)}, "range": list(x_range)},
        yaxis={"title": {"text": axis_title(pool, y_col, y_max)}, "range": list(y_range)},
        legend={"x": 1.02, "y": 1.0, "xanchor": "left"}, hoverlabel={"align": "left"},
    )  # fmt: skip
    return fig


def front_html(analysis: FrontAnalysis, title: str = "SSR sweep: Pareto front") -> str:
    """The page as a string (see :func:`write_front_html`)."""
    pool = drawn_points(analysis)
    plot = front_figure(analysis).to_html(
        include_plotlyjs=True, full_html=False, div_id="front", config={"responsive": False}
    )
    ref = ", ".join(f"{c} = {v:.4g}" for (c, _), v in zip(analysis.objectives, analysis.reference))
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in analysis.notes)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in (*map(header, front_columns(analysis)),
                                                           "knee"))  # fmt: skip
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
        for row in front_rows(analysis)
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}}
table{{border-collapse:collapse;font-size:12px}} td,th{{border:1px solid #ccc;padding:2px 6px}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(analysis.front)} non-dominated of {len(pool)} usable trials
({len(analysis.excluded)} excluded). Hypervolume <b>{analysis.hypervolume:.6g}</b> with reference
point {html.escape(ref)} ({html.escape(analysis.reference_rule)}). Hover a point for its baseline,
config and genotype; marker shape = baseline, grey = dominated, red ring = knee.</p>
{plot}
<ul>{notes}</ul>
<h2>Front</h2>
<table><tr>{head}</tr>{body}</table>
</body></html>
"""


def write_front_html(analysis: FrontAnalysis, path: str | Path) -> Path:
    """Write the interactive page to ``path`` and return it."""
    path = Path(path)
    path.write_text(front_html(analysis), encoding="utf-8")
    return path
