"""PNG figures of a computed :class:`~analysis.front.FrontAnalysis` (compute first, render second).

Figures are built with matplotlib's object API on an Agg canvas created per figure, so nothing
touches pyplot or the process-wide backend (safe headless, in notebooks and in threads);
matplotlib is imported only when a figure is drawn. Each function returns the ``Figure`` and
saves it when given a path. mIoU columns are shown in percent.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from analysis.front import SSR_WEIGHT_COLUMNS, FrontAnalysis
from analysis.pareto import staircase

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_LABELS = 40
FADED, FRONT, KNEE, PUBLISHED = "#9aa5b1", "#1f5fbf", "#d1495b", "#2a9d5c"


class PublishedPoint(NamedTuple):
    """A published result, drawn for orientation only (other data split, hardware, software)."""

    name: str
    miou: float  # fraction
    fps: float
    note: str


#: Cityscapes *test* mIoU and FPS from the SSR README (ssr-spec.md §9.1), all on an RTX 2080Ti,
#: plain PyTorch fp32, batch 1. Not comparable with numbers measured on another device.
CITYSCAPES_PUBLISHED = (
    PublishedPoint("SSR 512x1024", 0.726, 175.0, "RTX 2080Ti"),
    PublishedPoint("SSR 768x1536", 0.744, 85.0, "RTX 2080Ti"),
    PublishedPoint("SSR 1024x2048", 0.752, 53.0, "RTX 2080Ti"),
    PublishedPoint("BiSeNetV2 512x1024", 0.726, 92.0, "RTX 2080Ti"),
    PublishedPoint("FasterSeg 1024x2048", 0.715, 105.0, "RTX 2080Ti"),
)


def is_miou(column: str) -> bool:
    """mIoU columns hold fractions; they are displayed in percent."""
    return column.endswith("miou") or column == "discretization_gap"


def display_scale(column: str) -> float:
    """Factor from stored units to displayed units (100 for mIoU fractions)."""
    return 100.0 if is_miou(column) else 1.0


def axis_label(column: str, maximize: bool | None = None) -> str:
    """Axis label with units and direction, e.g. ``"retrained_miou (%) ↑"``."""
    unit = " (pts)" if column == "discretization_gap" else " (%)" if is_miou(column) else ""
    arrow = "" if maximize is None else (" ↑" if maximize else " ↓")
    return f"{column}{unit}{arrow}"


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


def plot_front(
    analysis: FrontAnalysis, path: str | Path | None = None, published: bool | None = None
) -> Figure:
    """Pareto front: first objective up, second across; dominated points faded, the front as a
    step line (its attainment boundary), the knee ringed, front points labelled by genotype id,
    the hypervolume reference point marked. ``published=None`` adds the paper's figures when the
    dataset is Cityscapes and the objectives are mIoU and FPS."""
    (y_col, y_max), (x_col, x_max) = analysis.objectives[:2]
    sy, sx = display_scale(y_col), display_scale(x_col)
    pool = analysis.trials[analysis.trials["excluded_reason"].isna()]
    x = pool[x_col].to_numpy(dtype=float) * sx
    y = pool[y_col].to_numpy(dtype=float) * sy
    front = pool["on_front"].to_numpy(dtype=bool)
    fig = _figure(10.0, 5.5)
    ax = fig.add_subplot()
    ax.scatter(x[~front], y[~front], s=22, color=FADED, alpha=0.45, label="dominated")
    ax.scatter(x[front], y[front], s=40, color=FRONT, zorder=3, label="Pareto front")
    if len(analysis.objectives) == 2:
        sx_line, sy_line = staircase(np.c_[x[front], y[front]], [x_max, y_max])
        ax.plot(sx_line, sy_line, color=FRONT, lw=1.2, zorder=2)
    labels = pool["genotype_id"].astype("string").fillna("?").to_numpy()
    # NOTE: label every point of a small sweep, the front of a larger one, and only the knee
    # and the extremes when the front itself is too crowded to read.
    label = front if front.sum() <= MAX_LABELS else np.zeros_like(front)
    if len(pool) <= 25:
        label = np.ones_like(front)
    elif not label.any() and front.any():
        fx = np.flatnonzero(front)
        label[fx[[np.argmin(x[fx]), np.argmax(x[fx])]]] = True
    for xi, yi, text, on, show_label in zip(x, y, labels, front, label):
        if show_label:
            ax.annotate(
                text,
                (xi, yi),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=7,
                color=FRONT if on else FADED,
            )
    if analysis.knee is not None:
        kx, ky = float(analysis.knee[x_col]) * sx, float(analysis.knee[y_col]) * sy
        ax.scatter(
            [kx],
            [ky],
            s=190,
            facecolors="none",
            edgecolors=KNEE,
            lw=2,
            zorder=4,
            label=f"knee ({analysis.knee['genotype_id']})",
        )
    ref_y, ref_x = analysis.reference[0] * sy, analysis.reference[1] * sx
    ax.scatter([ref_x], [ref_y], marker="x", s=50, color="black", label="hypervolume reference")
    show = bool(published_points(analysis)) if published is None else published
    if show:
        for p in CITYSCAPES_PUBLISHED:
            ax.scatter([p.fps], [p.miou * 100], marker="D", s=36, color=PUBLISHED, zorder=3)
            ax.annotate(
                p.name,
                (p.fps, p.miou * 100),
                xytext=(4, -9),
                textcoords="offset points",
                fontsize=7,
                color=PUBLISHED,
            )
        ax.scatter(
            [],
            [],
            marker="D",
            color=PUBLISHED,
            label="published: Cityscapes test,\nRTX 2080Ti (other hardware)",
        )
    ax.set_xlabel(axis_label(x_col, x_max))
    ax.set_ylabel(axis_label(y_col, y_max))
    extra = (
        f" over {len(analysis.objectives)} objectives (projected)"
        if len(analysis.objectives) > 2
        else ""
    )
    ax.set_title(
        f"Pareto front{extra}: {int(front.sum())} of {len(pool)} trials, "
        f"hypervolume {analysis.hypervolume:.4g}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)
    return fig


def plot_gap(analysis: FrontAnalysis, path: str | Path | None = None) -> Figure | None:
    """Discretization gap (supernet - derived mIoU) and derived mIoU against each SSR weight
    present (``cfg.ssr.op``, ``out``, ``mid``, ``depth``); the line joins the per-value means.
    None when no SSR weight column has values."""
    pool = analysis.trials[analysis.trials["usable"].fillna(False).to_numpy(dtype=bool)]
    weights = [
        w
        for w in SSR_WEIGHT_COLUMNS
        if w in pool.columns and (pool[w].notna() & pool["discretization_gap"].notna()).any()
    ]
    if not weights:
        return None
    fig = _figure(3.4 * len(weights) + 0.6, 5.6)
    axes = fig.subplots(2, len(weights), squeeze=False, sharey="row")
    for col, weight in enumerate(weights):
        rows = pool[pool[weight].notna() & pool["discretization_gap"].notna()]
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
            ax.scatter(
                wx,
                rows[column].to_numpy(dtype=float, na_value=np.nan) * 100,
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
