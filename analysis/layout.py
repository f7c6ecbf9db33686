"""Where things go on a front plot: axis ranges that hold every mark, labels that point inwards.

One rule for the PNG and the HTML page: the range of an axis spans every drawn value *including
its error bar* (and the reference and published points drawn with them), padded by
:data:`PAD` of that span on both sides; a single value (zero span) is padded by
:data:`PAD` of its magnitude. The range is given to the plotting library explicitly, so ticks
can never end below the largest value (the hand-drawn page once clipped the best point).
Labels sit to the right of and above their point unless that would run past the range; then
they flip to the left / below (:func:`label_sides`), and the range grows if even that won't fit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PAD = 0.06


def padded_range(*arrays: np.ndarray | Sequence[float], pad: float = PAD) -> tuple[float, float]:
    """``(lo, hi)`` covering every finite value of ``arrays``, padded by ``pad`` of the span."""
    values = np.concatenate([np.ravel(np.asarray(a, dtype=float)) for a in arrays] or [[]])
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo
    if span <= 0:
        span = abs(hi) if hi != 0 else 1.0
    return lo - pad * span, hi + pad * span


def label_sides(
    x: np.ndarray,
    y: np.ndarray,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    widths: np.ndarray,
    height: float,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float], tuple[float, float]]:
    """Sides for labels of size ``widths`` x ``height`` (data units) anchored at each point.

    Returns ``right`` (True: the label extends to the right of its point), ``up`` (True: above),
    and the ranges, grown where a label fits on neither side.
    """
    (x0, x1), (y0, y1) = x_range, y_range
    right = x + widths <= x1
    up = y + height <= y1
    # a label that fits on neither side: go where there is more room and grow the range
    x0 = min(x0, float(np.min(np.where(right, x0, x - widths), initial=x0)))
    y0 = min(y0, float(np.min(np.where(up, y0, y - height), initial=y0)))
    return right, up, (x0, x1), (y0, y1)
