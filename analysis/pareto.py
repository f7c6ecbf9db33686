"""Pareto dominance, hypervolume and knee, in pure numpy.

Conventions shared by every function here:

- ``values`` is an ``(n, k)`` array, one row per point (trial), one column per objective.
- ``maximize`` is one bool for all objectives or one per objective (mixed directions are fine).
- Internally everything is turned into minimisation by negating the maximised objectives.
- Rows with a NaN in any objective are never on the front and contribute nothing.

Dominance (Pareto 1896; e.g. Deb, *Multi-Objective Optimization using Evolutionary Algorithms*,
2001): ``a`` dominates ``b`` when ``a`` is at least as good as ``b`` in every objective and
strictly better in at least one. Equal points do not dominate each other, so duplicates on the
front are all kept.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

_BLOCK = 256  # rows compared at once in the blocked n-D front


def _as_min(values: np.ndarray | Sequence, maximize: bool | Sequence[bool]) -> np.ndarray:
    """Float copy of ``values`` where every objective is to be minimised."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"values must be a 2-D array (points x objectives), got {arr.shape}")
    signs = np.where(_directions(maximize, arr.shape[1]), -1.0, 1.0)
    return arr * signs


def _directions(maximize: bool | Sequence[bool], k: int) -> np.ndarray:
    flags = np.atleast_1d(np.asarray(maximize, dtype=bool))
    if flags.size == 1:
        flags = np.repeat(flags, k)
    if flags.size != k:
        raise ValueError(f"maximize has {flags.size} entries for {k} objectives")
    return flags


def _front_2d(v: np.ndarray) -> np.ndarray:
    """Non-dominated mask of finite 2-D minimisation points, O(n log n).

    Sort by (f1, f2). Within a group of equal f1 only the rows with the group's smallest f2 can
    survive; they do when that f2 is strictly below the best f2 of every group with a smaller f1.
    """
    n = len(v)
    order = np.lexsort((v[:, 1], v[:, 0]))
    f1, f2 = v[order, 0], v[order, 1]
    starts = np.flatnonzero(np.r_[True, f1[1:] != f1[:-1]])
    group = np.cumsum(np.r_[True, f1[1:] != f1[:-1]]) - 1
    group_min = f2[starts][group]
    best_before = np.r_[np.inf, np.minimum.accumulate(f2)[:-1]]
    prev_best = best_before[starts][group]
    keep_sorted = (f2 == group_min) & (f2 < prev_best)
    mask = np.zeros(n, dtype=bool)
    mask[order] = keep_sorted
    return mask


def _dominated_by(candidates: np.ndarray, front: np.ndarray) -> np.ndarray:
    """For each candidate row, whether any front row dominates it (minimisation)."""
    out = np.zeros(len(candidates), dtype=bool)
    for start in range(0, len(front), _BLOCK):
        f = front[start : start + _BLOCK][None, :, :]
        c = candidates[:, None, :]
        dom = np.all(f <= c, axis=2) & np.any(f < c, axis=2)
        out |= dom.any(axis=1)
    return out


def _front_nd(v: np.ndarray) -> np.ndarray:
    """Non-dominated mask for any number of objectives: lexicographic sort, then blocks.

    After a lexicographic sort a dominator always comes before the point it dominates, so each
    block of rows only has to be compared with the front of the rows before it and with itself.
    Cost O(n log n + n * |front| * k / block) with vectorised blocks.
    """
    n, k = v.shape
    order = np.lexsort(v.T[::-1])
    sv = v[order]
    keep = np.zeros(n, dtype=bool)
    front = np.empty((0, k))
    for start in range(0, n, _BLOCK):
        block = sv[start : start + _BLOCK]
        alive = ~_dominated_by(block, front)
        alive &= ~_dominated_by(block, block[alive]) if alive.any() else alive
        keep[start : start + len(block)] = alive
        front = np.vstack([front, block[alive]])
    mask = np.zeros(n, dtype=bool)
    mask[order] = keep
    return mask


def pareto_mask(values: np.ndarray | Sequence, maximize: bool | Sequence[bool]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (the Pareto front).

    A row is dominated when another row is at least as good in every objective and strictly
    better in one; equal rows are all kept. Rows with NaN are never on the front. Sort-based
    O(n log n) in 2-D; for more objectives a lexicographic sort plus blocked vectorised
    comparisons against the running front (fast while the front is a small part of the data).
    """
    v = _as_min(values, maximize)
    finite = np.all(np.isfinite(v), axis=1)
    mask = np.zeros(len(v), dtype=bool)
    if not finite.any():
        return mask
    sub = v[finite]
    mask[finite] = _front_2d(sub) if sub.shape[1] == 2 else _front_nd(sub)
    return mask


def _hv_2d(v: np.ndarray, ref: np.ndarray) -> float:
    """Area dominated by 2-D minimisation points strictly better than ``ref`` in both."""
    front = v[_front_2d(v)]
    front = front[np.lexsort((front[:, 1], front[:, 0]))]
    # Along the front f1 increases and f2 decreases; each point owns the slab up to the next f1.
    right = np.r_[front[1:, 0], ref[0]]
    return float(np.sum((right - front[:, 0]) * (ref[1] - front[:, 1])))


def _hv_slices(v: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume by slicing objectives (HSO, While, Hingston, Barone & Huband 2006).

    Sort by the last objective; between two consecutive values of it the dominated region is a
    prism whose base is the (k-1)-D hypervolume of the points seen so far. Exact; O(n^2 log n)
    in 3-D, exponential in k in the worst case (fine for NAS fronts of tens to hundreds).
    """
    if len(v) == 0:
        return 0.0
    if v.shape[1] == 2:
        return _hv_2d(v, ref)
    v = v[_front_nd(v)]
    v = v[np.argsort(v[:, -1], kind="stable")]
    tops = np.r_[v[1:, -1], ref[-1]]
    total = 0.0
    for i in range(len(v)):
        depth = tops[i] - v[i, -1]
        if depth > 0:
            total += depth * _hv_slices(v[: i + 1, :-1], ref[:-1])
    return total


def hypervolume(
    values: np.ndarray | Sequence,
    maximize: bool | Sequence[bool],
    reference: Sequence[float] | np.ndarray,
) -> float:
    """Hypervolume indicator (Zitzler & Thiele 1998): the volume of objective space dominated by
    the points and bounded by the ``reference`` point, in the objectives' own units.

    Only points strictly better than the reference in every objective contribute (others, and
    NaN rows, add nothing). Exact in any dimension: a sorted sweep in 2-D, slicing objectives
    (HSO) above. Bigger is better; compare hypervolumes only under the same reference.
    """
    v = _as_min(values, maximize)
    ref = _as_min(np.asarray(reference, dtype=float)[None, :], maximize)[0]
    if ref.shape[0] != v.shape[1]:
        raise ValueError(f"reference has {ref.shape[0]} values for {v.shape[1]} objectives")
    if not np.all(np.isfinite(ref)):
        raise ValueError(f"reference point must be finite, got {reference!r}")
    inside = np.all(np.isfinite(v), axis=1) & np.all(v < ref, axis=1)
    return _hv_slices(v[inside], ref)


def default_reference(
    values: np.ndarray | Sequence, maximize: bool | Sequence[bool], margin: float = 0.1
) -> np.ndarray:
    """Default hypervolume reference point: the worst finite value of each objective, moved a
    further ``margin`` of the objective's range in the bad direction (so the worst points still
    contribute). A zero range uses ``margin * |worst|`` (or ``margin``) instead.

    Record the returned point next to every hypervolume: values under other references are not
    comparable.
    """
    v = _as_min(values, maximize)
    v = v[np.all(np.isfinite(v), axis=1)]
    if len(v) == 0:
        raise ValueError("no finite points to place a reference point")
    worst, best = v.max(axis=0), v.min(axis=0)
    span = worst - best
    span = np.where(span > 0, span, np.where(worst != 0, np.abs(worst), 1.0))
    ref_min = worst + margin * span
    return np.where(_directions(maximize, v.shape[1]), -ref_min, ref_min)


def hypervolume_history(
    values: np.ndarray | Sequence,
    maximize: bool | Sequence[bool],
    reference: Sequence[float] | np.ndarray,
    order: np.ndarray | Sequence,
) -> np.ndarray:
    """Hypervolume as the sweep went: entry ``j`` is the hypervolume of the ``j + 1`` points that
    came first by ``order`` (e.g. trial completion order; ties keep row order, NaN order last).

    Entry ``j`` belongs to row ``np.argsort(order, kind="stable")[j]``. Incremental: only the
    running front is kept, so each step costs one front update and one front hypervolume.
    """
    v = _as_min(values, maximize)
    ref = _as_min(np.asarray(reference, dtype=float)[None, :], maximize)[0]
    rank = np.argsort(np.asarray(order, dtype=float), kind="stable")
    history = np.zeros(len(v))
    front = np.empty((0, v.shape[1]))
    current = 0.0
    for j, row in enumerate(rank):
        p = v[row]
        if np.all(np.isfinite(p)) and np.all(p < ref) and not _dominated_by(p[None], front)[0]:
            front = np.vstack([front[~_dominated_by(front, p[None])], p])
            current = _hv_slices(front, ref)
        history[j] = current
    return history


def knee_index(values: np.ndarray | Sequence, maximize: bool | Sequence[bool]) -> int | None:
    """Row index of the knee of a 2-D Pareto front, or None with fewer than 3 distinct front
    points.

    Max-distance rule (Das 1999, "On characterizing the 'knee' of the Pareto curve based on
    Normal-Boundary Intersection"; also Branke et al. 2004, Satopää et al. 2011 "Kneedle"):
    normalise both objectives to [0, 1] over the front, draw the line joining its two extreme
    points, and take the front point farthest from it, i.e. where giving up a little of one
    objective stops buying much of the other. Ties go to the lowest row index.
    """
    v = _as_min(values, maximize)
    if v.shape[1] != 2:
        raise ValueError("the knee is defined here for exactly 2 objectives")
    idx = np.flatnonzero(pareto_mask(v, False))
    front = v[idx]
    if len(np.unique(front, axis=0)) < 3:
        return None
    lo, hi = front.min(axis=0), front.max(axis=0)
    norm = (front - lo) / (hi - lo)  # distinct front points differ in both objectives
    a, b = norm[np.argmin(norm[:, 0])], norm[np.argmin(norm[:, 1])]
    direction = (b - a) / np.linalg.norm(b - a)
    rel = norm - a
    dist = np.abs(rel[:, 0] * direction[1] - rel[:, 1] * direction[0])
    return int(idx[np.argmax(dist)])


def staircase(
    xy: np.ndarray | Sequence, maximize: bool | Sequence[bool]
) -> tuple[np.ndarray, np.ndarray]:
    """Corner points of the attainment boundary of a 2-D front, for a step plot.

    Sorted by x; between two front points the boundary stays at the y of the point whose x is at
    least as good as every x in between (the next point when x is maximised, the previous one
    when it is minimised).
    """
    arr = np.asarray(xy, dtype=float)
    flags = _directions(maximize, 2)
    pts = arr[pareto_mask(arr, flags)]
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    if len(pts) < 2:
        return pts[:, 0], pts[:, 1]
    xs, ys = [pts[0, 0]], [pts[0, 1]]
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        corner = (x0, y1) if flags[0] else (x1, y0)
        xs += [corner[0], x1]
        ys += [corner[1], y1]
    return np.asarray(xs), np.asarray(ys)
