"""CamVid on real files: the SegNet layout as downloaded, its labels, splits, sizes and aspect.

Two folders, given by environment variables (``.ci/run`` sets them where the machine has
copies; unset, these tests skip and say why):

- ``SSR_CAMVID_ROOT``: a SegNet-layout CamVid with ``train``/``val`` (and their lists), e.g. the
  367 + 101 images at any resolution;
- ``SSR_CAMVID_SAMPLE``: a few pairs at CamVid's native 480x360, as downloaded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ssr.config import DataConfig, OptimConfig, RetrainConfig, SearchConfig, ShrinkConfig
from ssr.data import build_dataset, class_weights, label_counts
from ssr.data.camvid import CAMVID_CLASSES, VOID, CamVid, split_pairs
from ssr.data.cityscapes import DatasetError

ROOT = os.environ.get("SSR_CAMVID_ROOT")
SAMPLE = os.environ.get("SSR_CAMVID_SAMPLE")
needs_root = pytest.mark.skipif(
    not ROOT, reason="SSR_CAMVID_ROOT is unset: no real CamVid (SegNet layout) on this machine"
)
needs_sample = pytest.mark.skipif(
    not SAMPLE, reason="SSR_CAMVID_SAMPLE is unset: no 480x360 CamVid pairs on this machine"
)


def _raw_label(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


def _cfg(root: str, **kw) -> DataConfig:
    base = dict(name="camvid", root=root, height=96, width=128, train_size=None, val_size=None,
                batch_size=2, augment=False)  # fmt: skip
    return DataConfig(**{**base, **kw})


@needs_root
def test_splits_follow_the_lists_and_trainval_is_both() -> None:
    train, val = split_pairs(ROOT, "train"), split_pairs(ROOT, "val")
    listed = [
        line.split()[0].rsplit("/", 1)[1]
        for line in Path(ROOT, "train.txt").read_text().split("\n")
        if line.strip()
    ]
    assert [p.name for p, _ in train] == listed  # the list's order, not the folder's
    assert all(lbl.parent.name == "trainannot" and lbl.name == img.name for img, lbl in train)
    assert [p for p, _ in split_pairs(ROOT, "trainval")] == [p for p, _ in train + val]
    assert len(build_dataset(_cfg(ROOT, train_split="trainval"), "train")) == len(train) + len(val)
    with pytest.raises(DatasetError, match="unknown CamVid split 'testing'"):
        split_pairs(ROOT, "testing")
    if not Path(ROOT, "test").is_dir():
        with pytest.raises(DatasetError, match="test is missing"):
            build_dataset(_cfg(ROOT), "test")


@needs_root
def test_labels_keep_classes_and_void_becomes_ignore() -> None:
    ds = CamVid(ROOT, "train", 180, 240, limit=6)
    for i, (_, lbl_path) in enumerate(ds.pairs):
        raw = _raw_label(lbl_path)
        image, label = ds[i]
        assert (
            image.shape == (3, 180, 240) and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0
        )
        if raw.shape == (180, 240):  # same size: the values map one to one
            want = np.where(raw == VOID, 255, raw)
            assert np.array_equal(label.numpy(), want)
        assert set(torch.unique(label).tolist()) <= set(range(11)) | {255}
    counts = label_counts(build_dataset(_cfg(ROOT, train_size=24), "train"), 11, None)
    assert (counts > 0).sum() >= 9  # a real street scene has most classes
    weights = class_weights(
        _cfg(ROOT, train_size=24), build_dataset(_cfg(ROOT, train_size=24), "train")
    )
    # ENet weighting: rarer classes weigh more (pole vs road)
    p = counts.double() / counts.sum()
    assert torch.allclose(weights, (1 / torch.log(1.02 + p)).float())
    assert weights[CAMVID_CLASSES.index("pole")] > weights[CAMVID_CLASSES.index("road")]


@needs_root
def test_a_size_that_distorts_the_aspect_is_warned_about_with_both_ratios(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="ssr.data.camvid"):
        CamVid(ROOT, "val", 96, 128, limit=1)  # 4:3 like CamVid: no warning
        assert not [r for r in caplog.records if "aspect" in r.getMessage()]
        CamVid(ROOT, "val", 128, 128, limit=1)
    msgs = [r.getMessage() for r in caplog.records if "aspect" in r.getMessage()]
    assert len(msgs) == 1 and "aspect 1.333" in msgs[0] and "aspect 1.000" in msgs[0]
    assert "128x171" in msgs[0]  # the size that keeps the ratio


@needs_sample
@pytest.mark.parametrize("size", [(360, 480), (180, 240)])
def test_native_size_and_its_half_train_and_evaluate(size) -> None:
    from ssr.method.gap import evaluate_images
    from ssr.method.genotype import Genotype
    from ssr.method.network import DerivedNet

    h, w = size
    torch.manual_seed(0)
    ds = CamVid(SAMPLE, "train", h, w, limit=None)
    assert len(ds) >= 2 and ds.aspect == pytest.approx(4 / 3)
    image, label = ds[0]
    assert image.shape == (3, h, w) and label.shape == (h, w)
    net = DerivedNet(Genotype.load("ssr_cityscapes"), 11)
    logits = net(image[None].repeat(2, 1, 1, 1))  # training mode, batch 2
    assert logits.shape == (2, 11, h, w)
    loss = torch.nn.functional.cross_entropy(logits, label[None].repeat(2, 1, 1), ignore_index=255)
    loss.backward()
    assert torch.isfinite(loss)
    # evaluation at the label's native size whatever the input size
    native = CamVid(SAMPLE, "val", h, w, limit=None, label_size=(360, 480))
    mats = evaluate_images(net, [(x[None], y[None]) for x, y in native], 11, torch.device("cpu"))
    assert mats.shape == (len(native), 11, 11) and int(mats.sum()) > 0


@needs_sample
@pytest.mark.slow
def test_the_deploy_form_exports_at_half_native_size(tmp_path) -> None:
    """The FPS path at 180x240 (odd sides at 1/8: 23x30): ONNX equals torch."""
    from ssr.deploy import deploy
    from ssr.deploy.onnx_export import export_onnx
    from ssr.method.genotype import Genotype
    from ssr.method.network import DerivedNet

    net = DerivedNet(Genotype.load("ssr_cityscapes"), 11).eval()
    res = export_onnx(deploy(net), (3, 180, 240), tmp_path / "m.onnx")
    assert res.max_abs_diff < 1e-4


@needs_root
def test_one_search_epoch_and_one_retrain_epoch_on_real_images(tiny_space, tmp_path) -> None:
    from ssr.method.genotype import Genotype
    from ssr.method.search import run_search
    from ssr.run.retrain import run_retrain

    torch.set_num_threads(1)
    data = _cfg(ROOT, height=48, width=64, train_size=8, val_size=4, batch_size=4, augment=True)
    cfg = SearchConfig(space=tiny_space, data=data, epochs=1, bn_recalibration_batches=1,
                       shrink=ShrinkConfig(threshold=0.3))  # fmt: skip
    result = run_search(cfg, tmp_path / "search", progress=False)
    assert result.summary["epochs"] == 1 and 0.0 <= result.summary["derived_miou"] <= 1.0
    genotype = Genotype.load(tmp_path / "search" / "genotype.json")
    rcfg = RetrainConfig(data=_cfg(ROOT, height=60, width=80, train_size=8, val_size=4,
                                   batch_size=4), optim=OptimConfig(lr=5e-3), epochs=1)  # fmt: skip
    res = run_retrain(rcfg, genotype, tmp_path / "retrain", progress=False)
    assert res.class_names == CAMVID_CLASSES and len(res.class_weights) == 11
    assert res.miou_lo <= res.miou <= res.miou_hi and np.isfinite(res.miou)
