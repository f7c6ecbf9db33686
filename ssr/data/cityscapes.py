"""Cityscapes fine annotations in the official folder layout (docs/method.md §6, §8.2, §12.14).

Expected layout (as downloaded from cityscapes-dataset.com, ``leftImg8bit_trainvaltest.zip`` and
``gtFine_trainvaltest.zip`` unpacked into one folder)::

    root/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    root/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Labels are read from ``*_gtFine_labelIds.png`` and mapped to the 19 train ids with the official
table of cityscapesScripts (``cityscapesscripts/helpers/labels.py``); every other id (void,
parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer, license plate and
the newer lane-line ids 34-45) becomes 255 = ignore. The official SSR code instead remaps 255 to a
20th class with weight 0 (docs/method.md §4.1); ignoring it is equivalent and keeps 19 outputs.

Images are resized with Pillow to the configured size, bilinear for images and nearest for labels,
as the official code does (docs/method.md §6: whole image resized to 512x1024, no crop).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ssr.config import ConfigError

log = logging.getLogger(__name__)

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

# Official labelId -> trainId (cityscapesScripts labels.py, ids 0-33); everything else -> 255.
ID_TO_TRAINID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

# ERFNet's encoder class weights for train ids 0-18 (docs/method.md §4.1; class 19 = ignore:
# weight 0).
ERFNET_WEIGHTS: tuple[float, ...] = (
    2.3654, 4.4238, 2.9691, 5.3442, 5.2984, 5.2275, 5.4394, 5.3660, 3.4170, 5.2415,
    4.7376, 5.2286, 5.4551, 4.3019, 5.4264, 5.4332, 5.4338, 5.4631, 5.3947,
)  # fmt: skip

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
LAYOUT = (
    "expected root/leftImg8bit/{split}/<city>/*_leftImg8bit.png and "
    "root/gtFine/{split}/<city>/*_gtFine_labelIds.png (the official Cityscapes layout)"
)


class DatasetError(ConfigError):
    """A dataset folder is missing, empty or malformed; the message names the path."""


def label_lut() -> np.ndarray:
    """256-entry lookup table labelId -> trainId (255 for ids outside the 19 classes)."""
    lut = np.full(256, 255, dtype=np.uint8)
    for label_id, train_id in ID_TO_TRAINID.items():
        lut[label_id] = train_id
    return lut


def _require_pillow():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow comes with matplotlib
        raise ImportError(
            "reading Cityscapes/CamVid PNGs needs Pillow: pip install pillow"
        ) from exc
    return Image


def load_pair(
    image_path: Path,
    label_path: Path,
    size: tuple[int, int],
    label_size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read one image/label pair resized to ``size=(H, W)`` as uint8 numpy arrays.

    ``label_size`` reads the label at another size (full-resolution evaluation, §8.3).
    """
    image_mod = _require_pillow()
    h, w = size
    with image_mod.open(image_path) as im:
        im = im.convert("RGB")
        if im.size != (w, h):
            im = im.resize((w, h), image_mod.Resampling.BILINEAR)
        image = np.asarray(im, dtype=np.uint8)
    h, w = label_size or size
    with image_mod.open(label_path) as lb:
        if lb.mode not in ("L", "P", "I", "I;16"):
            raise DatasetError(f"label {label_path} has mode {lb.mode}; expected one channel")
        if lb.size != (w, h):
            lb = lb.resize((w, h), image_mod.Resampling.NEAREST)
        label = np.asarray(lb)
    return image, label


def to_tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 HWC image and integer label -> float32 [3, H, W] in [0, 1] and int64 [H, W]."""
    img = torch.from_numpy(image.copy()).permute(2, 0, 1).float().div_(255.0)
    return img.contiguous(), torch.from_numpy(label.astype(np.int64))


_WARNED: set[tuple[str, str]] = set()


def warn_once(logger: logging.Logger, message: str) -> None:
    """Log ``message`` as a warning the first time it is seen in this process (a dataset is
    built once per phase and per worker: the same cap or distortion is said once)."""
    if (logger.name, message) not in _WARNED:
        _WARNED.add((logger.name, message))
        logger.warning("%s", message)


def evenly_spaced(n: int, cap: int | None) -> list[int]:
    """``cap`` indices spread over ``range(n)`` (all of them when cap is None or >= n)."""
    if cap is None or cap >= n:
        return list(range(n))
    return sorted({round(float(i)) for i in np.linspace(0, n - 1, cap)})


class Cityscapes(Dataset):
    """Cityscapes fine ``train``/``val`` pairs, resized to ``(height, width)``.

    ``limit`` keeps that many pairs, evenly spread over the sorted list (``DataConfig.train_size``
    / ``val_size``; ``total`` is the count before it). ``label_size`` reads labels at another
    size. Raises :class:`DatasetError` for a missing root or split folder, a split without
    images, or an image without its label.
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
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DatasetError(f"Cityscapes root {root} does not exist; {LAYOUT}")
        img_dir, lbl_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        for d in (img_dir, lbl_dir):
            if not d.is_dir():
                raise DatasetError(f"Cityscapes folder {d} is missing; {LAYOUT}")
        images = sorted(img_dir.glob(f"*/*{IMAGE_SUFFIX}"))
        if not images:
            raise DatasetError(f"no *{IMAGE_SUFFIX} files under {img_dir}/<city>/; {LAYOUT}")
        pairs = []
        for img in images:
            city = img.parent.name
            lbl = lbl_dir / city / (img.name[: -len(IMAGE_SUFFIX)] + LABEL_SUFFIX)
            if not lbl.is_file():
                raise DatasetError(f"image {img} has no label: {lbl} is missing; {LAYOUT}")
            pairs.append((img, lbl))
        self.total = len(pairs)
        self.pairs = [pairs[i] for i in evenly_spaced(len(pairs), limit)]
        self.size = (height, width)
        self.label_size = label_size
        self.lut = label_lut()
        self.class_names = CITYSCAPES_CLASSES

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        img_path, lbl_path = self.pairs[index]
        image, label = load_pair(img_path, lbl_path, self.size, self.label_size)
        if label.max(initial=0) > 255 or label.min(initial=0) < 0:
            raise DatasetError(f"label {lbl_path} has ids outside 0..255; is it a labelIds PNG?")
        return to_tensors(image, self.lut[label.astype(np.int64)])
