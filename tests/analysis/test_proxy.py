"""analysis.proxy: rank agreement of a proxy with the retrained mIoU, with its uncertainty."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from analysis.proxy import kendall_tau_b, rank_agreement, spearman_rho


def _tau_by_pairs(x: list[float], y: list[float]) -> float:
    """tau-a by counting concordant and discordant pairs (no ties in these inputs)."""
    s = sum(
        np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
        for i, j in itertools.combinations(range(len(x)), 2)
    )
    return s / (len(x) * (len(x) - 1) / 2)


def test_kendall_and_spearman_on_known_orders() -> None:
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert kendall_tau_b(x, x) == 1.0 and spearman_rho(x, x) == pytest.approx(1.0)
    assert kendall_tau_b(x, x[::-1]) == -1.0 and spearman_rho(x, x[::-1]) == pytest.approx(-1.0)
    y = [2.0, 1.0, 4.0, 3.0, 5.0]  # two swaps: 8 concordant, 2 discordant pairs
    assert kendall_tau_b(x, y) == pytest.approx(0.6) == _tau_by_pairs(x, y)
    assert spearman_rho(x, y) == pytest.approx(1 - 6 * 4 / (5 * 24))
    # ties: tau-b corrects the denominator (scipy.stats.kendalltau's value)
    assert kendall_tau_b([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / np.sqrt(5 * 6))
    assert np.isnan(kendall_tau_b([1, 2], [1, 2])) and np.isnan(spearman_rho([1, 1, 1], [1, 2, 3]))


def test_rank_agreement_counts_each_network_once_and_brackets_its_estimate() -> None:
    rng = np.random.default_rng(0)
    target = np.linspace(0.3, 0.6, 12)
    derived = target + rng.normal(0, 0.01, 12)
    frame = pd.DataFrame({
        "genotype_id": [f"g{i}" for i in range(12)] + ["g0", "g0"],  # g0 found three times
        "derived_miou": [*derived, derived[0], derived[0]],
        "retrained_miou": [*target, target[0], target[0]],
    })  # fmt: skip
    a = rank_agreement(frame, resamples=300)
    assert a.n == 12
    assert a.kendall_lo <= a.kendall_tau <= a.kendall_hi and a.kendall_tau > 0.5
    assert a.spearman_lo <= a.spearman <= a.spearman_hi
    assert a.p_positive == 1.0 and a.verdict == "ranks like the target"
    shuffled = frame.assign(derived_miou=rng.permutation(frame["derived_miou"].to_numpy()))
    b = rank_agreement(shuffled.iloc[:12], resamples=300)
    assert b.kendall_lo < 0.3  # a random proxy does not earn "ranks like the target"
    assert b.verdict != "ranks like the target"
    few = rank_agreement(frame.iloc[:3], resamples=50)
    assert few.verdict == "too few networks to say"
