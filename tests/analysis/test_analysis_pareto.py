"""analysis.pareto against brute force: dominance, hypervolume, history, knee."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from analysis.pareto import (
    default_reference,
    hypervolume,
    hypervolume_history,
    knee_index,
    pareto_mask,
    staircase,
)


def brute_mask(values: np.ndarray, maximize: np.ndarray) -> np.ndarray:
    """O(n^2) Pareto dominance, straight from the definition."""
    v = np.where(maximize, -values, values)
    keep = np.ones(len(v), dtype=bool)
    for i, j in itertools.product(range(len(v)), repeat=2):
        if np.all(v[j] <= v[i]) and np.any(v[j] < v[i]):
            keep[i] = False
    return keep


def grid_volume(values: np.ndarray, maximize: np.ndarray, reference: np.ndarray) -> int:
    """Exact hypervolume of integer points: count the unit cells they dominate."""
    v = np.where(maximize, -values, values)
    ref = np.where(maximize, -reference, reference)
    lo = v.min(axis=0)
    count = 0
    for cell in itertools.product(*(range(int(a), int(b)) for a, b in zip(lo, ref))):
        centre = np.asarray(cell) + 0.5
        count += bool(np.any(np.all(v <= centre, axis=1)))
    return count


def inclusion_exclusion(values: np.ndarray, maximize: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume as the inclusion-exclusion sum over all subsets' intersection boxes."""
    v = np.where(maximize, -values, values)
    ref = np.where(maximize, -reference, reference)
    total = 0.0
    for size in range(1, len(v) + 1):
        for subset in itertools.combinations(range(len(v)), size):
            corner = v[list(subset)].max(axis=0)
            total += (-1) ** (size + 1) * float(np.prod(np.clip(ref - corner, 0, None)))
    return total


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("directions", ["max", "min", "mixed"])
def test_pareto_mask_matches_brute_force(k: int, directions: str) -> None:
    rng = np.random.default_rng(k * 10 + len(directions))
    for _ in range(12):
        n = int(rng.integers(1, 120))
        values = rng.integers(0, 5, size=(n, k)).astype(float)  # many ties and duplicates
        values = np.vstack([values, values[: n // 4]])
        maximize = {
            "max": np.ones(k, bool),
            "min": np.zeros(k, bool),
            "mixed": np.arange(k) % 2 == 0,
        }[directions]
        np.testing.assert_array_equal(pareto_mask(values, maximize), brute_mask(values, maximize))


def test_pareto_mask_keeps_equal_points_and_drops_nan() -> None:
    values = np.array([[1.0, 2.0], [1.0, 2.0], [0.5, 1.0], [np.nan, 9.0], [2.0, 0.0]])
    np.testing.assert_array_equal(pareto_mask(values, True), [True, True, False, False, True])


def test_pareto_mask_large_2d_and_3d_complete() -> None:
    rng = np.random.default_rng(0)
    mask = pareto_mask(rng.random((20_000, 2)), [True, False])
    assert 0 < mask.sum() < 200
    assert pareto_mask(rng.random((20_000, 3)), True).sum() > 0


@pytest.mark.parametrize("k", [2, 3])
def test_hypervolume_matches_grid_count(k: int) -> None:
    rng = np.random.default_rng(k)
    for _ in range(25):
        values = rng.integers(0, 7, size=(int(rng.integers(1, 15)), k)).astype(float)
        maximize = rng.random(k) < 0.5
        reference = np.where(maximize, -1.0, 8.0)
        expected = grid_volume(values, maximize, reference)
        assert hypervolume(values, maximize, reference) == pytest.approx(expected, abs=1e-9)


def test_hypervolume_4d_matches_inclusion_exclusion() -> None:
    rng = np.random.default_rng(4)
    for _ in range(10):
        values = rng.random((int(rng.integers(1, 9)), 4))
        maximize = np.array([True, False, True, False])
        reference = np.array([-0.1, 1.1, -0.1, 1.1])
        expected = inclusion_exclusion(values, maximize, reference)
        assert hypervolume(values, maximize, reference) == pytest.approx(expected, rel=1e-12)


def test_hypervolume_ignores_points_outside_the_reference() -> None:
    values = np.array([[0.5, 100.0], [0.9, 10.0], [0.2, 300.0]])
    # reference (0.3, 20): only (0.5, 100) is strictly better in both -> (0.2) * (80)
    assert hypervolume(values, True, [0.3, 20.0]) == pytest.approx(0.2 * 80.0)
    assert hypervolume(values, True, [1.0, 1000.0]) == 0.0


def test_default_reference_is_worse_than_every_point() -> None:
    values = np.array([[0.5, 100.0], [0.7, 50.0], [0.6, 80.0]])
    ref = default_reference(values, [True, False], margin=0.1)
    np.testing.assert_allclose(ref, [0.5 - 0.02, 100.0 + 5.0])
    assert hypervolume(values, [True, False], ref) > 0


def test_hypervolume_history_is_monotone_and_ends_at_total() -> None:
    rng = np.random.default_rng(1)
    values = rng.random((200, 2))
    ref = default_reference(values, True)
    order = rng.permutation(200).astype(float)
    history = hypervolume_history(values, True, ref, order)
    assert np.all(np.diff(history) >= 0)
    assert history[-1] == pytest.approx(hypervolume(values, True, ref))
    first = int(np.argmin(order))
    assert history[0] == pytest.approx(hypervolume(values[[first]], True, ref))


def test_knee_is_farthest_from_the_extremes_line() -> None:
    values = np.array([[0.0, 1.0], [0.1, 0.5], [0.5, 0.45], [1.0, 0.0], [0.9, 0.9]])
    assert knee_index(values, False) == 1
    assert knee_index(values[[0, 3]], False) is None


def test_staircase_corners_follow_the_attainment_boundary() -> None:
    xs, ys = staircase([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]], [True, True])
    np.testing.assert_array_equal(xs, [1, 1, 2, 2, 3])
    np.testing.assert_array_equal(ys, [3, 2, 2, 1, 1])
