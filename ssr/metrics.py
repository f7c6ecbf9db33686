"""Confusion matrix -> mIoU, per-class IoU and pixel accuracy (spec §8.3).

The matrix is accumulated on the device of the predictions with one ``torch.bincount`` per batch
(rows = ground truth, columns = prediction); pixels whose ground truth is ``ignore_index`` are
excluded, so they count neither as false positives nor as false negatives, as in the official
``iouEval``.

``IoU_c = TP / (TP + FP + FN)``. A class that appears neither in the ground truth nor in the
predictions has an undefined IoU. By default (``absent="nan"``) it is NaN and left out of the mean,
the usual convention of the Cityscapes scripts and mmseg. The official SSR code instead divides by
``TP + FP + FN + 1e-15``, so such a class counts as 0 and drags the mean down; ``absent="zero"``
reproduces that (it matters on small or synthetic validation sets, never on full Cityscapes val).
"""

from __future__ import annotations

from typing import Literal

import torch

Absent = Literal["nan", "zero"]


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """``[K, K]`` int64 counts, ``m[t, p]`` = pixels of true class t predicted as p.

    ``pred`` holds class ids (any shape) or logits ``[N, K, H, W]`` (argmax over dim 1);
    ``target`` holds class ids with ``ignore_index`` for unlabelled pixels. Raises ValueError for
    ids outside ``0..K-1`` (other than ``ignore_index`` in the target).
    """
    if pred.dim() == target.dim() + 1 and pred.shape[1] == num_classes:
        pred = pred.argmax(1)
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long().to(pred.device)
    valid = target != ignore_index
    target, pred = target[valid], pred[valid]
    # NOTE: one host sync per batch; silently clamping bad ids would corrupt the matrix.
    bad_t = (target < 0) | (target >= num_classes)
    bad_p = (pred < 0) | (pred >= num_classes)
    if bool((bad_t | bad_p).any()):
        t_vals = torch.unique(target[bad_t]).tolist()[:10]
        p_vals = torch.unique(pred[bad_p]).tolist()[:10]
        raise ValueError(
            f"class ids out of range 0..{num_classes - 1}: target {t_vals}, prediction {p_vals} "
            f"(ignore_index={ignore_index})"
        )
    flat = target * num_classes + pred
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def iou_from_confusion(conf: torch.Tensor, absent: Absent = "nan") -> torch.Tensor:
    """Per-class IoU (float64) from a confusion matrix; see the module docstring for ``absent``."""
    conf = conf.double()
    tp = conf.diagonal()
    fp = conf.sum(0) - tp
    fn = conf.sum(1) - tp
    denom = tp + fp + fn
    if absent == "zero":
        return tp / (denom + 1e-15)
    if absent != "nan":
        raise ValueError(f"absent must be 'nan' or 'zero', got {absent!r}")
    return torch.where(denom > 0, tp / denom.clamp_min(1), torch.full_like(tp, float("nan")))


class ConfusionMatrix:
    """Running confusion matrix over batches (spec §8.3): ``update`` then read the scores.

    The matrix lives on ``device`` (moved to the predictions' device on first update when None).
    """

    def __init__(
        self, num_classes: int, ignore_index: int = 255, device: torch.device | str | None = None
    ) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` class ids or logits ``[N, K, H, W]``, ``target`` class ids."""
        conf = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        if self.matrix.device != conf.device:
            self.matrix = self.matrix.to(conf.device)
        self.matrix += conf

    def per_class_iou(self, absent: Absent = "nan") -> torch.Tensor:
        """IoU per class on the CPU (float64); NaN or 0 for classes absent from both sides."""
        return iou_from_confusion(self.matrix.cpu(), absent)

    def miou(self, absent: Absent = "nan") -> float:
        """Mean IoU: over present classes (``nan``) or over all classes (``zero``, official)."""
        iou = self.per_class_iou(absent)
        if absent == "nan":
            present = ~torch.isnan(iou)
            return float(iou[present].mean()) if bool(present.any()) else float("nan")
        return float(iou.mean())

    def pixel_accuracy(self) -> float:
        """Correct pixels / labelled pixels (NaN before any labelled pixel)."""
        m = self.matrix.cpu()
        total = int(m.sum())
        return float(m.diagonal().sum()) / total if total else float("nan")
