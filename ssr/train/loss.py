"""The losses: SSR terms, the expected-FLOPs and latency terms and the class-weighted CE (docs/method.md §4).

``L_arch = ce_scale * CE + sum_dim lambda_dim * S_dim + lambda_F * L_FLOPs + lambda_T * L_lat``
(docs/method.md §4.2, §4.4), with every constant taken from :class:`ssr.config.SearchConfig`. The CE term,
:func:`weighted_ce`, is also the loss of the weight step, of retraining and of evaluation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ssr.config import FlopsConfig, LatencyConfig, SSRConfig
from ssr.data.labels import IGNORE


def ssr_group_terms(logits: Tensor, alive: Tensor) -> tuple[Tensor, Tensor]:
    """Per-group SSR value ``(1/K) sum_k log p_k + log K`` and the groups' K (alive count).

    ``p`` is the sigmoid of the logits normalised over the alive candidates (docs/method.md §3). The
    value is ``-KL(U_K || p)``: 0 at the uniform distribution, negative otherwise, and tends to
    ``-inf`` as a candidate's probability vanishes; minimising it drives each group to a
    vertex of the simplex (docs/method.md §4.2, the L0 argument). Computed in log space for stability.
    """
    logits = logits.reshape(-1, logits.shape[-1])
    alive = alive.reshape(-1, alive.shape[-1]).to(logits.dtype)
    k = alive.sum(-1)
    log_sig = F.logsigmoid(logits)
    # log sum over alive of sigmoid(logit): masked logsumexp
    masked = torch.where(alive > 0, log_sig, torch.full_like(log_sig, -math.inf))
    log_norm = torch.logsumexp(masked, dim=-1)
    log_p = log_sig - log_norm[:, None]
    mean_log_p = (log_p * alive).sum(-1) / k.clamp_min(1.0)
    value = mean_log_p + torch.log(k.clamp_min(1.0))
    return torch.where(k > 1, value, torch.zeros_like(value)), k


def ssr_regularizer(
    logits: Tensor, alive: Tensor, averaging: str = "active", active: Tensor | None = None
) -> Tensor:
    """Mean SSR term over groups (docs/method.md §4.2).

    ``logits`` and ``alive`` are (groups, candidates) (extra leading dims are flattened).
    ``averaging='active'``: mean over groups with more than one alive candidate (and, when
    ``active`` is given, whose layer/op is still alive; docs/method.md §12.5). ``'all'``: the official
    mean over every group, collapsed groups counting 0. Returns 0 when no group is active.
    """
    values, k = ssr_group_terms(logits, alive)
    live = k > 1
    if active is not None:
        live = live & active.to(live.device).reshape(-1)
        values = torch.where(live, values, torch.zeros_like(values))
    if averaging == "all":
        return values.sum() / max(values.numel(), 1)
    if averaging != "active":
        raise ValueError(f"averaging must be 'active' or 'all', got {averaging!r}")
    n = live.sum()
    return torch.where(n > 0, values.sum() / n.clamp_min(1), values.sum() * 0.0)


def flops_loss(expected: Tensor, maximum: float, cfg: FlopsConfig) -> Tensor:
    """Penalty on expected MACs normalised by the space's largest sub-network (docs/method.md §4.3).

    ``l2``: ``(E/max - target)^2`` (the official active branch); ``l1``: ``|E/max - target|``;
    ``band``: zero while ``E/(target*max)`` is within [0.95, 1.0], ``|log|`` distance outside
    (the official ``log_l1`` variant).
    """
    return budget_penalty(expected / maximum, cfg.target, cfg.form)


def budget_penalty(ratio: Tensor, target: float, form: str) -> Tensor:
    """The one penalty shape of the cost terms (FLOPs, docs/method.md §4.3; latency, §4.4).

    ``l2``: ``(ratio - target)^2``; ``l1``: ``|ratio - target|``; ``band``: zero while
    ``ratio / target`` is within [0.95, 1.0], the absolute log distance to that band outside.
    """
    if form == "l2":
        return (ratio - target) ** 2
    if form == "l1":
        return (ratio - target).abs()
    rel = ratio / target
    return F.relu(torch.log(rel)) + F.relu(torch.log(0.95 / rel))


def latency_loss(expected_ms: Tensor, cfg: LatencyConfig) -> Tensor:
    """Penalty on the expected latency relative to ``cfg.target_ms`` (docs/method.md §4.4):
    :func:`budget_penalty` of ``E[latency] / target_ms`` with target 1, in ``cfg.form``."""
    if cfg.target_ms is None:
        raise ValueError("latency_loss needs latency.target_ms")
    return budget_penalty(expected_ms / cfg.target_ms, 1.0, cfg.form)


def ssr_weight(cfg: SSRConfig, dim: str, epoch: int) -> float:
    """Weight of the SSR term of ``dim`` at ``epoch`` (0 before ``warmup_epochs``)."""
    if epoch < cfg.warmup_epochs:
        return 0.0
    return float(getattr(cfg, dim))


def weighted_ce(
    logits: Tensor, target: Tensor, weight: Tensor | None = None, ignore_index: int = IGNORE
) -> Tensor:
    """Class-weighted cross-entropy with an ignore label (docs/method.md §4.1, §8.2).

    The segmentation loss of the weight step, the architecture objective's CE term, retraining
    and evaluation. Logits ``[N, K, h, w]`` are upsampled bilinearly (align_corners=False) to
    the label size ``[N, H, W]`` when they differ. The mean is weighted by class, as
    ``NLLLoss2d(weight)``: ``sum_i w[y_i] * nll_i / sum_i w[y_i]`` over non-ignored pixels; a
    batch with no labelled pixel gives 0 (not NaN).
    """
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    target = target.long()
    losses = F.cross_entropy(
        logits, target, weight=weight, ignore_index=ignore_index, reduction="none"
    )
    valid = target != ignore_index
    # NOTE: the denominator is the summed weight of labelled pixels, as in the weighted mean.
    w = weight[torch.where(valid, target, 0)] * valid if weight is not None else valid
    denom = w.sum()
    return losses.sum() / denom.clamp_min(1e-12)
