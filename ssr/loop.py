"""The one epoch loop, and evaluation through it (docs/design.md §6, docs/method.md §8.3).

:func:`run_epoch` iterates batches through a ``step`` callable and averages what it returns;
the search's bi-level step, retraining and evaluation all go through it, so progress bars,
per-epoch log lines and the averaging rule are the same everywhere. :func:`evaluate` computes
mIoU, per-class IoU, pixel accuracy and loss of a model on a loader.

The loop logs one summary line per epoch on the ``ssr.loop`` logger; the library installs no
log handler (the command line configures logging, :func:`ssr.cli.main`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ssr.data.labels import IGNORE
from ssr.loss import weighted_ce
from ssr.metrics import ConfusionMatrix

__all__ = ["Reporter", "evaluate", "run_epoch"]

log = logging.getLogger(__name__)

Reporter = Callable[[dict[str, float], int], None]
"""``reporter(metrics, epoch)``: what search and retraining call after every epoch."""


def _batch_size(batch: Any) -> int:
    """Leading dimension of the first tensor in a (nested) batch."""
    while isinstance(batch, (list, tuple)) and batch:
        batch = batch[0]
    if isinstance(batch, Mapping) and batch:
        return _batch_size(next(iter(batch.values())))
    if isinstance(batch, Tensor) and batch.dim() > 0:
        return int(batch.shape[0])
    return 1


def run_epoch(
    batches: Iterable[Any],
    step: Callable[[Any], Mapping[str, float]],
    *,
    desc: str,
    progress: bool = True,
    log_summary: bool = True,
) -> dict[str, float]:
    """Run ``step`` on every batch; return the batch-size-weighted mean of what it returns.

    A tqdm bar shows running means when ``progress`` is true and stderr is a terminal; with
    ``log_summary`` one INFO line per epoch is logged either way.
    """
    total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
    show = progress and sys.stderr.isatty()
    sums: dict[str, float] = {}
    seen = 0
    t0 = time.perf_counter()
    with tqdm(batches, desc=desc, total=total, disable=not show, leave=False) as bar:
        for batch in bar:
            n = _batch_size(batch)
            out = step(batch)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
            seen += n
            if show:
                bar.set_postfix({k: f"{v / seen:.4g}" for k, v in sums.items()}, refresh=False)
    means = {k: v / seen for k, v in sums.items()} if seen else {}
    if log_summary:
        secs = time.perf_counter() - t0
        parts = " ".join(f"{k}={v:.4g}" for k, v in means.items())
        log.info(
            "%s: %s (%d samples, %.1fs, %.1f/s)", desc, parts, seen, secs, seen / max(secs, 1e-9)
        )
    return means


def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    num_classes: int,
    device: torch.device | str,
    *,
    weight: Tensor | None = None,
    ignore_index: int = IGNORE,
    progress: bool = True,
) -> dict[str, Any]:
    """mIoU, per-class IoU, pixel accuracy and loss of ``model`` on ``loader``.

    Definitions: docs/method.md §8.3.

    Runs in eval and inference mode (the previous mode is restored); logits are upsampled to
    the label size. ``miou`` leaves classes absent from both prediction and label out of the
    mean (NaN in ``per_class_iou``); ``miou_official`` counts them as 0 like the official code.
    """
    device = torch.device(device)
    conf = ConfusionMatrix(num_classes, ignore_index, device=device)
    w = weight.to(device) if weight is not None else None

    def step(batch: Any) -> dict[str, float]:
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        logits = model(x)
        if logits.shape[-2:] != y.shape[-2:]:
            logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
        conf.update(logits.argmax(1), y)
        return {"loss": float(weighted_ce(logits, y, w, ignore_index))}

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            stats = run_epoch(loader, step, desc="eval", progress=progress, log_summary=False)
    finally:
        model.train(was_training)
    iou = conf.per_class_iou()
    return {
        "miou": conf.miou(),
        "miou_official": conf.miou(absent="zero"),
        "per_class_iou": [float(v) for v in iou],
        "pixel_acc": conf.pixel_accuracy(),
        "loss": stats.get("loss", float("nan")),
    }
