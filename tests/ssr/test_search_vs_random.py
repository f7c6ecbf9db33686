"""benchmarks/search_vs_random.py: random genotypes come from the searched space, a random twin
is matched in GMACs, and the comparison's numbers follow from the retrained results."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from ssr.config import SpaceConfig

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location(
        "svr", ROOT / "benchmarks" / "search_vs_random.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules["svr"] = mod
    spec.loader.exec_module(mod)
    return mod


svr = _bench()


def test_random_genotypes_cover_the_space_and_only_the_space(tiny_space: SpaceConfig) -> None:
    rng = np.random.default_rng(0)
    gs = [svr.sample_genotype(tiny_space, rng, "exact", "aggregation") for _ in range(40)]
    depths = {g.depths for g in gs}
    # depth within [min_depth, max_depth] of each stage, and every depth of stage 0 drawn
    assert all(1 <= a <= 3 and 2 <= b <= 4 for a, b in depths)
    assert {a for a, _ in depths} == {1, 2, 3}
    ops = {(layer.dilation, layer.pool) for g in gs for layer in g.layers}
    assert ops == {(1, 1), (2, 1), (1, 2), (2, 2)}
    widths = {layer.c_out for g in gs for layer in g.layers if layer.stage == 1}
    assert widths == {16, 20, 24}  # 24 minus each channel_remove option
    assert len({g.id for g in gs}) > 30  # draws differ


def test_a_random_twin_is_within_the_tolerance(tiny_space: SpaceConfig) -> None:
    rng = np.random.default_rng(1)
    draw = lambda: svr.sample_genotype(tiny_space, rng, "exact", "aggregation")  # noqa: E731
    cost = lambda g: svr.gmacs_of(g, 5, 32, 48)  # noqa: E731
    target = cost(draw())
    twin, gm, n = svr.matched_random(target, draw, cost, match=0.1)
    assert abs(gm / target - 1) <= 0.1 and gm == cost(twin) and n >= 1
    with pytest.raises(RuntimeError, match="no random genotype within"):
        svr.matched_random(target * 1000, draw, cost, match=0.1, tries=3)


def _row(arm: str, point: int, seed: int, miou: float, fps: float) -> dict:
    return {"arm": arm, "point": point, "seed": seed, "miou": miou, "fps": fps, "gmacs": 0.1}


def test_compare_pairs_each_searched_network_with_its_twin_and_uses_one_reference() -> None:
    rows = [
        _row("searched", 0, 0, 0.50, 10), _row("random", 0, 0, 0.40, 11),
        _row("searched", 1, 0, 0.40, 20), _row("random", 1, 0, 0.38, 19),
        _row("searched", 0, 1, 0.52, 10), _row("random", 0, 1, 0.45, 11),
        _row("searched", 1, 1, 0.41, 20), _row("random", 1, 1, 0.36, 19),
    ]  # fmt: skip
    out = svr.compare(rows, [0, 1])
    diffs = sorted(round(p["miou_diff_pts"], 6) for p in out["pairs"])
    assert diffs == [2.0, 5.0, 7.0, 10.0]
    assert out["miou_diff_pts_mean"] == pytest.approx(6.0)
    assert out["searched_wins_pairs"] == 4 and out["pairs_total"] == 4
    lo, hi = out["miou_diff_pts_interval"]
    assert 2.0 <= lo <= 6.0 <= hi <= 10.0
    assert out["verdict"].startswith("searched beats random")
    # one reference for every hypervolume: worst mIoU and FPS of all rows, moved 10 % further
    assert out["reference"] == pytest.approx([36 - 1.6, 10 - 1.0])  # mIoU in %, the axes' units
    assert all(s["hv_searched"] > s["hv_random"] > 0 for s in out["per_seed"])
    # seed 0, searched (50 %, 10 FPS) and (40 %, 20 FPS) above (34.4, 9): 11 x 5.6 + 1 x 10
    assert out["per_seed"][0]["hv_searched"] == pytest.approx(11 * 5.6 + 1 * 10)
    assert out["hv_searched_wins_seeds"] == 2


def test_front_points_take_the_ends_of_the_front_first() -> None:
    rows = [
        {"retrained_miou": 0.5, "fps": 10}, {"retrained_miou": 0.45, "fps": 20},
        {"retrained_miou": 0.3, "fps": 40}, {"retrained_miou": 0.2, "fps": 15},  # dominated
    ]  # fmt: skip
    picked = svr.front_points(rows, 2)
    assert [r["fps"] for r in picked] == [10, 40]
    assert [r["fps"] for r in svr.front_points(rows, 5)] == [10, 20, 40]
