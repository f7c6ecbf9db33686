"""benchmarks/front_quality.py: the target-GMACs correlation per baseline and given the weight,
the seed-noise choices, and re-measurements that really run in processes of their own."""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ssr.config import BenchConfig
from ssr.method.genotype import Genotype, LayerGene, ReductionGene

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("fq", ROOT / "benchmarks" / "front_quality.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fq"] = mod
    spec.loader.exec_module(mod)
    return mod


fq = _bench()


def _frame() -> pd.DataFrame:
    # within each baseline a higher target gives a costlier network; across the two the
    # cheaper baseline has the higher targets, so the pooled correlation is negative
    return pd.DataFrame(
        {
            "trial_id": [f"t{i}" for i in range(6)],
            "baseline": ["a", "a", "a", "b", "b", "b"],
            "cfg.flops.weight": [10.0, 30.0, 20.0, 60.0, 40.0, 50.0],
            "cfg.flops.target": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "gmacs": [10.0, 11.0, 12.0, 1.0, 2.0, 3.0],
        }
    )


def test_per_baseline_correlation_differs_from_the_pooled_one() -> None:
    out = fq.flops_term(_frame())
    # ranks of gmacs are 3 4 5 0 1 2 against 0..5: r = -9.5 / 17.5
    assert out["all_complete"]["spearman_target_gmacs"] == pytest.approx(-0.5429, abs=1e-4)
    assert out["all_complete"]["n"] == 6
    for b in ("a", "b"):
        assert out["per_baseline"][b]["n"] == 3
        assert out["per_baseline"][b]["spearman_target_gmacs"] == pytest.approx(1.0)
        # three trials leave no degree of freedom for a partial correlation
        assert out["per_baseline"][b]["partial_spearman_target_gmacs_given_weight"] is None


def test_partial_spearman_is_the_correlation_of_rank_residuals() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(size=12)
    x = -z + rng.normal(size=12)
    y = z + 0.5 * x + rng.normal(size=12)

    def resid(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
        slope, icpt = np.polyfit(rb, ra, 1)
        return ra - (slope * rb + icpt)

    expected = np.corrcoef(resid(x, z), resid(y, z))[0, 1]
    got = fq.partial_spearman(list(x), list(y), list(z))
    assert got == pytest.approx(expected, abs=1e-9)
    assert abs(got - fq.spearman(list(x), list(y))) > 0.05  # the weight changes the answer


def test_a_target_that_only_mirrors_the_weight_is_not_credited() -> None:
    # cost follows the weight alone, and target is the weight reversed: perfectly confounded
    weight = [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    target = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    gmacs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert fq.spearman(target, gmacs) == pytest.approx(1.0)
    assert math.isnan(fq.partial_spearman(target, gmacs, weight))


def test_selection_compares_complete_and_stopped_trials() -> None:
    df = _frame().assign(status=["complete"] * 4 + ["early_stopped"] * 2)
    sel = fq.flops_term(df[df["status"] == "complete"], trials=df)["selection"]
    assert sel["complete"]["n"] == 4 and sel["early_stopped"]["n"] == 2
    assert sel["early_stopped"]["median_target"] == pytest.approx(5.5)


def test_seed_noise_choices() -> None:
    assert fq.fresh_seeds(1, 3) == [0, 2, 3]
    assert fq.fresh_seeds(500, 3) == [0, 1, 2]
    front = pd.DataFrame({"trial_id": list("abcde"), "derived_miou": [0.5, 0.4, 0.3, 0.2, 0.1]})
    assert fq.spread_configs(front, "derived_miou", 3) == ["a", "c", "e"]
    assert fq.spread_configs(front.iloc[:2], "derived_miou", 3) == ["a", "b"]
    # equal group sizes: the root of the mean variance
    assert fq.pooled_sd([1.0, 3.0], [3, 3]) == pytest.approx(math.sqrt(5.0))
    assert fq.pooled_sd([1.0, 3.0], [2, 4]) == pytest.approx(math.sqrt((1 + 27) / 4))


def _genotype(width: int) -> str:
    return Genotype(
        stem=8,
        reductions=(ReductionGene(8, 8), ReductionGene(width, 16)),
        layers=(LayerGene(0, 1, 1, 16, 8, width), LayerGene(1, 2, 1, width + 16, 16, 16)),
        head="aggregation",
    ).to_json()


@pytest.mark.slow  # two python processes that import torch: ~5 s idle, ~15 s at load 7
def test_each_remeasurement_is_a_fresh_process() -> None:
    genos = {"narrow": _genotype(8), "wide": _genotype(16)}
    # NOTE: torch, not ONNX Runtime, so that no export runs: this test is about processes
    bench = BenchConfig(height=32, width=64, warmup=0, iters=1, repeats=1, threads=1)
    runs = fq.remeasure_in_processes(genos, 5, bench, passes=2, count=2)
    pids = [r["pid"] for r in runs]
    assert len(set(pids)) == 2 and os.getpid() not in pids
    for r in runs:
        assert set(r["spreads"]) == set(genos)
        assert all(len(s.pass_medians_ms) == 2 for s in r["spreads"].values())
        assert r["record"]["backend"] == "torch" and r["record"]["threads"] == 1
