"""Confusion matrix, IoU conventions and pixel accuracy against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from ssr.metrics import ConfusionMatrix, confusion_matrix, iou_from_confusion

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
