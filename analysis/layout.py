"""Axis ranges of a front plot that hold every mark (labels: :mod:`analysis.placement`).

One rule for the PNG and the HTML page: the range of an axis spans every drawn value *including
its error bar* (and the reference and published points drawn with them), padded by
:data:`PAD` of that span on both sides; a single value (zero span) is padded by
:data:`PAD` of its magnitude. The range is given to the plotting library explicitly, so ticks
can never end below the largest value (the hand-drawn page once clipped the best point).
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
