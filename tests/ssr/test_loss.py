"""SSR regularizer (docs/method.md §4.2) and the FLOPs penalty (docs/method.md §4.3)."""

import math

import pytest
import torch

from ssr.config import FlopsConfig
from ssr.train.loss import flops_loss, ssr_group_terms, ssr_regularizer


def test_ssr_is_zero_at_uniform_for_any_k() -> None:
    for k in (2, 3, 9, 10):
        logits = torch.full((4, k), 0.7)
        assert ssr_regularizer(logits, torch.ones(4, k, dtype=torch.bool)).item() == pytest.approx(
            0.0, abs=1e-6
        )


def test_ssr_is_negative_away_from_uniform_and_matches_minus_kl() -> None:
    logits = torch.randn(50, 6) * 2
    alive = torch.ones(50, 6, dtype=torch.bool)
    values, _ = ssr_group_terms(logits, alive)
    assert (values < 0).all()
    p = torch.sigmoid(logits)
    p = p / p.sum(-1, keepdim=True)
    kl = (1 / 6 * torch.log((1 / 6) / p)).sum(-1)
    torch.testing.assert_close(values, -kl, atol=1e-5, rtol=1e-5)


def test_ssr_gradient_matches_closed_form() -> None:
    # docs/method.md §4.2:
    # d/d alpha_k [(1/K) sum log p + log K] = (1 - sigmoid(alpha_k)) (1/K - p_k)
    alpha = torch.tensor([[0.3, -1.2, 2.0, 0.0, -0.4]], requires_grad=True)
    alive = torch.tensor([[True, True, True, False, True]])
    weight = 30.0
    (weight * ssr_regularizer(alpha, alive)).backward()
    a = alpha.detach()[0]
    live = alive[0]
    s = torch.sigmoid(a) * live
    p = s / s.sum()
    k = live.sum()
    expected = weight * (1 - torch.sigmoid(a)) * (1 / k - p) * live
    torch.testing.assert_close(alpha.grad[0], expected, atol=1e-6, rtol=1e-5)


def test_averaging_over_active_groups_vs_official_all() -> None:
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.0], [5.0, -5.0]])
    alive = torch.tensor([[True, True], [True, True], [True, False]])  # last group collapsed
    v, _ = ssr_group_terms(logits, alive)
    assert v[2] == 0
    active = ssr_regularizer(logits, alive, "active")
    official = ssr_regularizer(logits, alive, "all")
    assert active.item() == pytest.approx((v[0] + v[1]).item() / 2)
    assert official.item() == pytest.approx((v[0] + v[1]).item() / 3)
    # groups switched off from above (pruned op) do not count either
    only_first = ssr_regularizer(logits, alive, "active", active=torch.tensor([True, False, True]))
    assert only_first.item() == pytest.approx(v[0].item())
    none = ssr_regularizer(logits, torch.zeros_like(alive), "active")
    assert none.item() == 0.0 and math.isfinite(none.item())


@pytest.mark.parametrize("form", ["l2", "l1", "band"])
def test_flops_penalty_is_zero_on_target_and_grows_away(form: str) -> None:
    cfg = FlopsConfig(target=0.6, form=form)
    on = flops_loss(torch.tensor(60.0), 100.0, cfg).item()
    far = flops_loss(torch.tensor(90.0), 100.0, cfg).item()
    low = flops_loss(torch.tensor(20.0), 100.0, cfg).item()
    assert on == pytest.approx(0.0, abs=1e-9)
    assert far > 0 and low > 0


def test_flops_band_is_zero_inside_and_log_distance_outside_on_both_edges() -> None:
    """``band``: 0 for ``E / (target * max)`` in [0.95, 1.0], both edges included; just outside
    either edge the penalty is the log distance to that edge (docs/method.md §4.3)."""
    cfg = FlopsConfig(target=0.5, form="band")

    def band(rel: float) -> float:  # rel = E / (target * max), with max = 100
        return flops_loss(torch.tensor(50.0 * rel, dtype=torch.float64), 100.0, cfg).item()

    for rel in (0.95, 0.96, 0.975, 0.99, 1.0):  # the zero zone, edges included
        assert band(rel) == pytest.approx(0.0, abs=1e-12), rel
    for rel in (1.001, 1.01, 1.2):  # above the upper edge: log(rel / 1.0)
        assert band(rel) == pytest.approx(math.log(rel), rel=1e-9), rel
    for rel in (0.949, 0.94, 0.5):  # below the lower edge: log(0.95 / rel)
        assert band(rel) == pytest.approx(math.log(0.95 / rel), rel=1e-9), rel
