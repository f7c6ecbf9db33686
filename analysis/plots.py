"""PNG figures of a computed :class:`~analysis.front.FrontAnalysis` (compute first, render second).

Figures are built with matplotlib's object API on an Agg canvas created per figure, so nothing
touches pyplot or the process-wide backend (safe headless, in notebooks and in threads);
matplotlib is imported only when a figure is drawn. Each function returns the ``Figure`` and
saves it when given a path. mIoU columns are shown in percent.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from analysis.front import SSR_WEIGHT_COLUMNS, FrontAnalysis, finite
from analysis.labels import (
    BASELINE_STYLES,
    BaselineStyle,
    axis_label,
    axis_title,
    baseline_style,
    display_scale,
    is_miou,
    point_label,
)
from analysis.layout import padded_range
from analysis.noise import bounds, error_bars
from analysis.pareto import staircase

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "CITYSCAPES_PUBLISHED",
    "axis_label",
    "display_scale",
    "drawn_points",
    "figure_png",
    "is_miou",
    "plot_front",
    "plot_gap",
    "plot_history",
    "published_points",
]

MAX_LABELS = 40
FADED, FRONT, KNEE, PUBLISHED = "#9aa5b1", "#1f5fbf", "#d1495b", "#2a9d5c"


class PublishedPoint(NamedTuple):
    """A published result, drawn for orientation only (other data split, hardware, software)."""

    name: str
    miou: float  # fraction
    fps: float
    note: str


#: Cityscapes *test* mIoU and FPS from the SSR README (docs/method.md §9.1), all on an RTX 2080Ti,
#: plain PyTorch fp32, batch 1. Not comparable with numbers measured on another device.
CITYSCAPES_PUBLISHED = (
    PublishedPoint("SSR 512x1024", 0.726, 175.0, "RTX 2080Ti"),
    PublishedPoint("SSR 768x1536", 0.744, 85.0, "RTX 2080Ti"),
    PublishedPoint("SSR 1024x2048", 0.752, 53.0, "RTX 2080Ti"),
    PublishedPoint("BiSeNetV2 512x1024", 0.726, 92.0, "RTX 2080Ti"),
    PublishedPoint("FasterSeg 1024x2048", 0.715, 105.0, "RTX 2080Ti"),
)


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path | None) -> None:
    if path is not None:
        fig.savefig(path, dpi=130)


def published_points(analysis: FrontAnalysis) -> tuple[PublishedPoint, ...]:
    """The published points that fit this analysis: Cityscapes data, objectives mIoU and FPS."""
    (y_col, _), (x_col, _) = analysis.objectives[:2]
    fits = y_col in ("retrained_miou", "derived_miou") and x_col.startswith("fps")
    dataset = (analysis.dataset or "").lower()
    return CITYSCAPES_PUBLISHED if fits and dataset.startswith("cityscapes") else ()


def _front_labels(pool: pd.DataFrame, front: np.ndarray, x: np.ndarray) -> list[str | None]:
    """Label of each drawn point: ``genotype_id [baseline tag]`` (``, tie N`` when tied); every
    point of a small sweep, the front of a larger one, the front's extremes when it is crowded."""
    n = len(pool)
    show = front.copy() if front.sum() <= MAX_LABELS else np.zeros(n, dtype=bool)
    if n <= 25:
        show[:] = True
    elif not show.any() and front.any():
        idx = np.flatnonzero(front)
        show[idx[[np.argmin(x[idx]), np.argmax(x[idx])]]] = True
    ties = pool["tie_group"] if "tie_group" in pool.columns else pd.Series(pd.NA, index=pool.index)
    rows = zip(show, pool["genotype_id"], pool["baseline"], ties)
    return [point_label(gid, base, tie) if on else None for on, gid, base, tie in rows]


def _label(ax: Axes, text: str, xy: tuple[float, float], color: str) -> Any:
    """A point label, above and to the right of the point (:func:`_keep_inside` may flip it)."""
    return ax.annotate(text, xy, xytext=(4, 4), textcoords="offset points", fontsize=7,
                       color=color, va="bottom")  # fmt: skip


def _keep_inside(fig: Figure, ax: Axes, labels: list[Any], rounds: int = 6) -> None:
    """Flip labels that run past the axes to the other side of their point; grow the limits
    when a flip is not enough. Ends after a draw in which every label is inside."""
    for _ in range(rounds):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        box = ax.get_window_extent(renderer)
        grow = [0.0, 0.0, 0.0, 0.0]  # px beyond left, right, bottom, top
        flipped = False
        for text in labels:
            ext = text.get_window_extent(renderer)
            dx, dy = text.get_position()
            if ext.x1 > box.x1 and text.get_ha() == "left":
                text.set_ha("right")
                text.set_position((-abs(dx), dy))
                flipped = True
            elif ext.y1 > box.y1 and text.get_va() == "bottom":
                text.set_va("top")
                text.set_position((dx, -abs(dy)))
                flipped = True
            else:
                over = (box.x0 - ext.x0, ext.x1 - box.x1, box.y0 - ext.y0, ext.y1 - box.y1)
                grow = [max(g, o) for g, o in zip(grow, over)]
        if flipped:
            continue
        if max(grow) <= 0:
            return
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        px, py = (x1 - x0) / box.width, (y1 - y0) / box.height
        ax.set_xlim(x0 - 1.2 * max(grow[0], 0) * px, x1 + 1.2 * max(grow[1], 0) * px)
        ax.set_ylim(y0 - 1.2 * max(grow[2], 0) * py, y1 + 1.2 * max(grow[3], 0) * py)


def plot_front(
    analysis: FrontAnalysis, path: str | Path | None = None, published: bool | None = None
) -> Figure:
    """Pareto front: first objective up, second across. One marker per baseline (legend), front
    points blue and dominated ones grey, error bars from the records' intervals, the front as a
    step line (its attainment boundary), the knee ringed, points labelled ``genotype [baseline]``
    (tied ones with their tie group), the hypervolume reference marked. Axis titles carry units
    and measurement conditions (:func:`analysis.labels.axis_title`). ``published=None`` adds the
    paper's figures when the dataset is Cityscapes and the objectives are mIoU and FPS. Every
    point, error bar and label stays inside the axes (:mod:`analysis.layout`)."""
    from matplotlib.lines import Line2D

    (y_col, y_max), (x_col, x_max) = analysis.objectives[:2]
    sy, sx = display_scale(y_col), display_scale(x_col)
    pool = drawn_points(analysis)
    x = pool[x_col].to_numpy(dtype=float) * sx
    y = pool[y_col].to_numpy(dtype=float) * sy
    x_lo, x_hi = (b * sx for b in bounds(pool, x_col))
    y_lo, y_hi = (b * sy for b in bounds(pool, y_col))
    front = pool["on_front"].to_numpy(dtype=bool)
    fig = _figure(10.0, 5.5)
    ax = fig.add_subplot()
    xerr, yerr = error_bars(pool, x_col), error_bars(pool, y_col)
    if xerr is not None or yerr is not None:
        ax.errorbar(
            x,
            y,
            yerr=None if yerr is None else yerr * sy,
            xerr=None if xerr is None else xerr * sx,
            fmt="none",
            ecolor=FADED,
            elinewidth=0.9,
            alpha=0.8,
            zorder=1,
        )
    handles = []
    for base, style in _baselines(pool):
        rows = (pool["baseline"].astype(object).fillna("?") == base).to_numpy()
        for on, color, size in ((False, FADED, 24), (True, FRONT, 42)):
            pick = rows & (front == on)
            ax.scatter(x[pick], y[pick], s=size, marker=style.marker, color=color,
                       alpha=1.0 if on else 0.5, zorder=3 if on else 2)  # fmt: skip
        handles.append(Line2D([], [], ls="", marker=style.marker, color="#555", label=style.legend))
    handles += [
        Line2D([], [], ls="", marker="o", color=FRONT, label="Pareto front"),
        Line2D([], [], ls="", marker="o", color=FADED, alpha=0.5, label="dominated"),
    ]
    if len(analysis.objectives) == 2 and front.any():
        sx_line, sy_line = staircase(np.c_[x[front], y[front]], [x_max, y_max])
        ax.plot(sx_line, sy_line, color=FRONT, lw=1.2, zorder=2)
    labels = []
    for xi, yi, text, on in zip(x, y, _front_labels(pool, front, x), front):
        if text is not None:
            color = FRONT if on else FADED
            labels.append(_label(ax, text, (xi, yi), color))
    if analysis.knee is not None:
        kx, ky = float(analysis.knee[x_col]) * sx, float(analysis.knee[y_col]) * sy
        ax.scatter([kx], [ky], s=190, facecolors="none", edgecolors=KNEE, lw=2, zorder=4)
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec=KNEE, mew=2, ms=11,
                              label=f"knee ({analysis.knee['genotype_id']})"))  # fmt: skip
    ref_y, ref_x = analysis.reference[0] * sy, analysis.reference[1] * sx
    ax.scatter([ref_x], [ref_y], marker="x", s=50, color="black")
    handles.append(Line2D([], [], ls="", marker="x", color="black", label="hypervolume reference"))
    show = bool(published_points(analysis)) if published is None else published
    pub = CITYSCAPES_PUBLISHED if show else ()
    for p in pub:
        ax.scatter([p.fps], [p.miou * 100], marker="D", s=36, color=PUBLISHED, zorder=3)
        labels.append(_label(ax, p.name, (p.fps, p.miou * 100), PUBLISHED))
    if pub:
        text = "published: Cityscapes test,\nRTX 2080Ti (other hardware)"
        handles.append(Line2D([], [], ls="", marker="D", color=PUBLISHED, label=text))
    pub_x, pub_y = [p.fps for p in pub], [p.miou * 100 for p in pub]
    ax.set_xlim(*padded_range(x_lo, x_hi, [ref_x], pub_x))
    ax.set_ylim(*padded_range(y_lo, y_hi, [ref_y], pub_y))
    ax.set_xlabel(axis_title(pool, x_col, x_max))
    ax.set_ylabel(axis_title(pool, y_col, y_max))
    extra = f" over {len(analysis.objectives)} objectives (projected)" * (
        len(analysis.objectives) > 2
    )
    ax.set_title(
        f"Pareto front{extra}: {int(front.sum())} of {len(pool)} trials, "
        f"hypervolume {analysis.hypervolume:.4g}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _keep_inside(fig, ax, labels)
    _save(fig, path)
    return fig


def drawn_points(analysis: FrontAnalysis) -> pd.DataFrame:
    """The trials a front plot draws: those that compete (finite objectives, complete)."""
    return analysis.trials[analysis.trials["excluded_reason"].isna()].reset_index(drop=True)


def _baselines(pool: pd.DataFrame) -> list[tuple[str, BaselineStyle]]:
    """The baselines present among ``pool`` in a fixed order (unknown last, as ``"?"``)."""
    present = set(pool["baseline"].astype(object).fillna("?"))
    known = [(b, baseline_style(b)) for b in BASELINE_STYLES if b in present]
    others = sorted(present - set(BASELINE_STYLES))
    return known + [(b, baseline_style(None if b == "?" else b)) for b in others]


def plot_gap(analysis: FrontAnalysis, path: str | Path | None = None) -> Figure | None:
    """Discretization gap (supernet - derived mIoU) and derived mIoU against each SSR weight
    present (``cfg.ssr.op``, ``out``, ``mid``, ``depth``); the line joins the per-value means.
    None when no SSR weight column has values."""
    pool = analysis.trials[analysis.trials["usable"].fillna(False).to_numpy(dtype=bool)]
    weights = [
        w
        for w in SSR_WEIGHT_COLUMNS
        if w in pool.columns and (pool[w].notna() & finite(pool["discretization_gap"])).any()
    ]
    if not weights:
        return None
    fig = _figure(3.4 * len(weights) + 0.6, 5.6)
    axes = fig.subplots(2, len(weights), squeeze=False, sharey="row")
    for col, weight in enumerate(weights):
        rows = pool[pool[weight].notna() & finite(pool["discretization_gap"])]
        table = analysis.gap[analysis.gap["weight"] == weight]
        wx = pd.to_numeric(rows[weight], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        numeric = not np.isnan(wx).any()
        if not numeric:  # text-valued weights: one slot per value
            slots = {v: i for i, v in enumerate(table["value"])}
            wx = np.array([slots[str(v)] for v in rows[weight]], dtype=float)
        tx = table["value"].astype(float).to_numpy() if numeric else np.arange(len(table))
        for r, (column, mean) in enumerate(
            (("discretization_gap", "gap_mean"), ("derived_miou", "derived_miou_mean"))
        ):
            ax = axes[r, col]
            values = rows[column].to_numpy(dtype=float, na_value=np.nan) * 100
            ax.scatter(
                wx,
                np.where(np.isfinite(values), values, np.nan),  # NaN is not drawn, inf would be
                s=20,
                color=FRONT,
                alpha=0.6,
            )
            ax.plot(
                tx,
                table[mean].to_numpy(dtype=float, na_value=np.nan) * 100,
                color=KNEE,
                lw=1.2,
                marker="_",
                label="mean",
            )
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel("gap (mIoU points)" if r == 0 else "derived mIoU (%)")
            if r == 1:
                ax.set_xlabel(weight)
            if not numeric:
                ax.set_xticks(tx, table["value"].tolist())
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Discretization gap and derived mIoU vs SSR weight (usable trials)", fontsize=10)
    _save(fig, path)
    return fig


def plot_history(analysis: FrontAnalysis, path: str | Path | None = None) -> Figure:
    """Hypervolume of the trials finished so far, by completion order, with its reference."""
    fig = _figure(7.0, 3.6)
    ax = fig.add_subplot()
    hist = analysis.history
    ax.step(hist["step"], hist["hypervolume"], where="post", color=FRONT)
    ax.scatter(hist["step"], hist["hypervolume"], s=10, color=FRONT)
    ref = ", ".join(f"{c}={v:.4g}" for (c, _), v in zip(analysis.objectives, analysis.reference))
    ax.set_title(f"Hypervolume over the sweep (reference {ref})", fontsize=10)
    ax.set_xlabel("trials finished (completion order)")
    ax.set_ylabel("hypervolume")
    ax.grid(alpha=0.3)
    _save(fig, path)
    return fig


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """PNG bytes of a figure, e.g. for ``IPython.display.Image`` in a notebook."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
