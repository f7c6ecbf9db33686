"""Target-aware derivation: the undecided groups decided to land on the target latency
(docs/method.md §4.4, "Deriving at the target").

When the epoch budget ends before shrinking has decided every group, the paper's rule
(:func:`ssr.method.derive.selected`, docs/method.md §12.12) keeps each undecided group's argmax.
The latency term steers the *expected* latency under the architecture distribution to the
target, but the argmax network is the distribution's mode, not its mean: with many groups
undecided its predicted latency can sit well away from a target the expectation met (issue 20). Hardware-aware NAS derives under the latency constraint instead of by argmax alone (e.g.
TF-NAS, Hu et al., ECCV 2020, which adjusts the derived network until it meets its latency
target); :func:`derive_at_target` does so with the latency table the search steered by.

**The rule.** Start from the argmax genotype. While its predicted latency
(:func:`ssr.method.latency_table.predict_ms`) is more than ``tolerance * target`` away from the
target, consider every single change of one *undecided* group of the current network (more
than one alive candidate: a stage's depth, a layer's op, a (layer, op)'s output or mid width)
to another alive candidate, and take the one with the best ratio of the distance to the target
it removes to the log-probability it gives up (the greedy rule of the fractional knapsack,
Dantzig 1957: the most latency per unit of the distribution's belief). A change that gives
nothing up (back to a likelier candidate) ranks first. Stop within the tolerance, or when no
change brings the prediction closer. Each step strictly shortens the distance, so the rule ends.

- A decided group (one alive candidate: shrinking decided it) never changes.
- The log-probability given up is ``sum over the network's groups of log p(group's most likely
  candidate) - log p(chosen)``, with SSR's probabilities (sigmoid normalised over the alive
  candidates, docs/method.md §3): 0 for the argmax network. A layer a depth change adds comes
  with its own argmax choices; an op change brings that op's argmax widths.
- Widths are chained as :func:`ssr.method.derive.genotype_from_choices` chains them (one
  implementation): the rule only picks choices.

:func:`discretize_to` then switches off every other candidate (prune events with reason
``target`` where the rule moved a group, ``argmax`` elsewhere), so the derived network, its
inherited weights (:func:`ssr.method.derive.derive_network`) and the gap are the target-aware
network's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ssr.method.derive import Selection, _choice, checked_probs, genotype_from_choices
from ssr.method.latency_table import LatencyTable, predict_ms
from ssr.method.shrink import Decision, apply
from ssr.method.supernet import DIMENSIONS, Supernet

__all__ = ["Derivation", "derive", "derive_at_target", "discretize_to"]

#: One group: a dimension and its flat index (``Decision.group``'s numbering).
Group = tuple[str, int]


@dataclass(frozen=True)
class Derivation:
    """How the undecided groups were decided: ``rule`` (``argmax`` or ``target``), the choices
    (``selection``), the predicted latency of the argmax network and of the derived one (None
    without a table), the groups whose candidate differs from the argmax network's, the
    log-probability given up against it, the greedy steps, and ``chosen``: every group's
    candidate (for :func:`discretize_to`)."""

    rule: str
    selection: Selection
    argmax_ms: float | None
    derived_ms: float | None
    changed_groups: int
    log_prob_given_up: float
    steps: int
    chosen: dict[Group, int]
    argmax: dict[Group, int]

    def summary(self) -> dict[str, Any]:
        """The search summary's fields (docs/method.md §4.4)."""
        return {
            "derive_rule": self.rule,
            "argmax_predicted_latency_ms": self.argmax_ms,
            "derive_changed_groups": self.changed_groups,
            "derive_log_prob_given_up": self.log_prob_given_up,
            "derive_steps": self.steps,
        }


class _Groups:
    """A supernet's groups: alive candidates, log-probabilities, argmax, and which groups a
    choice of every group (``state``) puts into the network."""

    def __init__(self, net: Supernet) -> None:
        probs, alive = checked_probs(net)
        self.net, self.n_ops = net, len(net.ops)
        self.options: dict[str, list[list[int]]] = {}
        self.logp: dict[str, list[list[float]]] = {}
        self.top: dict[str, list[float]] = {}
        self.start: dict[Group, int] = {}
        for d in DIMENSIONS:
            a = alive[d].reshape(-1, alive[d].shape[-1])
            p = probs[d].reshape(a.shape)
            ls = F.logsigmoid(net.arch[d].detach().cpu().double()).reshape(a.shape)
            ls = ls.masked_fill(~a, -math.inf)
            lp = ls - torch.logsumexp(ls, -1, keepdim=True).clamp_min(-1e300)
            self.options[d] = [torch.nonzero(row).flatten().tolist() for row in a]
            self.logp[d] = lp.tolist()
            self.top[d] = [max((r[c] for c in o), default=0.0)
                           for r, o in zip(self.logp[d], self.options[d])]  # fmt: skip
            for g in range(a.shape[0]):
                self.start[(d, g)] = _choice(p[g], a[g])  # the argmax, as selected() picks

    def present(self, state: dict[Group, int]) -> list[Group]:
        """The groups of the network ``state`` describes: every stage's depth, the op of each
        kept layer and the widths of its op."""
        out: list[Group] = []
        for s in range(len(self.net.widths)):
            out.append(("depth", s))
            for li in self.net.stage_layers(s)[: state[("depth", s)] + 1]:
                k = li * self.n_ops + state[("op", li)]
                out += [("op", li), ("out", k), ("mid", k)]
        return out

    def selection(self, state: dict[Group, int]) -> Selection:
        depths = [state[("depth", s)] + 1 for s in range(len(self.net.widths))]
        choices = []
        for s in range(len(self.net.widths)):
            for li in self.net.stage_layers(s)[: depths[s]]:
                k = li * self.n_ops + state[("op", li)]
                choices.append((state[("op", li)], state[("out", k)], state[("mid", k)]))
        return depths, choices

    def candidates(self, group: Group) -> list[int]:
        return self.options[group[0]][group[1]]

    def given_up(self, state: dict[Group, int]) -> float:
        """Log-probability the network of ``state`` gives up against each group's likeliest."""
        return sum(self.top[d][g] - self.logp[d][g][state[(d, g)]] for d, g in self.present(state))


def derive_at_target(
    net: Supernet,
    table: LatencyTable,
    target_ms: float,
    tolerance: float = 0.02,
    reduction: str = "exact",
    max_steps: int = 1000,
) -> Derivation:
    """The target-aware choices of ``net``'s undecided groups (the module doc's greedy rule):
    predicted latency within ``tolerance * target_ms`` of ``target_ms`` where single changes
    reach it, at the least log-probability given up per millisecond moved."""
    if not (math.isfinite(target_ms) and target_ms > 0):
        raise ValueError(f"target_ms must be a finite number > 0, got {target_ms}")
    groups = _Groups(net)
    cache: dict[str, float] = {}

    def ms(state: dict[Group, int]) -> float:
        sel = groups.selection(state)
        key = repr(sel)
        if key not in cache:
            g = genotype_from_choices(net.space, sel, table.head, reduction)
            cache[key] = predict_ms(table, g)
        return cache[key]

    state, steps = dict(groups.start), 0
    argmax_ms = ms(state)
    dist, lost = abs(argmax_ms - target_ms), 0.0
    while dist > tolerance * target_ms and steps < max_steps:
        best: tuple[float, float] | None = None
        best_state: dict[Group, int] = {}
        for group in groups.present(state):
            options = groups.candidates(group)
            if len(options) < 2:
                continue  # decided by shrinking: never changed
            for c in options:
                if c == state[group]:
                    continue
                new = {**state, group: c}
                gain = dist - abs(ms(new) - target_ms)
                if gain <= 1e-9 * target_ms:
                    continue
                cost = groups.given_up(new) - lost
                key = (math.inf if cost <= 0 else gain / cost, gain)
                if best is None or key > best:
                    best, best_state = key, new
        if best is None:
            break
        state, steps = best_state, steps + 1
        dist, lost = abs(ms(state) - target_ms), groups.given_up(state)
    present = groups.present(state)
    changed = sum(state[g] != groups.start[g] for g in present)
    return Derivation(
        "target", groups.selection(state), argmax_ms, ms(state), changed, lost, steps,
        state, groups.start,
    )  # fmt: skip


def derive(
    net: Supernet,
    rule: str,
    table: LatencyTable | None = None,
    target_ms: float | None = None,
    tolerance: float = 0.02,
    reduction: str = "exact",
) -> Derivation:
    """The choices by ``rule`` (``argmax``: :func:`ssr.method.derive.selected`; ``target``:
    :func:`derive_at_target`, which needs a table and a target); predicted latencies when a
    table is given."""
    if rule == "target":
        if table is None or target_ms is None:
            raise ValueError("target-aware derivation needs a latency table and a target")
        return derive_at_target(net, table, target_ms, tolerance, reduction)
    if rule != "argmax":
        raise ValueError(f"derive rule must be argmax or target, got {rule!r}")
    groups = _Groups(net)
    sel = groups.selection(groups.start)
    pred = None
    if table is not None:
        pred = predict_ms(table, genotype_from_choices(net.space, sel, table.head, reduction))
    return Derivation("argmax", sel, pred, pred, 0, 0.0, 0, groups.start, groups.start)


def discretize_to(net: Supernet, derivation: Derivation) -> list[tuple[str, Decision]]:
    """Switch off every alive candidate but the derivation's, dimension by dimension (depth,
    op, widths: each decided on the groups the previous ones left active, as
    :func:`ssr.method.gap.discretize_by_argmax`). Returns the decisions, with reason
    ``target`` in the groups the rule moved off their argmax and ``argmax`` elsewhere."""
    out: list[tuple[str, Decision]] = []
    for dim in DIMENSIONS:
        k = net.alive(dim).shape[-1]
        probs = net.probs(dim).detach().cpu().double().reshape(-1, k)
        alive = net.alive(dim).cpu().reshape(-1, k)
        active = net.active_groups(dim).cpu().reshape(-1)
        decisions = []
        for g in torch.nonzero(active & (alive.sum(-1) > 1)).flatten().tolist():
            keep = derivation.chosen[(dim, g)]
            reason = "argmax" if keep == derivation.argmax[(dim, g)] else "target"
            top = float(probs[g][alive[g]].max())
            for c in torch.nonzero(alive[g]).flatten().tolist():
                if c != keep:
                    p = float(probs[g, c])
                    ratio = p / top if top > 0 else 0.0
                    decisions.append(Decision(dim, g, c, p, ratio, reason))
        apply(net.alive(dim), decisions)
        net.refresh_alive()
        out.extend((dim, d) for d in decisions)
    return out
