"""Point labels that overlap nothing: a greedy placement in pixels, shared by the PNG and the page.

Each label is a box of known size (measured by matplotlib, estimated from the font for plotly)
anchored at its point. Candidate positions ring the point at growing distances (right, left,
above, below and the four corners); labels are placed one at a time (left to right) at the
candidate with the lowest cost, where overlapping an already placed label costs most, covering
any drawn marker next, leaving the plot area after that, and distance least. A label moved away
from its point gets a leader line (the caller draws it when :attr:`Placement.far` is set). This
is the usual greedy heuristic for point-feature labelling (Christensen, Marks & Shieber 1995).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: Distances (px) from the point at which a label's nearest edge is tried, nearest first.
RINGS = (7.0, 15.0, 26.0, 40.0, 58.0)
MARKER_PX = 6.0  # half the side of the box a marker occupies


class Placement(NamedTuple):
    """Where each label's lower-left corner goes, relative to its point (px, y up)."""

    dx: np.ndarray
    dy: np.ndarray
    far: np.ndarray  # True: drawn away from its point (give it a leader line)
    overlaps: int  # label pairs that still overlap (0 unless there was no room)


def _candidates(w: float, h: float) -> list[tuple[float, float, float]]:
    """(dx, dy, distance) of the lower-left corner for a ``w`` x ``h`` box, nearest first."""
    out = []
    for d in RINGS:
        out += [(d, 0.3 * d, d), (d, -h - 0.3 * d, d), (-w - d, 0.3 * d, d),
                (-w - d, -h - 0.3 * d, d), (-w / 2, d, d), (-w / 2, -h - d, d),
                (d, -h / 2, d), (-w - d, -h / 2, d)]  # fmt: skip
    return out


def _overlap(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Overlap areas of ``box`` (x0, y0, x1, y1) with each of ``boxes`` (k, 4)."""
    if len(boxes) == 0:
        return np.zeros(0)
    w = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    h = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def _outside(box: np.ndarray, area: tuple[float, float, float, float]) -> float:
    x0, y0, x1, y1 = area
    inside_w = max(0.0, min(box[2], x1) - max(box[0], x0))
    inside_h = max(0.0, min(box[3], y1) - max(box[1], y0))
    return (box[2] - box[0]) * (box[3] - box[1]) - inside_w * inside_h


def place_labels(
    anchors: np.ndarray,
    sizes: np.ndarray,
    markers: np.ndarray,
    area: tuple[float, float, float, float],
) -> Placement:
    """Place labels of ``sizes`` (n, 2: width, height px) at ``anchors`` (n, 2 px) so that they
    overlap neither each other nor the ``markers`` (m, 2 px) and stay inside ``area``
    (x0, y0, x1, y1 px)."""
    n = len(anchors)
    dx, dy, far = np.zeros(n), np.zeros(n), np.zeros(n, dtype=bool)
    m = np.asarray(markers, dtype=float).reshape(-1, 2)
    marker_boxes = np.c_[m - MARKER_PX, m + MARKER_PX]
    placed = np.zeros((0, 4))
    for i in np.argsort(anchors[:, 0], kind="stable"):
        (ax, ay), (w, h) = anchors[i], sizes[i]
        own = np.all(np.abs(m - anchors[i]) < 1.0, axis=1)  # its own point (within a pixel)
        best, best_cost = None, np.inf
        for cx, cy, dist in _candidates(w, h):
            box = np.array([ax + cx, ay + cy, ax + cx + w, ay + cy + h])
            cost = (
                1000.0 * _overlap(box, placed).sum()
                + 50.0 * _overlap(box, marker_boxes[~own]).sum()
                + 20.0 * _outside(box, area)
                + dist
            )
            if cost < best_cost:
                best, best_cost = (cx, cy, dist, box), cost
        cx, cy, dist, box = best
        dx[i], dy[i], far[i] = cx, cy, dist > RINGS[0]
        placed = np.vstack([placed, box])
    overlaps = sum(int((_overlap(b, placed[j + 1 :]) > 0.5).sum()) for j, b in enumerate(placed))
    return Placement(dx, dy, far, overlaps)
