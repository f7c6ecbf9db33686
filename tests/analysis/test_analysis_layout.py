"""No point, error bar or label is drawn outside the plot area, PNG or HTML, whatever the front:
skewed, tied, a single point, crowded at the edges, with the published points."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pagedata import page_figure
from test_analysis_views import RANKED, front_records

from analysis import analyze_front, canonical_records, front_html, plot_front
from analysis.layout import padded_range
from analysis.page import FONT_PX, MARGIN, WIDTH

FRONTS = {
    "skewed": lambda: front_records(
        [0.95, 0.9, 0.5, 0.02, 0.01], [1.0, 2.0, 5.0, 5000.0, 8000.0],
        ["ssr", "no_shrink", "darts_pruning", None, "ssr"],
        miou_halfwidth=[0.04, 0.01, 0.1, 0.01, 0.005],
        fps_halfwidth=[0.5, 0.1, 0.1, 0.3, 0.2],
    ),
    "tied": lambda: front_records([0.5] * 6, [100.0] * 6, miou_halfwidth=None, fps_halfwidth=None),
    "single": lambda: front_records([0.731], [57.0], ["no_shrink"]),
    "corner": lambda: front_records(  # the best of both at the top right, long labels there
        [0.99, 0.98, 0.2, 0.985], [999.0, 1000.0, 1.0, 998.0], [None, "no_shrink", "ssr", None]
    ),
    "published": lambda: front_records([0.74, 0.70, 0.6], [40.0, 90.0, 200.0]).assign(
        dataset="cityscapes"
    ),
}  # fmt: skip


def analysis_of(name: str):
    return analyze_front(canonical_records(FRONTS[name]()), RANKED)


def test_padded_range_holds_every_value() -> None:
    assert padded_range([1.0, 3.0]) == pytest.approx((0.88, 3.12))
    lo, hi = padded_range([57.0])
    assert lo < 57.0 < hi
    assert padded_range([0.0]) == pytest.approx((-0.06, 0.06))
    lo, hi = padded_range([1.0, np.nan], [np.inf, 2.0])
    assert lo < 1.0 and hi > 2.0 and np.isfinite([lo, hi]).all()


def _inside(xy: np.ndarray, xlim: tuple[float, float], ylim: tuple[float, float]) -> bool:
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    return bool(
        np.all((xy[:, 0] > xlim[0]) & (xy[:, 0] < xlim[1]))
        and np.all((xy[:, 1] > ylim[0]) & (xy[:, 1] < ylim[1]))
    )


@pytest.mark.parametrize("name", sorted(FRONTS))
def test_png_draws_everything_inside_the_axes(name: str, tmp_path) -> None:
    fig = plot_front(analysis_of(name), tmp_path / "pareto.png")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    box = ax.get_window_extent(renderer)
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    assert ax.texts, "no labels drawn"
    for text in ax.texts:
        ext = text.get_window_extent(renderer)
        assert box.x0 - 0.5 <= ext.x0 and ext.x1 <= box.x1 + 0.5, (name, text.get_text())
        assert box.y0 - 0.5 <= ext.y0 and ext.y1 <= box.y1 + 0.5, (name, text.get_text())
    for collection in ax.collections:
        if hasattr(collection, "get_segments"):  # error bars
            for segment in collection.get_segments():
                assert _inside(segment, xlim, ylim), name
        else:
            assert _inside(collection.get_offsets(), xlim, ylim), name
    for line in ax.lines:
        assert _inside(line.get_xydata(), xlim, ylim), name


def _array(value: object, n: int) -> np.ndarray:
    if value is None:
        return np.zeros(n)
    return np.asarray(value, dtype=float)


@pytest.mark.parametrize("name", sorted(FRONTS))
def test_html_page_draws_everything_inside_the_axes(name: str) -> None:
    data, layout = page_figure(front_html(analysis_of(name)))
    (x0, x1), (y0, y1) = layout["xaxis"]["range"], layout["yaxis"]["range"]
    px_per_x = (WIDTH - MARGIN["l"] - MARGIN["r"]) / (x1 - x0)
    labelled = 0
    for trace in data:
        x, y = np.asarray(trace["x"], dtype=float), np.asarray(trace["y"], dtype=float)
        ex, ey = trace.get("error_x") or {}, trace.get("error_y") or {}
        assert np.all(x + _array(ex.get("array"), len(x)) < x1), (name, trace["name"])
        assert np.all(x - _array(ex.get("arrayminus"), len(x)) > x0), (name, trace["name"])
        assert np.all(y + _array(ey.get("array"), len(y)) < y1), (name, trace["name"])
        assert np.all(y - _array(ey.get("arrayminus"), len(y)) > y0), (name, trace["name"])
        positions = trace.get("textposition") or []
        for xi, text, where in zip(x, trace.get("text") or [], positions):
            if not text:
                continue
            labelled += 1
            width = (len(text) * 0.62 * FONT_PX) / px_per_x  # the label's extent, estimated
            if where.endswith("right"):
                assert xi + width < x1, (name, text)
            else:
                assert xi - width > x0, (name, text)
    assert labelled > 0


def test_published_points_stay_inside_with_their_labels() -> None:
    analysis = analysis_of("published")
    ax = plot_front(analysis).axes[0]
    names = {t.get_text() for t in ax.texts}
    assert "SSR 1024x2048" in names  # drawn (Cityscapes, mIoU and FPS), so checked above
    data, _ = page_figure(front_html(analysis))
    assert any(t["name"].startswith("published") for t in data)
    assert pd.notna(analysis.hypervolume)
