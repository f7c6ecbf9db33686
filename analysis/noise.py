"""The noise of a point: its intervals (error bars) and which front points are statistically tied.

An objective ``c`` has an interval when the records hold ``c_lo`` and ``c_hi`` (the schema's
``derived_miou_lo/hi``: a 90 % bootstrap interval over validation images; ``fps_exclusive_lo/hi``:
the slowest and fastest measurement pass). A point without one (or with a non-finite bound) is
taken as exact in that objective: its interval is the value itself.

Two front points are **tied** when their intervals overlap in *every* objective: the data cannot
order them (issue: a front that measures noise, not architectures). Ties chain: a tie group is a
connected set of front points each tied with another member. Groups are numbered 1, 2, ... best
first by the first objective; untied points have no group.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: What the schema's intervals are, for the text under a table.
INTERVAL_MEANING = {
    "derived_miou": "90 % bootstrap interval over validation images",
    "fps_exclusive": "slowest to fastest measurement pass",
}


def interval_columns(frame: pd.DataFrame, column: str) -> tuple[str, str] | None:
    """``(column_lo, column_hi)`` when the records carry an interval for ``column`` with values."""
    lo, hi = f"{column}_lo", f"{column}_hi"
    if lo in frame.columns and hi in frame.columns and frame[[lo, hi]].notna().all(axis=1).any():
        return lo, hi
    return None


def _floats(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def bounds(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bound of ``column`` per row: its interval where both ends are finite and
    hold the value's side (lo <= hi), else the value itself."""
    value = _floats(frame[column])
    cols = interval_columns(frame, column)
    if cols is None:
        return value.copy(), value.copy()
    lo, hi = _floats(frame[cols[0]]), _floats(frame[cols[1]])
    ok = np.isfinite(lo) & np.isfinite(hi) & (lo <= hi)
    return np.where(ok, np.minimum(lo, value), value), np.where(ok, np.maximum(hi, value), value)


def error_bars(frame: pd.DataFrame, column: str) -> np.ndarray | None:
    """``(2, n)`` distances below and above each value (for ``errorbar``), or None when the
    records carry no interval for ``column``."""
    if interval_columns(frame, column) is None:
        return None
    value = _floats(frame[column])
    lo, hi = bounds(frame, column)
    return np.nan_to_num(np.vstack([value - lo, hi - value]), nan=0.0)


def tie_groups(front: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """Tie group (Int64, NA when untied) of each row of ``front`` (already ordered best first):
    connected components of "intervals overlap in every objective"."""
    n = len(front)
    overlap = np.ones((n, n), dtype=bool)
    for column in columns:
        lo, hi = bounds(front, column)
        overlap &= (lo[:, None] <= hi[None, :]) & (lo[None, :] <= hi[:, None])
    np.fill_diagonal(overlap, False)
    group = np.full(n, -1)
    count = 0
    for start in range(n):
        if group[start] >= 0 or not overlap[start].any():
            continue
        count += 1
        stack = [start]
        group[start] = count
        while stack:
            i = stack.pop()
            for j in np.flatnonzero(overlap[i] & (group < 0)):
                group[j] = count
                stack.append(j)
    out = pd.array(np.where(group > 0, group, 0), dtype="Int64")
    return pd.Series(out, index=front.index, dtype="Int64").mask(group <= 0)


def tie_summary(front: pd.DataFrame) -> str | None:
    """``"N points are statistically tied: a, b (group 1); c, d (group 2)"``, or None."""
    tied = front[front["tie_group"].notna()]
    if len(tied) == 0:
        return None
    groups = [
        f"{', '.join(map(str, rows['trial_id']))} (group {g})"
        for g, rows in tied.groupby("tie_group", sort=True)
    ]
    return (
        f"{len(tied)} points are statistically tied: {'; '.join(groups)}. Their intervals overlap "
        "in every objective, so their order within a group means nothing."
    )
