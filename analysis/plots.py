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

from analysis.effects import Curve, SettingEffects
from analysis.front import FrontAnalysis
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
from analysis.placement import place_labels
from analysis.tables import hypervolume_text, hypervolume_units, reference_text

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
    "plot_effects",
    "plot_front",
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


def front_labels(
    pool: pd.DataFrame, x: np.ndarray, y: np.ndarray
) -> list[tuple[str, float, float]]:
    """``(text, x, y)`` per labelled point: the front points (at most :data:`MAX_LABELS`), each
    ``genotype_id [baseline tag]`` (``, tie N`` when tied); front points drawn at the same place
    share one label (a line each), so none hides behind another unnamed. Dominated points are not labelled
    (hover on the page and the report's table name them)."""
    front = pool["on_front"].to_numpy(dtype=bool)
    if front.sum() > MAX_LABELS:
        return []
    ties = pool["tie_group"] if "tie_group" in pool.columns else pd.Series(pd.NA, index=pool.index)
    groups: dict[tuple[str, str], tuple[float, float, list[str]]] = {}
    for i in np.flatnonzero(front):
        text = point_label(pool["genotype_id"].iloc[i], pool["baseline"].iloc[i], ties.iloc[i])
        _, _, texts = groups.setdefault((f"{x[i]:.4g}", f"{y[i]:.4g}"), (x[i], y[i], []))
        if text not in texts:
            texts.append(text)
    return [("\n".join(texts), float(gx), float(gy)) for gx, gy, texts in groups.values()]


def _place(fig: Figure, ax: Axes, labels: list[tuple[str, float, float, str]],
           points: np.ndarray, rounds: int = 3) -> list[Any]:  # fmt: skip
    """Draw ``(text, x, y, color)`` labels where they overlap no other label and no marker
    (:func:`analysis.placement.place_labels`), with a leader line when moved off their point;
    the axes grow when a label would leave them."""
    from matplotlib.transforms import Bbox

    drawn: list[Any] = []
    for _ in range(rounds):
        for artist in drawn:
            artist.remove()
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        sizes = []
        for text, *_ in labels:
            probe = ax.text(0, 0, text, fontsize=7)
            ext = probe.get_window_extent(renderer)
            sizes.append((ext.width + 2, ext.height + 1))
            probe.remove()
        box = ax.get_window_extent(renderer)
        anchors = ax.transData.transform([(lx, ly) for _, lx, ly, _ in labels]).reshape(-1, 2)
        where = place_labels(anchors, np.asarray(sizes).reshape(-1, 2),
                             ax.transData.transform(points), tuple(box.extents))  # fmt: skip
        to_pt = 72.0 / fig.dpi
        drawn = []
        for (text, lx, ly, color), dx, dy, far in zip(labels, where.dx, where.dy, where.far):
            arrow = {"arrowstyle": "-", "color": color, "lw": 0.6, "shrinkA": 0, "shrinkB": 4}
            drawn.append(ax.annotate(text, (lx, ly), xytext=(dx * to_pt, dy * to_pt),
                                     textcoords="offset points", fontsize=7, color=color,
                                     ha="left", va="bottom", arrowprops=arrow if far else None,
                                     annotation_clip=False, zorder=5))  # fmt: skip
            drawn[-1].set_in_layout(False)
        fig.canvas.draw()
        extents = [a.get_window_extent(renderer) for a in drawn]
        outer = Bbox.union([box, *extents]) if extents else box
        grow = (box.x0 - outer.x0, outer.x1 - box.x1, box.y0 - outer.y0, outer.y1 - box.y1)
        if max(grow) <= 0.5:
            break
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        px, py = (x1 - x0) / box.width, (y1 - y0) / box.height
        ax.set_xlim(x0 - 1.1 * grow[0] * px, x1 + 1.1 * grow[1] * px)
        ax.set_ylim(y0 - 1.1 * grow[2] * py, y1 + 1.1 * grow[3] * py)
    return drawn


def plot_front(
    analysis: FrontAnalysis, path: str | Path | None = None, published: bool | None = None
) -> Figure:
    """Pareto front: first objective up, second across. One hollow marker per baseline (legend),
    so that points at the same place stay visible; front points blue and dominated ones grey,
    error bars from the records' intervals, the front as a step line (its attainment boundary),
    the knee ringed, the hypervolume reference marked. Front points are labelled
    ``genotype [baseline]`` (tied ones with their tie group) where no label overlaps another or
    a marker (:func:`_place`). Axis titles carry units and measurement conditions
    (:func:`analysis.labels.axis_title`); the title gives the hypervolume in the axes' units.
    ``published=None`` adds the paper's figures when the dataset is Cityscapes and the objectives
    are mIoU and FPS."""
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
    _errors(ax, pool, x, y, (x_col, sx), (y_col, sy))
    handles = _markers(ax, pool, x, y, front)
    if len(analysis.objectives) == 2 and front.any():
        sx_line, sy_line = staircase(np.c_[x[front], y[front]], [x_max, y_max])
        ax.plot(sx_line, sy_line, color=FRONT, lw=1.0, alpha=0.7, zorder=2)
    labels = [(t, lx, ly, FRONT) for t, lx, ly in front_labels(pool, x, y)]
    if analysis.knee is not None:
        kx, ky = float(analysis.knee[x_col]) * sx, float(analysis.knee[y_col]) * sy
        ax.scatter([kx], [ky], s=190, facecolors="none", edgecolors=KNEE, lw=1.6, zorder=4)
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec=KNEE, mew=2, ms=11,
                              label=f"knee ({analysis.knee['genotype_id']})"))  # fmt: skip
    ref_y, ref_x = analysis.reference[0] * sy, analysis.reference[1] * sx
    ax.scatter([ref_x], [ref_y], marker="x", s=50, color="black")
    handles.append(Line2D([], [], ls="", marker="x", color="black", label="hypervolume reference"))
    show = bool(published_points(analysis)) if published is None else published
    pub = CITYSCAPES_PUBLISHED if show else ()
    for p in pub:
        ax.scatter([p.fps], [p.miou * 100], marker="D", s=36, color=PUBLISHED, zorder=3)
        labels.append((p.name, p.fps, p.miou * 100, PUBLISHED))
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
        f"hypervolume {hypervolume_text(analysis)}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    points = np.r_[np.c_[x, y], np.c_[pub_x, pub_y].reshape(-1, 2), [[ref_x, ref_y]]]
    _place(fig, ax, labels, points)
    _save(fig, path)
    return fig


def _errors(ax: Axes, pool: pd.DataFrame, x: np.ndarray, y: np.ndarray,
            xs: tuple[str, float], ys: tuple[str, float]) -> None:  # fmt: skip
    """Error bars from the records' intervals (``xs``/``ys``: column and display scale)."""
    xerr, yerr = error_bars(pool, xs[0]), error_bars(pool, ys[0])
    if xerr is None and yerr is None:
        return
    ax.errorbar(x, y, yerr=None if yerr is None else yerr * ys[1],
                xerr=None if xerr is None else xerr * xs[1], fmt="none", ecolor=FADED,
                elinewidth=0.9, alpha=0.8, zorder=1)  # fmt: skip


def _markers(ax: Axes, pool: pd.DataFrame, x: np.ndarray, y: np.ndarray,
             front: np.ndarray) -> list[Any]:  # fmt: skip
    """Hollow markers, one shape per baseline (a point under another stays visible); legend
    handles for the shapes and the two colours."""
    from matplotlib.lines import Line2D

    handles = []
    for base, style in _baselines(pool):
        rows = (pool["baseline"].astype(object).fillna("?") == base).to_numpy()
        for on, color, size, lw in ((False, FADED, 30, 1.0), (True, FRONT, 52, 1.6)):
            pick = rows & (front == on)
            ax.scatter(x[pick], y[pick], s=size, marker=style.marker, facecolors="none",
                       edgecolors=color, linewidths=lw, zorder=3 if on else 2)  # fmt: skip
        handles.append(Line2D([], [], ls="", marker=style.marker, mfc="none", mec="#555",
                              label=style.legend))  # fmt: skip
    return [
        *handles,
        Line2D([], [], ls="", marker="o", mfc="none", mec=FRONT, mew=1.6, label="Pareto front"),
        Line2D([], [], ls="", marker="o", mfc="none", mec=FADED, label="dominated"),
    ]


def drawn_points(analysis: FrontAnalysis) -> pd.DataFrame:
    """The trials a front plot draws: those that compete (finite objectives, complete)."""
    return analysis.trials[analysis.trials["excluded_reason"].isna()].reset_index(drop=True)


def _baselines(pool: pd.DataFrame) -> list[tuple[str, BaselineStyle]]:
    """The baselines present among ``pool`` in a fixed order (unknown last, as ``"?"``)."""
    present = set(pool["baseline"].astype(object).fillna("?"))
    known = [(b, baseline_style(b)) for b in BASELINE_STYLES if b in present]
    others = sorted(present - set(BASELINE_STYLES))
    return known + [(b, baseline_style(None if b == "?" else b)) for b in others]


def _effect_panel(ax: Axes, curve: Curve, outcome: str, fitted: bool) -> None:
    """One setting against one outcome: the trials (one marker per baseline) and, when enough
    trials carry an estimate (``fitted``), the fitted line with its 90 % band."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    scale = display_scale(outcome)
    for base, style in _baselines(pd.DataFrame({"baseline": curve.baseline})):
        pick = curve.baseline == base
        ax.scatter(curve.x[pick], curve.y[pick] * scale, s=16, marker=style.marker,
                   facecolors="none", edgecolors=FRONT, linewidths=0.9, zorder=3)  # fmt: skip
    if fitted and curve.band_lo is not None:
        ax.fill_between(curve.grid, curve.band_lo * scale, curve.band_hi * scale, color=FRONT,
                        alpha=0.18, lw=0, zorder=1)  # fmt: skip
        ax.plot(curve.grid, curve.line * scale, color=FRONT, lw=1.2, zorder=2)
    if curve.log:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=7)


def plot_effects(effects: SettingEffects, path: str | Path | None = None) -> Figure | None:
    """What each setting bought, drawn: one row per numeric setting, one column per outcome
    (objectives, then the gap); each panel shows the trials the estimate used (as partial
    residuals, their baseline's level removed) and, where at least :data:`analysis.effects.MIN_TRIALS` trials carry
    the setting, the fitted line and its 90 % bootstrap band: never a line through a few single
    trials. None when no setting has two trials. mIoU and the gap in percentage points."""
    from matplotlib.lines import Line2D

    from analysis.bought import setting_name, unit

    settings = list(dict.fromkeys(s for s, _ in effects.curves))
    if not settings:
        return None
    outcomes = effects.outcomes
    fig = _figure(3.0 * len(outcomes) + 0.4, 1.9 * len(settings) + 0.9)
    axes = fig.subplots(len(settings), len(outcomes), squeeze=False, sharey="col")
    verdicts = effects.table.set_index(["setting", "outcome"])["verdict"]
    for r, setting in enumerate(settings):
        for c, outcome in enumerate(outcomes):
            ax = axes[r, c]
            curve = effects.curves.get((setting, outcome))
            if curve is None:
                ax.set_axis_off()
                continue
            verdict = str(verdicts.get((setting, outcome), ""))
            _effect_panel(ax, curve, outcome, fitted=not verdict.startswith("too few"))
            mark = "✔ distinguishable" if verdict == "distinguishable" else verdict
            ax.set_xlabel(f"{setting_name(setting)}: {mark}", fontsize=8,
                          color=KNEE if verdict == "distinguishable" else "black")  # fmt: skip
            if r == 0:
                ax.set_title(f"{outcome} ({unit(outcome)})", fontsize=9)
    present = {b for curve in effects.curves.values() for b in curve.baseline}
    handles = [Line2D([], [], ls="", marker=baseline_style(b).marker, mfc="none", mec=FRONT,
                      label=baseline_style(b).legend) for b in sorted(present)]  # fmt: skip
    handles.append(Line2D([], [], color=FRONT, lw=6, alpha=0.25, label="fit, 90 % band"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    fig.suptitle(
        f"What each setting bought ({effects.trials} complete trials; points: partial residuals, "
        "baseline level removed)" + (": too few trials to say anything" * effects.too_small),
        fontsize=10,
    )
    _save(fig, path)
    return fig


def plot_history(analysis: FrontAnalysis, path: str | Path | None = None) -> Figure:
    """Hypervolume of the trials finished so far, by completion order, with its reference."""
    fig = _figure(7.0, 3.6)
    ax = fig.add_subplot()
    hist = analysis.history
    total, unit = hypervolume_units(analysis)
    scale = total / analysis.hypervolume if analysis.hypervolume else 1.0
    ax.step(hist["step"], hist["hypervolume"] * scale, where="post", color=FRONT)
    ax.scatter(hist["step"], hist["hypervolume"] * scale, s=10, color=FRONT)
    ax.set_title(f"Hypervolume over the sweep\nreference point: {reference_text(analysis, 4)}",
                 fontsize=9)  # fmt: skip
    ax.set_xlabel("trials finished (completion order)")
    ax.set_ylabel(f"hypervolume ({unit})")
    ax.grid(alpha=0.3)
    _save(fig, path)
    return fig


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """PNG bytes of a figure, e.g. for ``IPython.display.Image`` in a notebook."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
