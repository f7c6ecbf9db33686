"""Hierarchical progressive shrinking: the example of docs/method.md §13, caps, ties, fallback."""

import torch

from ssr.method.shrink import apply, argmax_fallback, decide
from ssr.method.supernet import normalized_probs


def test_spec_example_prunes_the_third_candidate() -> None:
    # tau = 0.1: alpha = (0, 0, -3) -> sigmoid(-3)/sigmoid(0) = 0.095 <= 0.1 (docs/method.md §13)
    alpha = torch.tensor([[0.0, 0.0, -3.0]])
    alive = torch.ones(1, 3, dtype=torch.bool)
    decisions = decide("op", normalized_probs(alpha, alive), alive, 0.1)
    assert [(d.group, d.candidate) for d in decisions] == [(0, 2)]
    assert abs(decisions[0].ratio - torch.sigmoid(torch.tensor(-3.0)).item() / 0.5) < 1e-6
    # slightly above the threshold: nothing to drop
    alpha = torch.tensor([[0.0, 0.0, -2.9]])
    assert decide("op", normalized_probs(alpha, alive), alive, 0.1) == []


def test_inactive_groups_and_dead_candidates_are_ignored() -> None:
    alpha = torch.tensor([[0.0, -6.0, -6.0], [0.0, -6.0, -6.0]])
    alive = torch.tensor([[True, True, False], [True, True, True]])
    d = decide(
        "out", normalized_probs(alpha, alive), alive, 0.1, active=torch.tensor([True, False])
    )
    assert [(x.group, x.candidate) for x in d] == [(0, 1)]


def test_cap_keeps_the_weakest_first() -> None:
    alpha = torch.tensor([[0.0, -4.0, -8.0], [0.0, -5.0, -3.5]])
    alive = torch.ones(2, 3, dtype=torch.bool)
    d = decide("op", normalized_probs(alpha, alive), alive, 0.1, max_per_decision=2)
    assert {(x.group, x.candidate) for x in d} == {(0, 2), (1, 1)}


def test_ties_terminate_with_the_lowest_index() -> None:
    alpha = torch.zeros(3, 4)  # every candidate tied forever: the threshold never fires
    alive = torch.ones(3, 4, dtype=torch.bool)
    for _ in range(5):
        assert decide("mid", normalized_probs(alpha, alive), alive, 0.1) == []
    fallback = argmax_fallback("mid", normalized_probs(alpha, alive), alive)
    apply(alive, fallback)
    assert alive.sum(-1).tolist() == [1, 1, 1] and alive[:, 0].all()
    assert all(d.reason == "argmax" for d in fallback)


def test_group_maximum_always_survives() -> None:
    alpha = torch.tensor([[-9.0, -9.0, -9.0]])
    alive = torch.ones(1, 3, dtype=torch.bool)
    d = decide("op", normalized_probs(alpha, alive), alive, 0.99)
    assert len(d) == 0  # all equal: ratios are 1
    alpha = torch.tensor([[-9.0, -20.0, -30.0]])
    d = decide("op", normalized_probs(alpha, alive), alive, 0.5)
    apply(alive, d)
    assert alive.tolist() == [[True, False, False]]
