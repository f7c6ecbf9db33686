"""benchmarks/moasha_hypervolume.py: one definition of the knobs for the fixed draws and for
NSGA-II, fronts at an epoch and at a wall-clock budget, and the paired per-seed comparison."""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    saved = dict(os.environ)  # NOTE: the script sets Ray/Tune variables for its own process
    try:
        spec = importlib.util.spec_from_file_location(
            "mhv", ROOT / "benchmarks" / "moasha_hypervolume.py"
        )
        mod = importlib.util.module_from_spec(spec)
        sys.modules["mhv"] = mod
        spec.loader.exec_module(mod)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return mod


mhv = _bench()


def _old_sample(seed: int, n: int) -> list[dict]:
    # the draws as the benchmark made them before KNOBS: the same configurations per seed
    rng = np.random.default_rng(seed)
    return [
        {
            "space": str(rng.choice(list(mhv.WIDTHS))),
            "flops.weight": float(rng.choice([0.0, 4.0, 16.0, 64.0])),
            "flops.target": float(rng.uniform(0.05, 0.5)),
            "ssr.op": float(np.exp(rng.uniform(np.log(3.0), np.log(60.0)))),
            "shrink.threshold": float(rng.uniform(0.1, 0.3)),
            "arch_optim.lr": float(np.exp(rng.uniform(np.log(0.05), np.log(0.3)))),
            "seed": int(rng.integers(0, 1000)),
        }
        for _ in range(n)
    ]


def test_fixed_draws_are_unchanged_and_within_the_knobs() -> None:
    for seed in (0, 1, 2):
        assert mhv.sample_knobs(seed, 16) == _old_sample(seed, 16)
    for k in mhv.sample_knobs(7, 50):
        assert set(k) == set(mhv.KNOBS)
        for name, (kind, args) in mhv.KNOBS.items():
            if kind == "choice":
                assert k[name] in args
            else:
                assert args[0] <= k[name] <= args[1]


def test_nsga2_searches_the_same_knobs_on_both_objectives() -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from ray.tune.search.optuna import OptunaSearch

    dists = OptunaSearch.convert_search_space(mhv.knob_space())
    assert set(dists) == set(mhv.KNOBS)
    assert isinstance(dists["space"], CategoricalDistribution)
    assert set(dists["flops.weight"].choices) == {0.0, 4.0, 16.0, 64.0}
    assert isinstance(dists["ssr.op"], FloatDistribution) and dists["ssr.op"].log
    assert (dists["ssr.op"].low, dists["ssr.op"].high) == (3.0, 60.0)
    assert isinstance(dists["seed"], IntDistribution) and dists["seed"].high == 999
    search = mhv.nsga2_searcher(seed=3, population=4)
    assert isinstance(search._sampler, optuna.samplers.NSGAIISampler)
    assert search.metric == ["derived_miou", "gmacs"] and search.mode == ["max", "min"]


def _ledger() -> list[dict]:
    def final(t: float, miou: float, gmacs: float) -> dict:
        return {"trial": "x", "final": 1.0, "t": t, "derived_miou": miou, "gmacs": gmacs}

    epoch = lambda t: {"trial": "x", "final": 0.0, "t": t}  # noqa: E731
    return [epoch(1), epoch(2), final(2.5, 0.3, 1.0), epoch(3), final(4.0, 0.5, 2.0), epoch(5)]


def test_fronts_at_an_epoch_and_at_a_wall_budget() -> None:
    ledger = _ledger()
    assert mhv.front_at(ledger, 2) == [(0.3, 1.0)]
    assert mhv.front_at(ledger, 3) == [(0.3, 1.0), (0.5, 2.0)]
    assert mhv.front_at_wall(ledger, 2.4) == []
    assert mhv.front_at_wall(ledger, 2.5) == [(0.3, 1.0)]
    assert mhv.front_at_wall(ledger, 100.0) == [(0.3, 1.0), (0.5, 2.0)]
    s = mhv.summarise(
        {"ledger": ledger, "wall_s": 6.0, "errors": [], "loadavg_before_after": []},
        budget=2,
        wall_budget=3.0,
        ref=(0.0, 4.0),
    )
    # one point (0.3, 1.0) under (0, 4): 0.3 x 3 / 4
    assert s["hv_at_budget"] == pytest.approx(0.225) and s["hv_at_wall"] == pytest.approx(0.225)
    assert s["complete_at_wall"] == 1 and s["complete"] == 2 and s["epochs"] == 4


def test_paired_differences_per_seed() -> None:
    def seed(moasha: float, fifo: float) -> dict:
        arms = {a: {f: 0.0 for f in mhv.HV_FIELDS} for a in mhv.ARMS}
        arms["moasha"] = {f: moasha for f in mhv.HV_FIELDS}
        arms["fifo"] = {f: fifo for f in mhv.HV_FIELDS}
        return arms

    per_seed = [seed(0.10, 0.08), seed(0.10, 0.12), seed(0.12, 0.08)]
    d = mhv.paired(per_seed)["moasha-fifo/hv_at_budget"]
    assert d["diffs"] == pytest.approx([0.02, -0.02, 0.04])
    assert d["mean"] == pytest.approx(0.04 / 3)
    assert (d["min"], d["max"]) == pytest.approx((-0.02, 0.04))
    assert d["ahead"] == 2 and d["seeds"] == 3
    assert math.isclose(d["std"], float(np.std([0.02, -0.02, 0.04], ddof=1)))
    assert {k.split("/")[0] for k in mhv.paired(per_seed)} == {
        "moasha-fifo",
        "moasha-asha",
        "moasha-nsga2",
    }
