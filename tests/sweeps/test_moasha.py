"""MO-ASHA (sweeps/schedule/moasha.py): NSGA-II ranking, the rung rule against ASHA, a real Tune run."""

from __future__ import annotations

import math
import pickle
from types import SimpleNamespace

import pytest
from ray.tune.schedulers import ASHAScheduler

from sweeps.schedule.moasha import (
    MOASHAScheduler,
    crowding_distance,
    nondominated_fronts,
    nondominated_rank,
)

CONTINUE, STOP = "CONTINUE", "STOP"
MODES = ("max", "min")  # (mIoU, GMACs)


# --------------------------------------------------------------------------------------------
# Pure functions


def test_fronts_hand_checked():
    # A and B trade off; C is dominated by A only; D by everything; E equals A
    pts = [(0.5, 1.0), (0.4, 0.3), (0.45, 1.2), (0.3, 1.5), (0.5, 1.0)]
    assert nondominated_fronts(pts, MODES) == [0, 0, 1, 2, 0]


def test_fronts_respect_modes():
    pts = [(1.0, 1.0), (2.0, 2.0)]
    assert nondominated_fronts(pts, ("max", "max")) == [1, 0]
    assert nondominated_fronts(pts, ("min", "min")) == [0, 1]
    assert nondominated_fronts(pts, ("max", "min")) == [0, 0]


def test_fronts_non_finite_go_last():
    pts = [(0.5, 1.0), (math.nan, 0.1), (0.4, 2.0), (0.9, math.inf)]
    assert nondominated_fronts(pts, MODES) == [0, 2, 1, 2]


def test_crowding_hand_checked():
    # one front of four points on a line: ends inf; interior (gap / range) summed over objectives
    pts = [(0.1, 1.0), (0.2, 2.0), (0.4, 4.0), (0.5, 5.0)]
    d = crowding_distance(pts, MODES)
    assert d[0] == d[3] == math.inf
    assert d[1] == pytest.approx((0.4 - 0.1) / 0.4 + (4 - 1) / 4)
    assert d[2] == pytest.approx((0.5 - 0.2) / 0.4 + (5 - 2) / 4)


def test_crowding_equal_points_equal_distance_and_nan_zero():
    pts = [(0.1, 1.0), (0.3, 3.0), (0.3, 3.0), (0.5, 5.0), (math.nan, 1.0)]
    d = crowding_distance(pts, MODES)
    assert d[1] == d[2] == pytest.approx(2.0)  # distinct points: (0.1,1), (0.3,3), (0.5,5)
    assert d[0] == d[3] == math.inf
    assert d[4] == 0.0


def test_rank_orders_by_front_then_crowding():
    # front 0: A, B, C (C interior), front 1: D; ties share a position
    pts = [(0.5, 1.0), (0.3, 0.2), (0.4, 0.7), (0.35, 0.9), (0.5, 1.0)]
    assert nondominated_fronts(pts, MODES) == [0, 0, 0, 1, 0]
    assert nondominated_rank(pts, MODES) == [0, 0, 3, 4, 0]


def test_rank_nan_last_and_bad_input():
    assert nondominated_rank([(0.1, 5.0), (math.nan, 0.0)], MODES) == [0, 1]
    assert nondominated_rank([], MODES) == []
    with pytest.raises(ValueError, match="modes"):
        nondominated_rank([(1.0, 2.0)], ("max", "down"))
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        nondominated_rank([(1.0, 2.0, 3.0)], MODES)


# --------------------------------------------------------------------------------------------
# The scheduler, driven by hand (no Ray cluster)


def trial(name: str) -> SimpleNamespace:
    return SimpleNamespace(trial_id=name)


def report(sched, t, step, miou=None, gmacs=None):
    res = {"step": float(step)}
    if miou is not None:
        res["val_miou"] = miou
    if gmacs is not None:
        res["expected_gmacs"] = gmacs
    return sched.on_trial_result(None, t, res)


def make(**kw):
    kw = {"max_t": 8, "grace_period": 1, "reduction_factor": 2, **kw}
    return MOASHAScheduler(**kw)


def asha():
    return ASHAScheduler(
        time_attr="step", metric="val_miou", mode="max", max_t=8, grace_period=1,
        reduction_factor=2,
    )  # fmt: skip


def test_rungs_and_max_t():
    s = make()
    assert s.milestones == [1, 2, 4]
    a = trial("a")
    s.on_trial_add(None, a)
    assert report(s, a, 8, 0.1, 1.0) == STOP  # budget spent
    assert make(grace_period=8).milestones == []


def test_cheaper_but_worse_survives_where_asha_stops_it():
    mo, single = make(), asha()
    accurate, cheap = trial("accurate"), trial("cheap")
    for s in (mo, single):
        s.on_trial_add(None, accurate)
        s.on_trial_add(None, cheap)
    assert report(mo, accurate, 1, 0.50, 1.0) == report(single, accurate, 1, 0.50, 1.0) == CONTINUE
    assert report(single, cheap, 1, 0.45, 0.3) == STOP  # below ASHA's cutoff on mIoU
    assert report(mo, cheap, 1, 0.45, 0.3) == CONTINUE  # on the first front with `accurate`
    assert set(mo.recorded(1)) == {"accurate", "cheap"}


def test_dominated_trial_is_stopped_and_recorded():
    s = make()
    for name, miou, gmacs in (("a", 0.5, 1.0), ("b", 0.4, 0.3)):
        t = trial(name)
        s.on_trial_add(None, t)
        assert report(s, t, 1, miou, gmacs) == CONTINUE
    worse = trial("worse")
    s.on_trial_add(None, worse)
    assert report(s, worse, 1, 0.45, 1.2) == STOP  # dominated by a: position 2 of 3
    assert s.recorded(1)["worse"] == (0.45, 1.2)
    better = trial("better")
    s.on_trial_add(None, better)
    assert report(s, better, 1, 0.6, 0.2) == CONTINUE  # dominates everything: position 0


def _dominated(points: dict[str, tuple[float, float]]) -> set[str]:
    """Names of the points another point dominates (mIoU max, GMACs min), by brute force."""
    return {
        a
        for a, (ma, ca) in points.items()
        for mb, cb in points.values()
        if mb >= ma and cb <= ca and (mb, cb) != (ma, ca)
    }


# One rung, trials arriving in this order: the two ends of the front first, then dominated and
# non-dominated trials in turn. (mIoU, GMACs); the comments give the dominating trial.
RUNG = [
    ("a", 0.90, 10.0),
    ("b", 0.50, 1.0),
    ("c", 0.80, 12.0),  # dominated by a
    ("d", 0.45, 1.5),  # dominated by b
    ("e", 0.95, 11.0),  # new most accurate: on the front
    ("f", 0.40, 0.5),  # new cheapest: on the front (ASHA on mIoU alone would stop it)
    ("g", 0.60, 11.0),  # dominated by a and e
    ("h", 0.30, 2.0),  # dominated by b
]


def test_a_constructed_rung_stops_exactly_its_dominated_trials():
    s = make()
    actions = {}
    for name, miou, gmacs in RUNG:
        t = trial(name)
        s.on_trial_add(None, t)
        actions[name] = report(s, t, 1, miou, gmacs)
    stopped = {n for n, a in actions.items() if a == STOP}
    points = {name: (miou, gmacs) for name, miou, gmacs in RUNG}
    assert _dominated(points) == {"c", "d", "g", "h"}  # the construction, checked by hand
    assert stopped == _dominated(points)
    assert set(s.recorded(1)) == set(points)  # every finite trial is recorded, stopped or not


@pytest.mark.parametrize("bad", [(math.nan, 0.5), (0.5, math.inf), (0.5, "x")])
def test_non_finite_objective_stops_without_recording(bad):
    s = make()
    ok, t = trial("ok"), trial("diverged")
    s.on_trial_add(None, ok)
    s.on_trial_add(None, t)
    assert report(s, ok, 1, 0.1, 1.0) == CONTINUE
    assert report(s, t, 1, *bad) == STOP
    assert set(s.recorded(1)) == {"ok"}
    s.on_trial_complete(None, t, {"step": 1.0, "val_miou": bad[0], "expected_gmacs": bad[1]})
    assert set(s.recorded(1)) == {"ok"}


def test_last_value_carried_forward_and_decided_once_per_rung():
    s = make()
    a, b = trial("a"), trial("b")
    s.on_trial_add(None, a)
    s.on_trial_add(None, b)
    report(s, a, 1, 0.5, 1.0)
    report(s, b, 1, 0.4, 0.3)
    # phase 1 (retraining) reports no expected_gmacs: the search's last value is ranked
    assert report(s, a, 2, 0.6) == CONTINUE
    assert s.recorded(2)["a"] == (0.6, 1.0)
    assert report(s, b, 2, 0.3) == CONTINUE  # (0.3, 0.3) still cheaper than a
    assert report(s, b, 3, 0.2) == CONTINUE  # t=3: rung 2 already decided
    assert s.recorded(2)["b"] == (0.3, 0.3)


def test_missing_metric_skips_the_decision(caplog):
    s = make()
    a = trial("a")
    s.on_trial_add(None, a)
    assert report(s, a, 1, 0.5) == CONTINUE  # expected_gmacs never reported
    assert s.recorded(1) == {}
    assert "expected_gmacs" in caplog.text
    assert s.on_trial_result(None, a, {"val_miou": 0.5}) == CONTINUE  # no time: no decision


def test_skipped_rungs_decide_only_the_highest():
    s = make()
    a, b = trial("a"), trial("b")
    s.on_trial_add(None, a)
    s.on_trial_add(None, b)
    report(s, a, 2, 0.5, 1.0)
    assert s.recorded(1) == {} and set(s.recorded(2)) == {"a"}
    assert report(s, b, 3, 0.4, 2.0) == STOP  # rung 2, dominated by a


def test_complete_records_and_forgets():
    s = make()
    a = trial("a")
    s.on_trial_add(None, a)
    s.on_trial_complete(None, a, {"step": 2.0, "val_miou": 0.5, "expected_gmacs": 1.0})
    assert set(s.recorded(2)) == {"a"} and s._last == {}
    b = trial("b")
    s.on_trial_add(None, b)
    s.on_trial_remove(None, b)
    assert s._last == {}


def test_constructor_validation():
    with pytest.raises(ValueError, match="one per metric"):
        MOASHAScheduler(metrics=("a", "b"), modes=("max",))
    with pytest.raises(ValueError, match="sequences"):
        MOASHAScheduler(metrics="val_miou", modes="max")
    with pytest.raises(ValueError, match="distinct"):
        MOASHAScheduler(metrics=("a", "a"), modes=("max", "max"))
    with pytest.raises(ValueError, match="grace_period"):
        MOASHAScheduler(max_t=2, grace_period=3)
    with pytest.raises(ValueError, match="reduction_factor"):
        MOASHAScheduler(reduction_factor=1)


def test_search_properties_save_restore_and_debug(tmp_path):
    s = make()
    assert s.set_search_properties(None, None) is True
    assert s.set_search_properties("val_miou", "max") is False
    a, b = trial("a"), trial("b")
    s.on_trial_add(None, a)
    s.on_trial_add(None, b)
    report(s, a, 1, 0.5, 1.0)
    report(s, b, 1, 0.4, 2.0)
    assert "num_stopped=1" in s.debug_string()
    assert "t=1: 2 recorded, 1 on front 0" in s.debug_string()
    s.save(str(tmp_path / "s.pkl"))
    r = make()
    r.restore(str(tmp_path / "s.pkl"))
    assert r.recorded(1) == s.recorded(1) and r.debug_string() == s.debug_string()
    clone = pickle.loads(pickle.dumps(s))
    c = trial("c")
    clone.on_trial_add(None, c)
    assert report(clone, c, 1, 0.3, 3.0) == STOP


# --------------------------------------------------------------------------------------------
# A real Tune run

# (accuracy, cost): the two extremes are the Pareto-best; every other point is dominated by one
# of them; NaN diverges. The extremes come first, so each later trial meets them at rung 1.
POINTS = [
    (0.9, 10.0), (0.5, 1.0), (0.8, 12.0), (0.45, 1.5), (0.3, 5.0), (0.6, 10.5), (math.nan, 2.0),
    (0.85, 11.0),
]  # fmt: skip
STEPS = 4


@pytest.mark.slow
def test_real_tune_run_stops_dominated_keeps_pareto_best(tmp_path):
    ray = pytest.importorskip("ray")
    from ray import tune

    def trainable(config):
        acc, cost = config["point"]
        for step in range(1, STEPS + 1):
            tune.report({"step": step, "val_miou": acc * step / STEPS, "expected_gmacs": cost})

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        sched = MOASHAScheduler(max_t=STEPS + 1, grace_period=1, reduction_factor=2)
        tuner = tune.Tuner(
            trainable,
            param_space={"point": tune.grid_search(POINTS)},
            # one trial at a time: the rungs fill in the order of POINTS, so the outcome is exact
            tune_config=tune.TuneConfig(scheduler=sched, max_concurrent_trials=1),
            run_config=tune.RunConfig(name="moasha", storage_path=str(tmp_path), verbose=0),
        )
        results = tuner.fit()
    finally:
        ray.shutdown()
    assert not results.errors
    last = {tuple(r.config["point"]): r.metrics["step"] for r in results}
    nan_key = next(k for k in last if math.isnan(k[0]))
    assert last[(0.9, 10.0)] == STEPS and last[(0.5, 1.0)] == STEPS  # Pareto-best: full budget
    assert last[nan_key] == 1  # diverged: stopped at the first rung
    # exactly the dominated trials stop: at rung 1, except (0.85, 11), which at rung 1 is an end
    # of the second front (position 2 of 7: within the top half) and stops at rung 2, where
    # only the two Pareto-best trials are recorded before it
    finite = {str(k): k for k in last if k != nan_key}
    assert {n for n, k in finite.items() if last[k] < STEPS} == _dominated(finite)
    assert {k: v for k, v in last.items() if k != nan_key} == {
        (0.9, 10.0): STEPS,
        (0.5, 1.0): STEPS,
        (0.8, 12.0): 1,
        (0.45, 1.5): 1,
        (0.3, 5.0): 1,
        (0.6, 10.5): 1,
        (0.85, 11.0): 2,
    }
