"""Datasets: synthetic scenes, Cityscapes/CamVid folders, transforms, loaders, class weights."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssr.config import ConfigError, DataConfig
from ssr.data import (
    DATASETS,
    DatasetError,
    build_dataset,
    build_loader,
    class_weights,
    dataset_info,
)
from ssr.data import transforms as T
from ssr.data.camvid import CamVid
from ssr.data.cityscapes import CITYSCAPES_CLASSES, ERFNET_WEIGHTS, Cityscapes, label_lut
from ssr.data.synthetic import SyntheticStreets, render_scene

SMALL = DataConfig(height=64, width=128, train_size=8, val_size=4, batch_size=2)

# (name, id, trainId) of cityscapesScripts/helpers/labels.py, ids 0-33 and the license plate.
OFFICIAL_LABELS = [
    ("unlabeled", 0, 255), ("ego vehicle", 1, 255), ("rectification border", 2, 255),
    ("out of roi", 3, 255), ("static", 4, 255), ("dynamic", 5, 255), ("ground", 6, 255),
    ("road", 7, 0), ("sidewalk", 8, 1), ("parking", 9, 255), ("rail track", 10, 255),
    ("building", 11, 2), ("wall", 12, 3), ("fence", 13, 4), ("guard rail", 14, 255),
    ("bridge", 15, 255), ("tunnel", 16, 255), ("pole", 17, 5), ("polegroup", 18, 255),
    ("traffic light", 19, 6), ("traffic sign", 20, 7), ("vegetation", 21, 8),
    ("terrain", 22, 9), ("sky", 23, 10), ("person", 24, 11), ("rider", 25, 12),
    ("car", 26, 13), ("truck", 27, 14), ("bus", 28, 15), ("caravan", 29, 255),
    ("trailer", 30, 255), ("train", 31, 16), ("motorcycle", 32, 17), ("bicycle", 33, 18),
    ("license plate", -1, -1),
]  # fmt: skip


# --------------------------------------------------------------------------------------------
# Registry


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_registry_infos(name: str) -> None:
    info = dataset_info(name)
    assert info.name == name and info.ignore_index == 255
    assert len(info.class_names) == info.num_classes
    assert info.erfnet_weights is None or len(info.erfnet_weights) == info.num_classes


def test_unknown_dataset_lists_registered_names() -> None:
    with pytest.raises(ConfigError, match="registered datasets: camvid, cityscapes, synthetic"):
        build_dataset(dataclasses.replace(SMALL, name="kitti"), "train")


@pytest.mark.parametrize("name", ["cityscapes", "camvid"])
def test_real_datasets_need_a_root(name: str) -> None:
    with pytest.raises(ConfigError, match=r"data\.root"):
        build_dataset(dataclasses.replace(SMALL, name=name), "val")


# --------------------------------------------------------------------------------------------
# Synthetic


@pytest.mark.parametrize("size", [(64, 128), (96, 160), (37, 53)])
def test_synthetic_items(size: tuple[int, int]) -> None:
    ds = SyntheticStreets(*size, size=3, split="train", seed=0)
    assert len(ds) == 3
    for i in range(3):
        image, label = ds[i]
        assert image.dtype == torch.float32 and image.shape == (3, *size)
        assert label.dtype == torch.int64 and label.shape == size
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
        values = set(label.unique().tolist())
        assert values <= set(range(19)) | {255}
    with pytest.raises(IndexError):
        ds[3]


def test_synthetic_is_deterministic_per_seed_split_index() -> None:
    a = render_scene(64, 128, seed=3, split_id=0, index=5)
    b = render_scene(64, 128, seed=3, split_id=0, index=5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    for other in [(4, 0, 5), (3, 1, 5), (3, 0, 6)]:
        c = render_scene(64, 128, *other)
        assert not np.array_equal(a[1], c[1])


def test_synthetic_covers_all_classes_and_some_ignore() -> None:
    ds = SyntheticStreets(64, 128, size=8, seed=0)
    counts = torch.zeros(256, dtype=torch.int64)
    for i in range(len(ds)):
        counts += torch.bincount(ds[i][1].flatten(), minlength=256)
    assert (counts[:19] > 0).all(), f"missing classes {torch.nonzero(counts[:19] == 0).tolist()}"
    assert counts[255] > 0  # the ego-vehicle bonnet is ignored, as in Cityscapes


def test_synthetic_confusable_pairs_share_colour() -> None:
    """Road/sidewalk and vegetation/terrain differ by texture and context, not by colour."""
    sums = torch.zeros(19, 3, dtype=torch.float64)
    counts = torch.zeros(19, dtype=torch.float64)
    for i in range(12):
        image, label = SyntheticStreets(64, 128, size=12, seed=1)[i]
        for c in range(19):
            m = label == c
            sums[c] += image[:, m].double().sum(1)
            counts[c] += m.sum()
    mean = sums / counts.clamp_min(1)[:, None]
    road, sidewalk, vegetation, terrain, car = 0, 1, 8, 9, 13
    assert (mean[road] - mean[sidewalk]).abs().max() < 0.06
    assert (mean[vegetation] - mean[terrain]).abs().max() < 0.06
    assert (mean[road] - mean[car]).abs().max() > 0.06  # but not everything is alike


# --------------------------------------------------------------------------------------------
# Transforms


def _pair(h: int = 8, w: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    label = torch.arange(h * w).reshape(h, w) % 19
    image = torch.stack([label.float() / 255, torch.rand(h, w), torch.rand(h, w)])
    return image, label


def _aligned(image: torch.Tensor, label: torch.Tensor) -> bool:
    keep = label != 255
    return bool(torch.equal((image[0][keep] * 255).round().long(), label[keep]))


def test_hflip_twice_is_identity() -> None:
    image, label = _pair()
    i2, l2 = T.hflip(*T.hflip(image, label))
    assert torch.equal(i2, image) and torch.equal(l2, label)
    i1, l1 = T.hflip(image, label)
    assert torch.equal(l1[:, 0], label[:, -1]) and _aligned(i1, l1)


@pytest.mark.parametrize("dy,dx", [(2, -1), (-2, 2), (0, 1), (1, 0)])
def test_shift_pads_label_with_ignore_and_image_with_zero(dy: int, dx: int) -> None:
    image, label = _pair()
    i2, l2 = T.shift(image, label, dy, dx)
    assert i2.shape == image.shape and l2.shape == label.shape
    h, w = label.shape
    inside = torch.zeros(h, w, dtype=torch.bool)
    inside[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = True
    assert (l2[~inside] == 255).all() and (i2[:, ~inside] == 0).all()
    assert l2[max(dy, 0), max(dx, 0)] == label[max(-dy, 0), max(-dx, 0)]
    assert _aligned(i2, l2)


def test_crop_and_scale() -> None:
    image, label = _pair(8, 12)
    i2, l2 = T.crop(image, label, top=-2, left=6, size=(6, 8))
    assert i2.shape == (3, 6, 8) and l2.shape == (6, 8)
    assert (l2[:2] == 255).all() and (l2[:, 6:] == 255).all()
    assert torch.equal(l2[2:, :6], label[:4, 6:12]) and _aligned(i2, l2)
    i3, l3 = T.scale(image, label, 2.0)
    assert i3.shape == (3, 16, 24) and torch.equal(l3[::2, ::2], label)
    i4, l4 = T.resize(image, label, (4, 6))
    assert i4.shape == (3, 4, 6) and l4.dtype == label.dtype


def test_random_transforms_keep_alignment_and_are_seeded() -> None:
    image, label = _pair(16, 24)
    tf = T.Compose((T.RandomScaleCrop((1.0, 1.0), (12, 20)), T.RandomHFlip(0.5), T.RandomShift(2)))
    outs = []
    for seed in range(6):
        a = tf(image, label, torch.Generator().manual_seed(seed))
        b = tf(image, label, torch.Generator().manual_seed(seed))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert a[1].shape == (12, 20) and _aligned(*a)
        outs.append(a[1])
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_train_transform_from_config() -> None:
    assert T.train_transform(dataclasses.replace(SMALL, augment=False)) is None
    tf = T.train_transform(SMALL)
    assert isinstance(tf.transforms[0], T.RandomHFlip) and tf.transforms[1].max_px == 2
    tf = T.train_transform(dataclasses.replace(SMALL, scale_range=(0.5, 2.0), crop=(32, 64)))
    assert tf.transforms[0] == T.RandomScaleCrop((0.5, 2.0), (32, 64))
    with pytest.raises(ConfigError, match="scale_range"):
        T.train_transform(dataclasses.replace(SMALL, scale_range=(2.0, 0.5)))
    with pytest.raises(ConfigError, match="crop"):
        T.train_transform(dataclasses.replace(SMALL, crop=(32,)))


# --------------------------------------------------------------------------------------------
# Loaders


def _batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loader_is_deterministic_and_keyed_by_epoch() -> None:
    a, b = build_loader(SMALL, "train", seed=7), build_loader(SMALL, "train", seed=7)
    first, again = _batches(a), _batches(b)
    assert len(first) == 4 and first[0][0].shape == (2, 3, 64, 128)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(first, again))
    second = _batches(a)  # the sampler advanced to epoch 1: other order and augmentation
    assert any(not torch.equal(x, y) for (x, _), (y, _) in zip(first, second))
    b.sampler.set_epoch(1)
    replay = _batches(b)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(second, replay))


def test_loader_workers_do_not_change_batches() -> None:
    cfg = dataclasses.replace(SMALL, train_size=4)
    single = _batches(build_loader(cfg, "train", seed=3))
    multi = _batches(build_loader(dataclasses.replace(cfg, num_workers=2), "train", seed=3))
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(single, multi))


def test_loader_split_rules_and_subset() -> None:
    cfg = dataclasses.replace(SMALL, train_size=5, batch_size=2)
    assert len(build_loader(cfg, "train")) == 2  # drop_last
    val = build_loader(cfg, "val")
    assert [len(x) for x, _ in val] == [2, 2]
    ds = build_dataset(cfg, "val")
    assert torch.equal(next(iter(val))[1][0], ds[0][1])  # not shuffled, not augmented
    sub = build_loader(cfg, "val", subset=[3, 1])
    ((_, y),) = list(sub)
    assert torch.equal(y[0], ds[3][1]) and torch.equal(y[1], ds[1][1])
    with pytest.raises(ConfigError, match="out of range"):
        build_loader(cfg, "val", subset=[9])
    with pytest.raises(ConfigError, match="batch_size"):
        build_loader(dataclasses.replace(cfg, batch_size=8), "train")


# --------------------------------------------------------------------------------------------
# Class weights


def test_enet_weights_from_a_known_histogram() -> None:
    from ssr.data import enet_weights

    counts = torch.tensor([50, 30, 20, 0])
    expected = [1 / np.log(1.02 + p) for p in (0.5, 0.3, 0.2, 0.0)]
    assert torch.allclose(enet_weights(counts), torch.tensor(expected, dtype=torch.float32))


def test_class_weight_modes() -> None:
    ds = build_dataset(SMALL, "train")
    enet = class_weights(SMALL, ds)
    assert enet.shape == (19,) and (enet > 1).all()
    assert enet[0] < enet[6]  # road is frequent, traffic lights are rare
    erf = class_weights(dataclasses.replace(SMALL, class_weights="erfnet"), ds)
    assert torch.allclose(erf, torch.tensor(ERFNET_WEIGHTS)) and erf[0] == pytest.approx(2.3654)
    assert torch.equal(
        class_weights(dataclasses.replace(SMALL, class_weights="none"), ds), torch.ones(19)
    )


# --------------------------------------------------------------------------------------------
# Cityscapes


def test_label_table_matches_the_official_list() -> None:
    lut = label_lut()
    for name, label_id, train_id in OFFICIAL_LABELS:
        if label_id >= 0:
            assert lut[label_id] == train_id, name
    assert (lut[34:] == 255).all()
    names = {t: n for n, _, t in OFFICIAL_LABELS if 0 <= t < 255}
    assert tuple(names[t] for t in range(19)) == CITYSCAPES_CLASSES


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_cityscapes(root: Path, h: int = 32, w: int = 64) -> dict[str, np.ndarray]:
    """Two train cities and one val city; labelIds are blocks over every official id 0..34."""
    rng = np.random.default_rng(0)
    ids = np.arange(35, dtype=np.uint8)
    labels = {}
    for split, cities in (("train", ("aachen", "bremen")), ("val", ("frankfurt",))):
        for c, city in enumerate(cities):
            stem = f"{city}_000000_{c:06d}"
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            label = np.repeat(np.repeat(rng.choice(ids, (h // 4, w // 4)), 4, 0), 4, 1)
            _png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)
            _png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label)
            labels[f"{split}/{stem}"] = label
    return labels


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path: Path) -> None:
    labels = make_cityscapes(tmp_path)
    official = {i: t for _, i, t in OFFICIAL_LABELS if i >= 0}
    cfg = DataConfig(
        name="cityscapes", root=str(tmp_path), height=32, width=64, train_size=None, augment=False
    )
    ds = build_dataset(cfg, "train")
    assert len(ds) == 2
    for i, key in enumerate(sorted(k for k in labels if k.startswith("train"))):
        image, label = ds[i]
        assert image.shape == (3, 32, 64) and image.dtype == torch.float32
        expected = np.vectorize(lambda v: official.get(int(v), 255))(labels[key])
        assert np.array_equal(label.numpy(), expected)
    small = Cityscapes(tmp_path, "val", 16, 32, limit=None)
    image, label = small[0]
    assert image.shape == (3, 16, 32) and label.shape == (16, 32)
    assert set(label.unique().tolist()) <= set(range(19)) | {255}


def test_cityscapes_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match=re.escape(str(missing))):
        Cityscapes(missing, "train", 32, 64, None)
    make_cityscapes(tmp_path)
    label = next((tmp_path / "gtFine" / "val").rglob("*.png"))
    label.unlink()
    with pytest.raises(DatasetError, match="has no label") as err:
        Cityscapes(tmp_path, "val", 32, 64, None)
    assert str(label) in str(err.value)
    for img in (tmp_path / "leftImg8bit" / "val").rglob("*.png"):
        img.unlink()
    with pytest.raises(DatasetError, match=r"no \*_leftImg8bit\.png"):
        Cityscapes(tmp_path, "val", 32, 64, None)
    (tmp_path / "gtFine" / "train").rename(tmp_path / "gtFine" / "moved")
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "gtFine" / "train"))):
        Cityscapes(tmp_path, "train", 32, 64, None)


# --------------------------------------------------------------------------------------------
# CamVid


def make_camvid(root: Path, bad: int | None = None) -> None:
    rng = np.random.default_rng(1)
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            label = rng.integers(0, 12, (24, 32), dtype=np.uint8)
            if bad is not None and split == "val" and i == 1:
                label[0, :3] = bad
            _png(root / split / f"0001TP_{i:06d}.png", rng.integers(0, 256, (24, 32, 3), np.uint8))
            _png(root / f"{split}annot" / f"0001TP_{i:06d}.png", label)


def test_camvid_labels(tmp_path: Path) -> None:
    make_camvid(tmp_path)
    cfg = DataConfig(name="camvid", root=str(tmp_path), height=24, width=32, augment=False)
    ds = build_dataset(cfg, "train")
    assert len(ds) == 3
    raw = np.asarray(Image.open(tmp_path / "trainannot" / "0001TP_000000.png"))
    _, label = ds[0]
    assert np.array_equal(label.numpy(), np.where(raw == 11, 255, raw))
    assert dataset_info("camvid").num_classes == 11
    with pytest.raises(ConfigError, match="erfnet"):
        class_weights(dataclasses.replace(cfg, class_weights="erfnet"), ds)


def test_camvid_errors(tmp_path: Path) -> None:
    make_camvid(tmp_path, bad=40)
    ds = CamVid(tmp_path, "val", 24, 32, None)
    ds[0]
    with pytest.raises(DatasetError, match=r"0001TP_000001.png has values \[40\]"):
        ds[1]
    (tmp_path / "valannot" / "0001TP_000000.png").unlink()
    with pytest.raises(DatasetError, match=r"0001TP_000000\.png is missing"):
        CamVid(tmp_path, "val", 24, 32, None)
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "nope"))):
        CamVid(tmp_path / "nope", "val", 24, 32, None)
