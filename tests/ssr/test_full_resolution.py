"""Evaluation at full label resolution and visible size caps on real datasets (docs/method.md §8.3)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from ssr.config import ConfigError, DataConfig, RetrainConfig, load_config
from ssr.data import build_dataset, build_loader
from ssr.data import cityscapes as cityscapes_mod
from ssr.method.genotype import Genotype
from ssr.method.network import DerivedNet
from ssr.run.retrain import run_retrain
from ssr.train.checkpoint import load_checkpoint
from ssr.train.loop import evaluate
from ssr.train.metrics import ConfusionMatrix
from tests.ssr.test_data import make_cityscapes


def _cfg(root: Path, **kw) -> DataConfig:
    base = dict(name="cityscapes", root=str(root), height=16, width=32, train_size=None,
                val_size=None, batch_size=1, augment=False, class_weights="erfnet")  # fmt: skip
    base.update(kw)
    return DataConfig(**base)


def test_val_labels_at_eval_label_size_and_logits_upsampled_to_them(tmp_path: Path) -> None:
    make_cityscapes(tmp_path, h=32, w=64)  # the "native" size is 32x64
    cfg = _cfg(tmp_path, eval_label_size=(32, 64))
    image, label = build_dataset(cfg, "val")[0]
    assert image.shape == (3, 16, 32) and label.shape == (32, 64)  # input small, labels native
    _, train_label = build_dataset(cfg, "train")[0]
    assert train_label.shape == (16, 32)  # training labels stay at the input size
    native = build_dataset(_cfg(tmp_path, height=32, width=64), "val")[0][1]
    assert torch.equal(label, native)  # exactly the unresized labels

    class Upsampled(torch.nn.Module):  # predicts the native labels at 1/2 resolution
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            ids = native[None, ::2, ::2].clamp(max=18)
            return torch.nn.functional.one_hot(ids, 19).permute(0, 3, 1, 2).float() * 10

    out = evaluate(Upsampled(), build_loader(cfg, "val"), 19, "cpu", progress=False)
    assert 0.5 < out["pixel_acc"] <= 1.0  # scored against 32x64 labels (blocks of 4 survive)


def test_retrain_evaluates_at_full_resolution(tmp_path: Path, monkeypatch) -> None:
    make_cityscapes(tmp_path / "cs", h=32, w=64)
    cfg = RetrainConfig(
        data=_cfg(tmp_path / "cs", batch_size=2, eval_label_size=(32, 64)), epochs=1
    )
    scored: list[tuple[tuple[int, ...], tuple[int, ...]]] = []  # (prediction, label) shapes
    update = ConfusionMatrix.update

    def spy(self: ConfusionMatrix, pred: torch.Tensor, target: torch.Tensor) -> None:
        scored.append((tuple(pred.shape), tuple(target.shape)))
        update(self, pred, target)

    monkeypatch.setattr(ConfusionMatrix, "update", spy)
    geno = Genotype.load("ssr_cityscapes")
    res = run_retrain(cfg, geno, tmp_path / "out", progress=False)
    assert res.epochs_run == 1
    # every scored batch: predictions upsampled to, and compared with, 32x64 labels
    assert scored and all(p[-2:] == t[-2:] == (32, 64) for p, t in scored), scored
    # and the reported score is the network's on the native labels: rebuilt by hand from the
    # 16x32 inputs and the unresized labels (no eval_label_size involved)
    model = DerivedNet(geno, 19)
    model.load_state_dict(load_checkpoint(tmp_path / "out" / "best.pt")["model"])
    inputs = build_dataset(_cfg(tmp_path / "cs"), "val")
    native = build_dataset(_cfg(tmp_path / "cs", height=32, width=64), "val")
    batches = [(inputs[i][0][None], native[i][1][None]) for i in range(len(inputs))]
    ref = evaluate(model, batches, 19, "cpu", progress=False)
    assert res.pixel_acc == pytest.approx(ref["pixel_acc"]) and res.miou == pytest.approx(
        ref["miou"]
    )


def test_a_size_cap_on_a_real_dataset_is_a_warning(tmp_path: Path, caplog) -> None:
    make_cityscapes(tmp_path)
    cityscapes_mod._WARNED.clear()
    with caplog.at_level(logging.WARNING, logger="ssr.data"):
        assert len(build_dataset(_cfg(tmp_path, train_size=1), "train")) == 1
        build_dataset(_cfg(tmp_path, train_size=1), "train")  # once per message
        build_dataset(_cfg(tmp_path), "train")  # no cap: no warning
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert msgs == [
        "cityscapes train: data.train_size=1 uses 1 of 2 images; set data.train_size=null to "
        "use all of them"
    ]


def test_eval_label_size_errors() -> None:
    with pytest.raises(ConfigError, match=r"data\.eval_label_size must be"):
        load_config(RetrainConfig, None, ["data.eval_label_size=[1024]"])
    with pytest.raises(ConfigError, match="eval_label_size is for real datasets"):
        build_dataset(DataConfig(eval_label_size=(32, 64)), "val")
