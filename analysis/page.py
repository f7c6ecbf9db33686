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
    display_unit,
)
from analysis.layout import padded_range
from analysis.noise import bounds, error_bars
from analysis.pareto import staircase
from analysis.placement import place_labels
from analysis.plots import (
    FADED,
    FRONT,
    KNEE,
    PUBLISHED,
    drawn_points,
    front_labels,
    published_points,
)
from analysis.tables import (
    front_columns,
    front_rows,
    header,
    hypervolume_text,
    other_points,
    reference_text,
)

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

#: The figure's height and the narrowest width labels are placed for (px): the page fills the
#: browser's width, so a wider window only spreads the points further apart.
WIDTH, HEIGHT = 1100, 680
MARGIN = {"l": 80, "r": 30, "t": 50, "b": 150}  # px; the legend sits under the plot
FONT_PX = 10  # label font size; a character is about 0.62 of it wide
_DETAILS = ("params_m", "gmacs", "discretization_gap", "gap_at_discrete", "retrain_epochs")


def varied_config(trials: pd.DataFrame) -> list[str]:
    """The ``cfg.*`` columns whose value differs between trials (what the sweep varied)."""
    cfg = [c for c in trials.columns if c.startswith("cfg.")]
    return [c for c in cfg if trials[c].astype("string").fillna("<NA>").nunique() > 1]


def _cell(value: Any, column: str, unit: bool = True) -> str:
    """A hover value in display units, with its unit unless ``unit`` is False (``9.26 pts``,
    ``23.37 %``, ``11.6 FPS``)."""
    if value is None or value is pd.NA or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, float | np.floating):
        scale, name = display_scale(column), display_unit(column) if unit else ""
        text = f"{value * scale:.2f}" if scale != 1.0 else f"{value:.4g}"
        return f"{text} {name}" if name else text
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
                span = f" [{_cell(row[lo], c, False)}, {_cell(row[hi], c, False)}]"
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


def label_annotations(
    labels: list[tuple[str, float, float, str]],
    points: np.ndarray,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
) -> tuple[list[dict[str, Any]], tuple[float, float], tuple[float, float]]:
    """Plotly annotations for ``(text, x, y, color)`` labels placed where they overlap no other
    label and no marker (:func:`analysis.placement.place_labels`, in the pixels of a
    :data:`WIDTH` x :data:`HEIGHT` figure; a wider page only spreads the points), and the ranges
    grown to hold them."""
    plot_w, plot_h = WIDTH - MARGIN["l"] - MARGIN["r"], HEIGHT - MARGIN["t"] - MARGIN["b"]
    (x0, x1), (y0, y1) = x_range, y_range

    def px(xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        return np.c_[(xy[:, 0] - x0) / (x1 - x0) * plot_w, (xy[:, 1] - y0) / (y1 - y0) * plot_h]

    lines = [t.split("\n") for t, *_ in labels]
    sizes = np.array([(max(map(len, ls)) * 0.62 * FONT_PX + 8, 1.5 * FONT_PX * len(ls))
                      for ls in lines])  # fmt: skip
    anchors = px([(lx, ly) for _, lx, ly, _ in labels])
    where = place_labels(anchors, sizes.reshape(-1, 2), px(points), (0, 0, plot_w, plot_h))
    out = []
    for (text, lx, ly, color), dx, dy, far, (w, h) in zip(labels, where.dx, where.dy,
                                                          where.far, sizes.reshape(-1, 2)):  # fmt: skip
        note = {"x": lx, "y": ly, "text": html.escape(text).replace("\n", "<br>"),
                "align": "left", "font": {"size": FONT_PX, "color": color}}  # fmt: skip
        if far:  # a leader line from the label's centre to its point
            note.update(showarrow=True, ax=dx + w / 2, ay=-(dy + h / 2), arrowhead=0,
                        arrowwidth=0.7, arrowcolor=color, standoff=5)  # fmt: skip
        else:  # next to its point: the lower-left corner shifted from it
            note.update(showarrow=False, xanchor="left", yanchor="bottom", xshift=dx, yshift=dy)
        out.append(note)
    if len(labels):
        lo = (anchors + np.c_[where.dx, where.dy]).min(axis=0)
        hi = (anchors + np.c_[where.dx, where.dy] + sizes).max(axis=0)
        sx, sy = (x1 - x0) / plot_w, (y1 - y0) / plot_h
        x_range = (x0 + min(lo[0], 0) * sx, x1 + max(hi[0] - plot_w, 0) * sx)
        y_range = (y0 + min(lo[1], 0) * sy, y1 + max(hi[1] - plot_h, 0) * sy)
    return out, x_range, y_range


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
    published = published_points(analysis)
    pub_x, pub_y = [p.fps for p in published], [p.miou * 100 for p in published]
    ref_y, ref_x = analysis.reference[0] * sy, analysis.reference[1] * sx
    x_lo, x_hi = (b * sx for b in bounds(pool, x_col))
    y_lo, y_hi = (b * sy for b in bounds(pool, y_col))
    labels = [(t, lx, ly, FRONT) for t, lx, ly in front_labels(pool, x, y)]
    labels += [(p.name, p.fps, p.miou * 100, PUBLISHED) for p in published]
    points = np.r_[np.c_[x, y], np.c_[pub_x, pub_y].reshape(-1, 2), [[ref_x, ref_y]]]
    annotations, x_range, y_range = label_annotations(
        labels,
        points,
        padded_range(x_lo, x_hi, [ref_x], pub_x),
        padded_range(y_lo, y_hi, [ref_y], pub_y),
    )
    fig = go.Figure()
    for base in dict.fromkeys(pool["baseline"].astype(object).fillna("?")):
        style = baseline_style(None if base == "?" else base)
        rows = (pool["baseline"].astype(object).fillna("?") == base).to_numpy()
        for on in (False, True):
            pick = rows & (front == on)
            if not pick.any():
                continue
            fig.add_trace(go.Scatter(
                x=x[pick], y=y[pick], mode="markers", hovertext=list(hover[pick]),
                hoverinfo="text", cliponaxis=False, name=f"{'front' if on else 'dominated'}: "
                f"{style.legend}",
                marker={"symbol": f"{style.symbol}-open", "size": 11 if on else 8,
                        "color": FRONT if on else FADED, "line": {"width": 2 if on else 1.2}},
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
            x=pub_x, y=pub_y, mode="markers", cliponaxis=False, hoverinfo="text",
            hovertext=[f"{p.name}: published Cityscapes test mIoU, {p.note} (other hardware, "
                       "not comparable)" for p in published],
            marker={"symbol": "diamond", "size": 9, "color": PUBLISHED},
            name="published (Cityscapes test)",
        ))  # fmt: skip
    fig.update_layout(
        autosize=True, height=HEIGHT, margin=MARGIN, template="plotly_white",
        annotations=annotations,
        title={"text": f"{int(front.sum())} of {len(pool)} trials on the front, hypervolume "
                       f"{hypervolume_text(analysis)}", "font": {"size": 14}},
        xaxis={"title": {"text": axis_title(pool, x_col, x_max)}, "range": list(x_range)},
        yaxis={"title": {"text": axis_title(pool, y_col, y_max)}, "range": list(y_range)},
        legend={"orientation": "h", "x": 0.0, "y": -0.16, "xanchor": "left", "yanchor": "top"},
        hoverlabel={"align": "left"},
    )  # fmt: skip
    return fig


def _table(head: list[str], rows: list[list[str]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{cells}</tr>{body}</table>"


def front_html(analysis: FrontAnalysis, title: str = "SSR sweep: Pareto front") -> str:
    """The page as a string (see :func:`write_front_html`): the figure across the page's whole
    width, the notes, the front's table and a table of every other point drawn."""
    pool = drawn_points(analysis)
    plot = front_figure(analysis).to_html(
        include_plotlyjs=True, full_html=False, div_id="front", config={"responsive": True},
        default_width="100%", default_height=f"{HEIGHT}px",
    )  # fmt: skip
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in analysis.notes)
    front = _table([*map(header, front_columns(analysis)), "knee"], front_rows(analysis))
    other_head, other_rows = other_points(analysis)
    others = _table(other_head, other_rows) if other_rows else "<p>None.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;margin:1em 1.5em;color:#222}}
#front{{width:100%;min-width:{WIDTH}px}}
table{{border-collapse:collapse;font-size:12px}} td,th{{border:1px solid #ccc;padding:2px 6px}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(analysis.front)} non-dominated of {len(pool)} usable trials
({len(analysis.excluded)} excluded). Hypervolume <b>{html.escape(hypervolume_text(analysis, 6))}</b>
(in the axes' units) with reference point {html.escape(reference_text(analysis))}
({html.escape(analysis.reference_rule)}). Front points are labelled; hover any point for its
trial, baseline, config and genotype (every point is also in the tables below). Marker shape =
baseline (hollow, so that a point under another stays visible), grey = dominated, red ring =
knee.</p>
{plot}
<ul>{notes}</ul>
<h2>Front</h2>
{front}
<h2>Other points drawn (dominated)</h2>
{others}
</body></html>
"""


def write_front_html(analysis: FrontAnalysis, path: str | Path) -> Path:
    """Write the interactive page to ``path`` and return it."""
    path = Path(path)
    path.write_text(front_html(analysis), encoding="utf-8")
    return path
