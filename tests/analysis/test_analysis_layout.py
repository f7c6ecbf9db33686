"""No point, error bar or label is drawn outside the plot area, PNG or HTML, whatever the front:
skewed, tied, a single point, crowded at the edges, with the published points."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import pytest
from pagedata import page_figure
from test_analysis_views import RANKED, front_records

from analysis import analyze_front, canonical_records, front_html, plot_front
from analysis.layout import padded_range
from analysis.page import FONT_PX, HEIGHT, MARGIN, WIDTH

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


def _label_boxes(layout: dict) -> np.ndarray:
    """The page's label boxes (x0, y0, x1, y1) in the pixels of the plot area, y up, estimated
    from the font as the page does."""
    (x0, x1), (y0, y1) = layout["xaxis"]["range"], layout["yaxis"]["range"]
    plot_w, plot_h = WIDTH - MARGIN["l"] - MARGIN["r"], HEIGHT - MARGIN["t"] - MARGIN["b"]
    boxes = []
    for note in layout.get("annotations", []):
        lines = note["text"].split("<br>")
        w = max(len(html.unescape(t)) for t in lines) * 0.62 * FONT_PX
        h = 1.3 * FONT_PX * len(lines)
        px = (note["x"] - x0) / (x1 - x0) * plot_w
        py = (note["y"] - y0) / (y1 - y0) * plot_h
        if note["showarrow"]:  # placed away, with a leader line: (ax, ay) is its centre
            cx, cy = px + note["ax"], py - note["ay"]
        else:  # next to its point: shifted lower-left corner
            cx, cy = px + note["xshift"] + w / 2, py + note["yshift"] + h / 2
        boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return np.asarray(boxes).reshape(-1, 4)


@pytest.mark.parametrize("name", sorted(FRONTS))
def test_html_page_draws_everything_inside_the_axes(name: str) -> None:
    data, layout = page_figure(front_html(analysis_of(name)))
    (x0, x1), (y0, y1) = layout["xaxis"]["range"], layout["yaxis"]["range"]
    for trace in data:
        x, y = np.asarray(trace["x"], dtype=float), np.asarray(trace["y"], dtype=float)
        ex, ey = trace.get("error_x") or {}, trace.get("error_y") or {}
        assert np.all(x + _array(ex.get("array"), len(x)) < x1), (name, trace["name"])
        assert np.all(x - _array(ex.get("arrayminus"), len(x)) > x0), (name, trace["name"])
        assert np.all(y + _array(ey.get("array"), len(y)) < y1), (name, trace["name"])
        assert np.all(y - _array(ey.get("arrayminus"), len(y)) > y0), (name, trace["name"])
    boxes = _label_boxes(layout)
    assert len(boxes) > 0
    plot_w, plot_h = WIDTH - MARGIN["l"] - MARGIN["r"], HEIGHT - MARGIN["t"] - MARGIN["b"]
    assert np.all(boxes[:, :2] > -2) and np.all(boxes[:, 2] < plot_w + 2), name
    assert np.all(boxes[:, 3] < plot_h + 2), name


def _overlapping(boxes: np.ndarray) -> list[tuple[int, int]]:
    out = []
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            w = min(a[2], b[2]) - max(a[0], b[0])
            h = min(a[3], b[3]) - max(a[1], b[1])
            if w > 1 and h > 1:
                out.append((i, j))
    return out


CROWDED = lambda: front_records(  # noqa: E731  a front of 12 points packed in a corner
    list(np.linspace(0.60, 0.49, 12)), list(np.linspace(100.0, 112.0, 12)),
    ["ssr", "darts_pruning", "no_shrink"] * 4,
)  # fmt: skip


@pytest.mark.parametrize("name", [*sorted(FRONTS), "crowded"])
def test_labels_overlap_neither_each_other_nor_markers(name: str) -> None:
    records = CROWDED() if name == "crowded" else FRONTS[name]()
    analysis = analyze_front(canonical_records(records), RANKED)
    fig = plot_front(analysis)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = np.asarray([t.get_window_extent(renderer).extents for t in ax.texts])
    assert _overlapping(boxes) == [], (name, [t.get_text() for t in ax.texts])
    points = ax.transData.transform(np.c_[analysis.trials["fps_exclusive"].astype(float),
                                          analysis.trials["derived_miou"].astype(float) * 100])  # fmt: skip
    for text, box in zip(ax.texts, boxes):
        inside = (points[:, 0] > box[0] + 1) & (points[:, 0] < box[2] - 1)
        inside &= (points[:, 1] > box[1] + 1) & (points[:, 1] < box[3] - 1)
        assert not inside.any(), (name, text.get_text())
    _, layout = page_figure(front_html(analysis))
    assert _overlapping(_label_boxes(layout)) == [], name


def test_every_front_point_is_named_and_coinciding_ones_share_a_label() -> None:
    analysis = analysis_of("tied")  # six front points at the same place
    texts = [t.get_text() for t in plot_front(analysis).axes[0].texts]
    assert len(texts) == 1 and all(f"{i:02x}ab12cd34" in texts[0] for i in range(6))


def test_published_points_stay_inside_with_their_labels() -> None:
    analysis = analysis_of("published")
    ax = plot_front(analysis).axes[0]
    names = {t.get_text() for t in ax.texts}
    assert "SSR 1024x2048" in names  # drawn (Cityscapes, mIoU and FPS), so checked above
    data, _ = page_figure(front_html(analysis))
    assert any(t["name"].startswith("published") for t in data)
    assert pd.notna(analysis.hypervolume)
