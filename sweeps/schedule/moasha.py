"""MO-ASHA: asynchronous successive halving that promotes by non-dominated sorting.

ASHA (Li et al., "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020) stops a
trial at a rung when its one metric is below the top ``1 / reduction_factor`` of the trials
recorded at that rung so far. With mIoU alone, a search that is slightly less accurate but much
cheaper never reaches the front. MO-ASHA (Schmucker et al., "Multi-objective Asynchronous
Successive Halving", 2021; Syne Tune's ``MOASHA`` is the reference design, Ray Tune has none)
keeps the asynchronous rule and replaces the one-metric order by a multi-objective one.

The order used here is NSGA-II's (Deb et al., "A fast and elitist multiobjective genetic
algorithm: NSGA-II", IEEE TEC 2002): non-dominated sorting into fronts, then crowding distance
within a front (boundary points first, then the most isolated). Syne Tune ranks within a front
with an epsilon-net instead; crowding was chosen because it is deterministic, needs no extra
parameter and keeps each front's extreme points (here: the most accurate and the cheapest
search), which are exactly the ends of the accuracy-cost front a sweep is run to find.

Rule, for a trial reaching rung ``r`` (time ``grace_period * reduction_factor**k < max_t``):
the set ``S`` is the trials recorded at ``r`` so far plus this one; the trial's position is the
number of members of ``S`` strictly ahead of it in the NSGA-II order (equal points share a
position); it continues iff ``position < |S| / reduction_factor``, i.e. it is within the top
``1 / reduction_factor`` of ``S``. It is then recorded at ``r``. Only the highest rung at or
below the reported time is decided (a resumed trial that skips rungs is decided once). A trial
whose objective at a rung is NaN or infinite stopped learning (it diverged): it is stopped and
not recorded. Metrics a result lacks carry their last reported value forward (the sweep's
``expected_gmacs`` is reported during the search phase only); a metric never reported skips
the decision with a warning. Results at ``time >= max_t`` stop the trial, as ASHA does.
"""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
from ray.tune.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler

from analysis.pareto import pareto_mask

log = logging.getLogger(__name__)

MODES = ("max", "min")


# --------------------------------------------------------------------------------------------
# NSGA-II ranking, pure numpy


def _as_min(points: Sequence[Sequence[float]] | np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """``(n, k)`` float array where every objective is minimised (maximised ones negated)."""
    v = np.array(points, dtype=float)
    if v.ndim == 1 and v.size == 0:
        v = v.reshape(0, len(modes))
    if v.ndim != 2 or v.shape[1] != len(modes):
        raise ValueError(f"points must be (n, {len(modes)}) for modes {list(modes)}")
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"modes must be 'max' or 'min', got {bad}")
    sign = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    return v * sign


def nondominated_fronts(
    points: Sequence[Sequence[float]] | np.ndarray, modes: Sequence[str]
) -> list[int]:
    """Front index of every point: 0 = non-dominated, 1 = non-dominated once front 0 is removed...

    Equal points do not dominate each other, so they share a front. Points with a NaN or
    infinite objective all go to one front after the last finite one. Two objectives:
    :func:`_fronts_2d`, O(n log n); more: fronts peeled with :func:`analysis.pareto.pareto_mask`.
    """
    v = _as_min(points, modes)
    finite = np.all(np.isfinite(v), axis=1)
    front = np.zeros(len(v), dtype=int)
    remaining = np.flatnonzero(finite)
    f = 0
    if v.shape[1] == 2 and remaining.size:
        front[remaining] = _fronts_2d(v[remaining])
        f = int(front[remaining].max()) + 1
        remaining = remaining[:0]
    while remaining.size:
        on = pareto_mask(v[remaining], maximize=False)
        front[remaining[on]] = f
        remaining = remaining[~on]
        f += 1
    front[~finite] = f
    return front.tolist()


def _fronts_2d(v: np.ndarray) -> np.ndarray:
    """Front index of finite 2-D minimisation points in one pass (Jensen's sweep, O(n log n)).

    In the order of (x, y), a point is dominated exactly by the earlier points, other than its
    equals, whose y is no larger; so its front is the number of fronts whose smallest y so far
    is at most its y (those smallest values never decrease from one front to the next), found by
    bisection. Equal points are placed together, before any of them counts.
    """
    import bisect

    order = np.lexsort((v[:, 1], v[:, 0]))
    pts = v[order].tolist()  # NOTE: Python floats: the sweep below runs per point
    n = len(pts)
    sorted_front = [0] * n
    lowest: list[float] = []  # per front, the smallest y of its members so far
    i = 0
    while i < n:
        j = i
        x, y = pts[i]
        while j + 1 < n and pts[j + 1][0] == x and pts[j + 1][1] == y:
            j += 1
        f = bisect.bisect_right(lowest, y)
        sorted_front[i : j + 1] = [f] * (j + 1 - i)
        if f == len(lowest):
            lowest.append(y)
        else:
            lowest[f] = y
        i = j + 1
    front = np.zeros(n, dtype=int)
    front[order] = sorted_front
    return front


def crowding_distance(
    points: Sequence[Sequence[float]] | np.ndarray,
    modes: Sequence[str],
    fronts: Sequence[int] | None = None,
) -> list[float]:
    """NSGA-II crowding distance of every point within its front (larger = more isolated).

    Per objective, the front's points are sorted; the two ends get ``inf`` and every other point
    adds the gap between its neighbours divided by the objective's range on that front (an
    objective with zero range adds nothing). Computed over the front's distinct points, so
    equal points get equal distances. Points with a non-finite objective get 0.
    """
    v = _as_min(points, modes)
    fronts_arr = np.asarray(
        nondominated_fronts(v, ["min"] * v.shape[1]) if fronts is None else fronts
    )
    dist = np.zeros(len(v))
    finite = np.all(np.isfinite(v), axis=1)
    for f in np.unique(fronts_arr[finite]):
        members = np.flatnonzero((fronts_arr == f) & finite)
        uniq, inverse = np.unique(v[members], axis=0, return_inverse=True)
        d = np.zeros(len(uniq))
        for m in range(uniq.shape[1]):
            # NOTE: ties on objective m are ordered by the whole row, so the ends are deterministic
            order = np.lexsort((*uniq.T[::-1], uniq[:, m]))
            col = uniq[order, m]
            d[order[0]] = d[order[-1]] = math.inf
            span = col[-1] - col[0]
            if span > 0 and len(col) > 2:
                d[order[1:-1]] += (col[2:] - col[:-2]) / span
        dist[members] = d[inverse.reshape(-1)]
    return dist.tolist()


def nondominated_rank(
    points: Sequence[Sequence[float]] | np.ndarray, modes: Sequence[str]
) -> list[int]:
    """Position of every point in the NSGA-II order: by front, then by crowding distance (larger
    first). 0 is best; points with equal (front, distance) share the position, which is the
    number of points strictly ahead of them. Non-finite points come last.
    """
    fronts = np.asarray(nondominated_fronts(points, modes))
    dist = np.asarray(crowding_distance(points, modes, fronts))
    ahead = (fronts[None, :] < fronts[:, None]) | (
        (fronts[None, :] == fronts[:, None]) & (dist[None, :] > dist[:, None])
    )  # ahead[i, j]: j is strictly ahead of i
    return ahead.sum(axis=1).tolist()


def position_of_last(points: Sequence[Sequence[float]] | np.ndarray, modes: Sequence[str]) -> int:
    """``nondominated_rank(points, modes)[-1]`` without the n x n comparison: the number of
    points strictly ahead of the last one (crowding distances of its own front only)."""
    v = _as_min(points, modes)
    fronts = np.asarray(nondominated_fronts(v, ["min"] * v.shape[1]))
    f = fronts[-1]
    members = np.flatnonzero(fronts == f)
    if not np.all(np.isfinite(v[-1])):
        return int(np.sum(fronts < f))
    dist = np.asarray(crowding_distance(v[members], ["min"] * v.shape[1], [0] * len(members)))
    return int(np.sum(fronts < f) + np.sum(dist > dist[-1]))


# --------------------------------------------------------------------------------------------
# The Tune scheduler


def _number(value: Any) -> float:
    """A reported value as a float; anything that is not a real number becomes NaN."""
    if isinstance(value, (bool, int, float, np.integer, np.floating)):
        return float(value)
    return math.nan


class MOASHAScheduler(FIFOScheduler):
    """Multi-objective ASHA for Ray Tune (see the module docstring for the rule).

    Args:
        time_attr: the monotone progress key of every report (the sweep's global epoch ``step``).
        metrics: the per-epoch objectives ranked at each rung.
        modes: ``"max"`` or ``"min"``, one per metric.
        max_t: reports at ``time_attr >= max_t`` stop the trial (its budget is spent).
        grace_period: the first rung; rungs are at ``grace_period * reduction_factor**k < max_t``.
        reduction_factor: a trial continues when it is within the top ``1 / reduction_factor``.

    The metrics and modes are the scheduler's own: do not pass ``metric``/``mode`` to
    ``tune.TuneConfig`` alongside it (Tune then raises, as for ASHA built with a metric).
    """

    def __init__(
        self,
        time_attr: str = "step",
        metrics: Sequence[str] = ("val_miou", "expected_gmacs"),
        modes: Sequence[str] = ("max", "min"),
        max_t: float = 100,
        grace_period: float = 1,
        reduction_factor: float = 2,
    ) -> None:
        if isinstance(metrics, str) or isinstance(modes, str):
            raise ValueError("metrics and modes must be sequences of names, one mode per metric")
        metrics, modes = tuple(metrics), tuple(modes)
        if not metrics or len(set(metrics)) != len(metrics):
            raise ValueError(f"metrics must be distinct and at least one, got {list(metrics)}")
        if len(modes) != len(metrics) or any(m not in MODES for m in modes):
            raise ValueError(f"modes must be 'max'/'min', one per metric, got {list(modes)}")
        if not max_t > 0 or not grace_period > 0 or grace_period > max_t:
            raise ValueError(f"need 0 < grace_period <= max_t, got {grace_period}, {max_t}")
        if not reduction_factor > 1:
            raise ValueError(f"reduction_factor must be > 1, got {reduction_factor}")
        super().__init__()
        self._time_attr = time_attr
        self._metrics = metrics
        self._modes = modes
        self._max_t = max_t
        self._rf = reduction_factor
        milestones, t = [], grace_period
        while t < max_t:
            milestones.append(t)
            t *= reduction_factor
        #: rung time -> {trial_id: objective values at that rung}, ascending by time
        self._rungs: list[tuple[float, dict[str, tuple[float, ...]]]] = [
            (m, {}) for m in milestones
        ]
        self._last: dict[str, dict[str, float]] = {}  # trial_id -> metric -> last reported value
        self._warned: set[str] = set()
        self._num_stopped = 0

    # ---- properties the sweep spec and tests read
    @property
    def metrics(self) -> tuple[str, ...]:
        return self._metrics

    @property
    def modes(self) -> tuple[str, ...]:
        return self._modes

    @property
    def milestones(self) -> list[float]:
        return [m for m, _ in self._rungs]

    def recorded(self, milestone: float) -> dict[str, tuple[float, ...]]:
        """A copy of the objective values recorded at the rung of time ``milestone``."""
        return dict(next(rec for m, rec in self._rungs if m == milestone))

    # ---- Tune's scheduler interface
    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        # NOTE: metric/mode from TuneConfig are one objective: MO-ASHA keeps its own objectives
        return metric is None and mode is None

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._last.setdefault(trial.trial_id, {})

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        action = self._on_result(trial.trial_id, result)
        if action == TrialScheduler.STOP:
            self._num_stopped += 1
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._on_result(trial.trial_id, result)  # records a rung reached by the last result
        self._last.pop(trial.trial_id, None)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._last.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        objectives = ", ".join(f"{m} {d}" for m, d in zip(self._metrics, self._modes))
        rungs = " | ".join(
            f"t={m:g}: {len(rec)} recorded, {self._first_front_size(rec)} on front 0"
            for m, rec in self._rungs
        )
        return f"Using MO-ASHA ({objectives}): num_stopped={self._num_stopped}\nRungs: {rungs}"

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.__dict__, fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            self.__dict__.update(pickle.load(fh))

    # ---- the rule
    def _on_result(self, trial_id: str, result: dict) -> str:
        last = self._last.setdefault(trial_id, {})
        for m in self._metrics:
            if m in result:
                last[m] = _number(result[m])
        t = _number(result.get(self._time_attr))
        if not math.isfinite(t):
            return TrialScheduler.CONTINUE
        if t >= self._max_t:
            return TrialScheduler.STOP
        reached = [rung for rung in self._rungs if rung[0] <= t]
        if not reached:
            return TrialScheduler.CONTINUE
        recorded = reached[-1][1]
        if trial_id in recorded:
            return TrialScheduler.CONTINUE
        missing = [m for m in self._metrics if m not in last]
        if missing:
            if missing[0] not in self._warned:
                self._warned.add(missing[0])
                log.warning(
                    "MO-ASHA: no %r reported by trial %s at t=%g: not ranked",
                    missing[0],
                    trial_id,
                    t,
                )
            return TrialScheduler.CONTINUE
        values = tuple(last[m] for m in self._metrics)
        if not all(math.isfinite(x) for x in values):
            log.info(
                "MO-ASHA: trial %s stopped at t=%g: non-finite objective %s", trial_id, t, values
            )
            return TrialScheduler.STOP
        points = [*recorded.values(), values]
        position = position_of_last(points, self._modes)
        recorded[trial_id] = values
        if position < len(points) / self._rf:
            return TrialScheduler.CONTINUE
        return TrialScheduler.STOP

    def _first_front_size(self, recorded: dict[str, tuple[float, ...]]) -> int:
        if not recorded:
            return 0
        return nondominated_fronts(list(recorded.values()), self._modes).count(0)
