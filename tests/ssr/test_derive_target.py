"""Target-aware derivation (ssr/method/derive_target.py, docs/method.md §4.4): the undecided
groups decided so the derived network's predicted latency lands near the target."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from ssr.config import ConfigError, LatencyConfig, SearchConfig, from_dict
from ssr.method.derive import genotype_from_choices, genotype_from_supernet, selected
from ssr.method.derive_target import derive, derive_at_target, discretize_to
from ssr.method.gap import discretize_by_argmax
from ssr.method.latency_table import predict_ms
from ssr.method.supernet import DIMENSIONS, Supernet
from tests.ssr.test_latency import SPACE2, SPACE3, fake_table


def random_net(space, seed: int, scale: float = 1.0) -> Supernet:
    net = Supernet(space, 5)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return net


def predicted(net, table, selection) -> float:
    return predict_ms(table, genotype_from_choices(net.space, selection, table.head))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("factor", [0.7, 0.8, 1.25, 1.5])
def test_target_rule_lands_within_tolerance_closer_than_argmax(seed, factor) -> None:
    """Targets 0.7-1.5x the argmax network's prediction, each reachable by a few changes of
    this space's widths, ops and depths: the derived network lands within the tolerance."""
    table = fake_table(SPACE2, "padded", seed=1)
    net = random_net(SPACE2, seed)
    argmax = predicted(net, table, selected(net))
    target = factor * argmax
    d = derive_at_target(net, table, target, tolerance=0.03)
    assert d.argmax_ms == pytest.approx(argmax)
    assert d.derived_ms == pytest.approx(predicted(net, table, d.selection))
    assert abs(d.derived_ms - target) <= 0.03 * target < abs(argmax - target)
    assert d.changed_groups >= 1 and d.steps >= 1
    assert math.isfinite(d.log_prob_given_up) and d.log_prob_given_up > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_target_rule_moves_closer_in_a_coarse_space(seed) -> None:
    """Two widths per layer and ops of 0.5-3 ms: the rule may stop short of the tolerance
    (no single change brings it closer), never farther than the argmax network."""
    table = fake_table(SPACE3, "natural", seed=2)
    net = random_net(SPACE3, seed)
    argmax = predicted(net, table, selected(net))
    for factor in (0.7, 1.4):
        d = derive_at_target(net, table, factor * argmax, tolerance=0.02)
        assert abs(d.derived_ms - factor * argmax) < abs(argmax - factor * argmax)


def test_target_rule_does_nothing_within_tolerance() -> None:
    table = fake_table(SPACE2, "padded", seed=1)
    net = random_net(SPACE2, 0)
    d = derive_at_target(net, table, 1.01 * predicted(net, table, selected(net)), 0.02)
    assert d.steps == 0 and d.changed_groups == 0 and d.log_prob_given_up == 0.0
    assert d.selection == selected(net) and d.derived_ms == d.argmax_ms


def test_target_rule_never_changes_a_decided_group() -> None:
    """Groups shrinking left one candidate keep it, whatever the target asks for; every
    choice is an alive candidate."""
    table = fake_table(SPACE3, "padded", seed=1)
    net = random_net(SPACE3, 2)
    with torch.no_grad():  # decide every other group of every dimension (its argmax survives)
        for dim in DIMENSIONS:
            alive = net.alive(dim).view(-1, net.alive(dim).shape[-1])
            probs = net.probs(dim).reshape(alive.shape)
            for g in range(0, alive.shape[0], 2):
                keep = int(torch.argmax(torch.where(alive[g], probs[g], -1.0)))
                alive[g] = False
                alive[g, keep] = True
        net.refresh_alive()
    argmax = predicted(net, table, selected(net))
    for factor in (0.5, 2.0):  # beyond reach: the rule goes as far as undecided groups allow
        d = derive_at_target(net, table, factor * argmax, tolerance=0.0)
        assert abs(d.derived_ms - factor * argmax) < abs(argmax - factor * argmax)
        for (dim, g), c in d.chosen.items():
            alive = net.alive(dim).view(-1, net.alive(dim).shape[-1])[g]
            if int(alive.sum()) == 1:
                assert c == d.argmax[(dim, g)], (dim, g)
            elif alive.any():
                assert bool(alive[c]), (dim, g)


def test_argmax_rule_is_the_old_derivation() -> None:
    table = fake_table(SPACE2, "padded", seed=3)
    net = random_net(SPACE2, 4)
    old_net, new_net = copy.deepcopy(net), copy.deepcopy(net)
    old_events = discretize_by_argmax(old_net)
    old = genotype_from_supernet(old_net)
    d = derive(new_net, "argmax", table)
    assert d.selection == selected(net) and d.derived_ms == d.argmax_ms == predict_ms(table, old)
    assert genotype_from_choices(net.space, d.selection) == old
    new_events = discretize_to(new_net, d)
    assert genotype_from_supernet(new_net) == old
    assert [(dim, x.group, x.candidate) for dim, x in old_events] == [
        (dim, x.group, x.candidate) for dim, x in new_events
    ]
    assert all(x.reason == "argmax" for _, x in new_events)
    assert derive(copy.deepcopy(net), "argmax").argmax_ms is None  # no table: no prediction


def test_discretize_to_makes_the_target_network() -> None:
    table = fake_table(SPACE3, "padded", seed=1)
    net = random_net(SPACE3, 0)
    d = derive(net, "target", table, 0.8 * predicted(net, table, selected(net)), 0.02)
    events = discretize_to(net, d)
    assert net.is_discrete() and selected(net) == d.selection
    assert predict_ms(table, genotype_from_supernet(net)) == pytest.approx(d.derived_ms)
    assert {x.reason for _, x in events} == {"argmax", "target"}


def test_extreme_logits_give_finite_figures() -> None:
    table = fake_table(SPACE2, "padded", seed=1)
    net = random_net(SPACE2, 5, scale=300.0)  # sigmoid underflows to 0 in fp32
    d = derive_at_target(net, table, 0.7 * predicted(net, table, selected(net)), 0.02)
    assert all(math.isfinite(x) for x in (d.argmax_ms, d.derived_ms, d.log_prob_given_up))
    assert d.summary()["derive_rule"] == "target"
    with pytest.raises(ValueError, match="target_ms"):
        derive_at_target(net, table, float("nan"))
    with pytest.raises(ValueError, match="needs a latency table"):
        derive(net, "target")


def test_config_derive_rule_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text("{}")
    on = LatencyConfig(weight=1.0, target_ms=5.0, table=str(path))
    assert on.derive == "auto" and on.derive_rule == "target" and on.derive_tolerance == 0.02
    assert LatencyConfig(weight=0.0, target_ms=5.0, table=str(path)).derive_rule == "argmax"
    assert LatencyConfig().derive_rule == "argmax"
    assert LatencyConfig(weight=1.0, target_ms=5.0, table=str(path), derive="argmax").derive_rule == "argmax"  # fmt: skip
    with pytest.raises(ConfigError, match=r"derive: 'target' needs a table and a target_ms"):
        LatencyConfig(derive="target", table=str(path))
    with pytest.raises(ConfigError, match=r"latency.derive_tolerance must be in \[0, 1\)"):
        from_dict(SearchConfig, {"latency": {"derive_tolerance": 1.5}})
    with pytest.raises(ConfigError, match=r"latency.derive: 'nearest' is not one of"):
        from_dict(SearchConfig, {"latency": {"derive": "nearest"}})


def test_search_derives_at_the_target(tiny_space, tmp_path: Path) -> None:
    """A 1-epoch search whose groups are all undecided at the end: the summary records the
    rule, both predictions, the groups changed and the log-probability given up; the genotype
    written is the target-aware one, and the prune events say which groups the rule moved."""
    from ssr.config import DataConfig, ShrinkConfig
    from ssr.method.search import run_search

    torch.set_num_threads(1)
    table = fake_table(tiny_space, "padded", seed=2)
    table.save(tmp_path / "t.json")
    base = dict(
        space=tiny_space, data=DataConfig(height=32, width=64, train_size=2, val_size=2,
                                          batch_size=2),
        epochs=1, bn_recalibration_batches=1, shrink=ShrinkConfig(enabled=False),
    )  # fmt: skip
    argmax_cfg = SearchConfig(**base, latency=LatencyConfig(table=str(tmp_path / "t.json")))
    plain = run_search(argmax_cfg, None, progress=False)
    target = 0.8 * plain.summary["predicted_latency_ms"]
    assert plain.summary["derive_rule"] == "argmax" and plain.summary["derive_changed_groups"] == 0
    cfg = SearchConfig(**base, latency=LatencyConfig(table=str(tmp_path / "t.json"),
                                                     target_ms=target, derive="target"))  # fmt: skip
    res = run_search(cfg, tmp_path / "search", progress=False)
    s = res.summary
    assert s["derive_rule"] == "target" and s["derive_changed_groups"] >= 1
    assert s["argmax_predicted_latency_ms"] == pytest.approx(plain.summary["predicted_latency_ms"])
    assert abs(s["predicted_latency_ms"] - target) <= 0.02 * target
    assert s["predicted_latency_ms"] == pytest.approx(predict_ms(table, res.genotype))
    assert s["derive_log_prob_given_up"] > 0
    assert any(e["reason"] == "target" for e in res.events)
