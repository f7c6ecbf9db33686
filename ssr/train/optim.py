"""The optimiser recipe of searching and retraining: Adam and a per-epoch poly schedule.

Both the weight and architecture optimisers of the search and the retraining optimiser are Adam
with L2 weight decay; the learning rate follows ``base_lr * (1 - epoch / total) ** power``, set
once per epoch (docs/method.md §6, §8.2).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ssr.config import ConfigError, OptimConfig

__all__ = ["make_adam", "poly_lr"]


def poly_lr(
    optimizer: torch.optim.Optimizer, base_lr: float, epoch: int, total: int, power: float
) -> float:
    """Set and return ``base_lr * (1 - epoch / total) ** power`` (0-based ``epoch``).

    docs/method.md §6, §8.2.

    The official code steps per epoch with ``(1 - (e - 1) / E) ** 0.9`` for 1-based ``e``, the
    same values. ``power = 0`` keeps the learning rate constant.
    """
    lr = base_lr * (1.0 - min(epoch, total) / total) ** power if power > 0 else base_lr
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def make_adam(params: Iterable[Any], cfg: OptimConfig) -> torch.optim.Adam:
    """Adam with the settings of ``cfg`` (docs/method.md §6: lr, betas, eps, L2 weight decay).

    Parameters all on CUDA or all on the CPU get the fused implementation: one kernel per step
    instead of about ten small operations per parameter (on a 2-thread CPU, 1-3 % of a search or
    retraining step: ``benchmarks/compiled_steps.py``'s ``_loop_adam`` variants, BENCHMARKS.md),
    and with an fp16 gradient scaler the skip of an overflowing step happens on the device,
    without reading the scaler's flag on the host (ssr/train/precision.py).
    """
    if len(cfg.betas) != 2:
        raise ConfigError(f"optim.betas must have two values, got {list(cfg.betas)}")
    params = list(params)
    tensors = [p for p in params if isinstance(p, torch.Tensor)]
    kinds = {p.device.type for p in tensors}
    fused = bool(tensors) and len(tensors) == len(params) and kinds in ({"cuda"}, {"cpu"})
    return torch.optim.Adam(
        params,
        lr=cfg.lr,
        betas=(cfg.betas[0], cfg.betas[1]),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        fused=True if fused else None,
    )
