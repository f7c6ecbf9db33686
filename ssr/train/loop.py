"""The one epoch loop, and evaluation through it (docs/architecture.md §6, docs/method.md §8.3).

:func:`run_epoch` iterates batches through a ``step`` callable and averages what it returns;
the search's bi-level step, retraining and evaluation all go through it, so progress bars,
per-epoch log lines and the averaging rule are the same everywhere. :func:`evaluate` computes
mIoU, per-class IoU, pixel accuracy and loss of a model on a loader.

A step may return floats or 0-d tensors. Tensors are summed where they live and read once at
the end of the epoch, so on a GPU the loop itself never waits for the device inside an epoch
(docs/architecture.md §6); a progress bar, shown only on a terminal, reads its running means at most once a
second. tqdm is optional: without it there is no bar and nothing else changes.

The loop logs one summary line per epoch on the ``ssr.train.loop`` logger; the library installs no
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

from ssr.data.labels import IGNORE
from ssr.train.loss import weighted_ce
from ssr.train.metrics import ConfusionMatrix
from ssr.train.precision import autocast, to_device

try:
    from tqdm import tqdm
except ImportError:  # NOTE: images without tqdm (the GPU check's) run the same loop, no bar
    tqdm = None

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


def _accumulate(sums: dict[str, Any], out: Mapping[str, float | Tensor], n: int) -> None:
    for k, v in out.items():
        add = v.detach().float() * n if isinstance(v, Tensor) else float(v) * n
        sums[k] = sums[k] + add if k in sums else add


def _read(sums: dict[str, Any]) -> dict[str, float]:
    """Plain floats of the sums: every tensor read in one host transfer."""
    keys = [k for k, v in sums.items() if isinstance(v, Tensor)]
    out = {k: float(v) for k, v in sums.items() if not isinstance(v, Tensor)}
    if keys:
        devices = {sums[k].device for k in keys}
        dev = devices.pop() if len(devices) == 1 else torch.device("cpu")
        values = torch.stack([sums[k].to(dev).reshape(()) for k in keys]).tolist()
        out.update(zip(keys, values))
    return {k: out[k] for k in sums}


def run_epoch(
    batches: Iterable[Any],
    step: Callable[[Any], Mapping[str, float | Tensor]],
    *,
    desc: str,
    progress: bool = True,
    log_summary: bool = True,
) -> dict[str, float]:
    """Run ``step`` on every batch; return the batch-size-weighted mean of what it returns.

    ``step`` returns floats or 0-d tensors (summed on their device, read once at the end). A
    tqdm bar shows running means when ``progress`` is true, stderr is a terminal and tqdm is
    installed; with ``log_summary`` one INFO line per epoch is logged either way.
    """
    total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
    show = progress and sys.stderr.isatty() and tqdm is not None
    sums: dict[str, Any] = {}
    seen = 0
    t0 = time.perf_counter()
    bar = tqdm(batches, desc=desc, total=total, leave=False) if show else None
    shown = t0
    try:
        for batch in bar if bar is not None else batches:
            n = _batch_size(batch)
            _accumulate(sums, step(batch), n)
            seen += n
            if bar is not None and time.perf_counter() - shown > 1.0:  # one read a second
                shown = time.perf_counter()
                running = {k: f"{v / seen:.4g}" for k, v in _read(sums).items()}
                bar.set_postfix(running, refresh=False)
    finally:
        if bar is not None:
            bar.close()
    means = {k: v / seen for k, v in _read(sums).items()} if seen else {}
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
    precision: str = "fp32",
    channels_last: bool = False,
) -> dict[str, Any]:
    """mIoU, per-class IoU, pixel accuracy and loss of ``model`` on ``loader``.

    Definitions: docs/method.md §8.3.

    Runs in eval and inference mode (the previous mode is restored); logits are upsampled to
    the label size (full resolution when the loader's labels are, ``data.eval_label_size``).
    ``miou`` leaves classes absent from both prediction and label out of the mean (NaN in
    ``per_class_iou``); ``miou_official`` counts them as 0 like the official code. The forward
    pass runs under the run's ``precision`` (ssr/train/precision.py); logits are upsampled, compared
    and scored in fp32.
    """
    device = torch.device(device)
    conf = ConfusionMatrix(num_classes, ignore_index, device=device)
    w = weight.to(device) if weight is not None else None

    def step(batch: Any) -> dict[str, Tensor]:
        x, y = to_device(batch[0], device, channels_last), to_device(batch[1], device)
        with autocast(device, precision):
            logits = model(x)
        logits = logits.float().contiguous(memory_format=torch.contiguous_format)
        if logits.shape[-2:] != y.shape[-2:]:
            logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
        conf.update(logits.argmax(1), y)
        return {"loss": weighted_ce(logits, y, w, ignore_index)}

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
