"""Confusion matrix, IoU conventions and pixel accuracy against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from ssr.train.metrics import (
    ConfusionMatrix,
    bootstrap_miou_interval,
    confusion_matrix,
    confusion_per_image,
    iou_from_confusion,
    miou_from_confusion,
)

# 3 classes (0, 1, 2) and a 4th class id 3 that never occurs; 255 = ignore.
TARGET = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
PRED = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
# Labelled pixels (t, p): (0,0) (0,1) (1,1) (1,1) (2,2) (2,0); the last two are ignored.
HAND = torch.tensor(
    [
        [1, 1, 0, 0],
        [0, 2, 0, 0],
        [1, 0, 1, 0],
        [0, 0, 0, 0],
    ]
)


def test_confusion_matrix_by_hand() -> None:
    assert torch.equal(confusion_matrix(PRED, TARGET, 4), HAND)


def test_iou_pixel_accuracy_and_absent_classes() -> None:
    cm = ConfusionMatrix(4)
    cm.update(PRED, TARGET)
    # IoU = TP / (TP + FP + FN): class 0: 1/(1+1+1), class 1: 2/(2+1+0), class 2: 1/(1+0+1)
    iou = cm.per_class_iou()
    assert iou[:3].tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert math.isnan(iou[3])  # absent from prediction and label
    assert cm.miou() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert cm.miou(absent="zero") == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 4)  # official
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)


def test_logits_and_batches_accumulate() -> None:
    logits = torch.nn.functional.one_hot(PRED, 4).permute(2, 0, 1)[None].float()
    cm = ConfusionMatrix(4)
    cm.update(logits, TARGET[None])  # logits [N, K, H, W] -> argmax
    cm.update(PRED[:1], TARGET[:1])
    cm.update(PRED[1:], TARGET[1:])
    assert torch.equal(cm.matrix, 2 * HAND)
    cm.reset()
    assert cm.matrix.sum() == 0 and math.isnan(cm.miou()) and math.isnan(cm.pixel_accuracy())


def test_false_positive_of_an_absent_class_counts() -> None:
    conf = confusion_matrix(torch.tensor([3, 3]), torch.tensor([0, 255]), 4)
    iou = iou_from_confusion(conf)
    assert iou[0] == 0 and iou[3] == 0  # class 3 was predicted on a labelled pixel: FP
    assert math.isnan(iou[1]) and math.isnan(iou[2])


def test_out_of_range_ids_are_errors() -> None:
    with pytest.raises(ValueError, match=r"target \[7\]"):
        confusion_matrix(torch.tensor([0]), torch.tensor([7]), 4)
    with pytest.raises(ValueError, match=r"prediction \[5\]"):
        confusion_matrix(torch.tensor([5]), torch.tensor([1]), 4)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(2, 3), torch.zeros(3, 2), 4)
    with pytest.raises(ValueError, match="absent"):
        iou_from_confusion(HAND, absent="skip")  # type: ignore[arg-type]


def test_per_image_matrices_sum_to_the_batch_matrix() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (3, 5, 6), generator=g)
    target[0, 0] = 255
    logits = torch.randn(3, 4, 5, 6, generator=g)
    per = confusion_per_image(logits, target, 4)
    assert per.shape == (3, 4, 4)
    for i in range(3):
        assert torch.equal(per[i], confusion_matrix(logits[i : i + 1], target[i : i + 1], 4))
    assert torch.equal(per.sum(0), confusion_matrix(logits, target, 4))
    with pytest.raises(ValueError, match="target"):
        confusion_per_image(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 9), 4)


def _reference_interval(per: torch.Tensor, level: float, resamples: int, seed: int):
    """The bootstrap by hand: a loop over resamples, the same draws."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(per.shape[0], (resamples, per.shape[0]), generator=g)
    values = torch.tensor([miou_from_confusion(per[row].sum(0)) for row in idx])
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    return torch.quantile(values.double(), q).tolist()


def test_bootstrap_interval_matches_a_loop_and_brackets_the_miou() -> None:
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 5, (12, 8, 8), generator=g)
    noise = torch.rand(12, 8, 8, generator=g) < torch.linspace(0.05, 0.8, 12)[:, None, None]
    pred = torch.where(noise, torch.randint(0, 5, (12, 8, 8), generator=g), target)
    per = confusion_per_image(pred, target, 5)
    lo, hi = bootstrap_miou_interval(per, level=0.9, resamples=200, seed=3)
    assert [lo, hi] == pytest.approx(_reference_interval(per, 0.9, 200, 3))
    miou = miou_from_confusion(per.sum(0))
    assert lo < miou < hi
    assert bootstrap_miou_interval(per, resamples=200, seed=3) == (lo, hi)  # fixed seed
    lo50, hi50 = bootstrap_miou_interval(per, level=0.5, resamples=200, seed=3)
    assert lo <= lo50 < hi50 <= hi
    # identical images: no spread; no images: no interval
    same = per[:1].expand(6, 5, 5)
    assert bootstrap_miou_interval(same) == pytest.approx((miou_from_confusion(per[0]),) * 2)
    assert all(math.isnan(v) for v in bootstrap_miou_interval(per[:0]))
    with pytest.raises(ValueError, match="level"):
        bootstrap_miou_interval(per, level=1.0)
