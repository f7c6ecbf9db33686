"""Hierarchical and progressive solution-space shrinking (HPSS, docs/method.md §5).

One policy serves every dimension: in each active group, a candidate whose probability is at
most ``threshold`` times the group's maximum is dropped. The group's first maximum (lowest
index among ties) always survives, so a decision never empties a group. :func:`decide`
returns the decisions; the search loop records them (epoch, dimension, group, candidate,
probability) and only then applies them with :func:`apply`.

When the epoch budget ends before every group is down to one candidate, :func:`argmax_fallback`
keeps each group's maximum (deterministic ties: lowest index; docs/method.md §12.12).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Decision:
    """Drop ``candidate`` of ``group`` (flat group index) in ``dimension``."""

    dimension: str
    group: int
    candidate: int
    prob: float
    ratio: float
    reason: str = "threshold"

    def to_dict(self) -> dict:
        return asdict(self)


def decide(
    dimension: str,
    probs: Tensor,
    alive: Tensor,
    threshold: float,
    active: Tensor | None = None,
    max_per_decision: int | None = None,
    reason: str = "threshold",
) -> list[Decision]:
    """Candidates to drop in one dimension.

    ``probs``/``alive``: (..., K) with groups on the leading dims (flattened); ``active``:
    optional (groups,) mask of groups that still matter. With ``max_per_decision`` only the
    lowest-ratio candidates are dropped (ties broken by group, then candidate index).
    """
    k = probs.shape[-1]
    p = probs.detach().reshape(-1, k).cpu().double()
    a = alive.reshape(-1, k).cpu()
    groups = torch.ones(p.shape[0], dtype=torch.bool) if active is None else active.reshape(-1)
    out: list[Decision] = []
    for g in torch.nonzero(groups & (a.sum(-1) > 1)).flatten().tolist():
        row = torch.where(a[g], p[g], torch.full_like(p[g], -1.0))
        best = int(torch.argmax(row))  # first maximum: deterministic tie-breaking
        pmax = float(row[best])
        for c in torch.nonzero(a[g]).flatten().tolist():
            ratio = float(p[g, c]) / pmax if pmax > 0 else 0.0
            if c != best and ratio <= threshold:
                out.append(Decision(dimension, g, c, float(p[g, c]), ratio, reason))
    out.sort(key=lambda d: (d.ratio, d.group, d.candidate))
    if max_per_decision is not None:
        out = out[:max_per_decision]
    return sorted(out, key=lambda d: (d.group, d.candidate))


def argmax_fallback(
    dimension: str, probs: Tensor, alive: Tensor, active: Tensor | None = None
) -> list[Decision]:
    """Drop everything but each active group's first maximum (the end-of-budget fallback)."""
    return decide(dimension, probs, alive, float("inf"), active, reason="argmax")


def apply(alive: Tensor, decisions: list[Decision]) -> None:
    """Switch off the decided candidates in place (``alive`` is a (..., K) bool buffer)."""
    flat = alive.view(-1, alive.shape[-1])
    for d in decisions:
        flat[d.group, d.candidate] = False
