"""Confusion matrix -> mIoU, per-class IoU and pixel accuracy (docs/method.md §8.3).

The matrix is accumulated on the device of the predictions with one ``torch.bincount`` per batch
(rows = ground truth, columns = prediction); pixels whose ground truth is ``ignore_index`` are
excluded, so they count neither as false positives nor as false negatives, as in the official
``iouEval``.

``IoU_c = TP / (TP + FP + FN)``. A class that appears neither in the ground truth nor in the
predictions has an undefined IoU. By default (``absent="nan"``) it is NaN and left out of the mean,
the usual convention of the Cityscapes scripts and mmseg. The official SSR code instead divides by
``TP + FP + FN + 1e-15``, so such a class counts as 0 and drags the mean down; ``absent="zero"``
reproduces that (it matters on small or synthetic validation sets, never on full Cityscapes val).

mIoU is not a mean over images, so its noise is estimated by resampling images: from one
confusion matrix per validation image, :func:`bootstrap_miou_interval` draws images with
replacement, sums their matrices, and returns the percentile interval of the resampled mIoU
(docs/method.md §8.3).
"""

from __future__ import annotations

from typing import Literal

import torch

Absent = Literal["nan", "zero"]


def _codes(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``t * K + p`` of every labelled pixel (flattened), and the labelled-pixel mask."""
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
    return target * num_classes + pred, valid


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """``[K, K]`` int64 counts, ``m[t, p]`` = pixels of true class t predicted as p.

    ``pred`` holds class ids (any shape) or logits ``[N, K, H, W]`` (argmax over dim 1);
    ``target`` holds class ids with ``ignore_index`` for unlabelled pixels. Raises ValueError for
    ids outside ``0..K-1`` (other than ``ignore_index`` in the target).
    """
    codes, _ = _codes(pred, target, num_classes, ignore_index)
    counts = torch.bincount(codes, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def confusion_per_image(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """``[N, K, K]`` int64: :func:`confusion_matrix` of each image of a batch, in one bincount.

    Same arguments as :func:`confusion_matrix`, with images on the first dimension of
    ``target``; the sum over images is the batch's confusion matrix.
    """
    codes, valid = _codes(pred, target, num_classes, ignore_index)
    n, kk = target.shape[0], num_classes * num_classes
    image = torch.arange(n, device=codes.device).repeat_interleave(target[0].numel())
    counts = torch.bincount(image[valid] * kk + codes, minlength=n * kk)
    return counts.reshape(n, num_classes, num_classes)


def miou_from_confusion(conf: torch.Tensor, absent: Absent = "nan") -> float:
    """Mean IoU of one matrix: over present classes (``nan``) or all classes (``zero``)."""
    iou = iou_from_confusion(conf.cpu(), absent)
    if absent == "nan":
        present = ~torch.isnan(iou)
        return float(iou[present].mean()) if bool(present.any()) else float("nan")
    return float(iou.mean())


def bootstrap_miou_interval(
    per_image: torch.Tensor,
    level: float = 0.9,
    resamples: int = 1000,
    seed: int = 0,
    absent: Absent = "nan",
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(lo, hi)`` of mIoU over images.

    ``per_image`` is ``[N, K, K]`` (one confusion matrix per image, e.g. from
    :func:`confusion_per_image`). Each of ``resamples`` draws takes N images with replacement
    (fixed ``seed``: the same matrices give the same interval), sums their matrices and computes
    mIoU with the same ``absent`` rule as :func:`miou_from_confusion`; the interval is the
    ``(1 - level)/2`` and ``(1 + level)/2`` quantiles. Vectorised: one ``[R, N] @ [N, K*K]``
    matmul. Returns ``(nan, nan)`` without images.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    conf = per_image.detach().cpu().double()
    n, k = conf.shape[0], conf.shape[-1]
    if n == 0:
        return float("nan"), float("nan")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(n, (resamples, n), generator=g)
    counts = torch.zeros(resamples, n, dtype=torch.float64).scatter_add_(
        1, idx, torch.ones(resamples, n, dtype=torch.float64)
    )
    mats = (counts @ conf.reshape(n, k * k)).reshape(resamples, k, k)
    tp = mats.diagonal(dim1=-2, dim2=-1)
    denom = mats.sum(-2) + mats.sum(-1) - tp  # TP + FP + FN
    if absent == "zero":
        miou = (tp / (denom + 1e-15)).mean(-1)
    elif absent == "nan":
        iou = torch.where(denom > 0, tp / denom.clamp_min(1), torch.nan)
        miou = iou.nanmean(-1)
    else:
        raise ValueError(f"absent must be 'nan' or 'zero', got {absent!r}")
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.nanquantile(miou, q).tolist()
    return float(lo), float(hi)


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
    """Running confusion matrix over batches (docs/method.md §8.3): ``update`` then read the scores.

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
        return miou_from_confusion(self.matrix, absent)

    def pixel_accuracy(self) -> float:
        """Correct pixels / labelled pixels (NaN before any labelled pixel)."""
        m = self.matrix.cpu()
        total = int(m.sum())
        return float(m.diagonal().sum()) / total if total else float("nan")
