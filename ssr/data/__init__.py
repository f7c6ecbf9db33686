"""Dataset registry: synthetic (embedded default), Cityscapes, CamVid (docs/method.md §6, §8.2).

Every dataset yields ``(image float32 [3, H, W] in [0, 1], label int64 [H, W])`` with 255 =
ignore, at ``DataConfig.height x width`` (no normalisation: the official code feeds
``ToTensor`` output, docs/method.md §6). :func:`build_loader` makes a seeded, deterministic
``DataLoader``: its sampler hands each sample an augmentation seed drawn from a generator keyed
by ``(seed, epoch)``, so a resumed run sees exactly the batches and augmentations of an
uninterrupted one, whatever the number of workers.

Class weights (docs/method.md §4.1, §12.14): ``enet`` computes ``1 / ln(1.02 + p_c)`` from the
label frequencies ``p_c`` of (a sample of) the training set, ``erfnet`` uses ERFNet's Cityscapes
constants, ``none`` gives ones.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ssr.config import ConfigError, DataConfig
from ssr.data.camvid import CAMVID_CLASSES
from ssr.data.cityscapes import (
    CITYSCAPES_CLASSES,
    ERFNET_WEIGHTS,
    DatasetError,
    evenly_spaced,
    warn_once,
)
from ssr.data.labels import IGNORE
from ssr.data.transforms import Transform, train_transform

__all__ = [
    "DATASETS",
    "DatasetError",
    "DatasetInfo",
    "KeyedSampler",
    "SegmentationDataset",
    "build_dataset",
    "build_loader",
    "class_weights",
    "dataset_info",
    "enet_weights",
    "label_counts",
]

log = logging.getLogger(__name__)
Split = Literal["train", "val", "test", "trainval"]
Role = Literal["train", "val"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a metric need to know about a dataset."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    ignore_index: int = IGNORE
    erfnet_weights: tuple[float, ...] | None = None


def _synthetic(cfg: DataConfig, role: Role, split: str) -> Dataset:
    from ssr.data.synthetic import SyntheticStreets

    if split not in ("train", "val"):
        raise ConfigError(f"the synthetic dataset has splits train and val, not {split!r}")
    size = cfg.train_size if role == "train" else cfg.val_size
    if size is None:
        raise ConfigError(f"data.{split}_size must be set for the synthetic dataset (an integer)")
    if cfg.eval_label_size is not None:
        raise ConfigError(
            "data.eval_label_size is for real datasets (cityscapes, camvid); synthetic labels "
            "exist at the input size only"
        )
    return SyntheticStreets(cfg.height, cfg.width, size, split, cfg.seed)


def _require_root(cfg: DataConfig) -> str:
    if not cfg.root:
        raise ConfigError(f"data.root must point to the {cfg.name} folder (data.root=/path/to/it)")
    return cfg.root


def _capped(ds: Dataset, cfg: DataConfig, role: Role, split: str) -> Dataset:
    """Warn (once per message) when ``data.<split>_size`` keeps only part of a real split."""
    total, kept = getattr(ds, "total", None), len(ds)  # type: ignore[arg-type]
    if total is not None and kept < total:
        msg = (
            f"{cfg.name} {split}: data.{role}_size={kept} uses {kept} of {total} images; "
            f"set data.{role}_size=null to use all of them"
        )
        warn_once(log, msg)
    return ds


def _label_size(cfg: DataConfig, role: Role) -> tuple[int, int] | None:
    size = cfg.eval_label_size if role == "val" else None
    return (int(size[0]), int(size[1])) if size else None


def _cityscapes(cfg: DataConfig, role: Role, split: str) -> Dataset:
    from ssr.data.cityscapes import Cityscapes

    if split not in ("train", "val"):
        raise ConfigError(f"cityscapes has labelled splits train and val, not {split!r}")
    limit = cfg.train_size if role == "train" else cfg.val_size
    ds = Cityscapes(_require_root(cfg), split, cfg.height, cfg.width, limit, _label_size(cfg, role))
    return _capped(ds, cfg, role, split)


def _camvid(cfg: DataConfig, role: Role, split: str) -> Dataset:
    from ssr.data.camvid import CamVid

    limit = cfg.train_size if role == "train" else cfg.val_size
    ds = CamVid(_require_root(cfg), split, cfg.height, cfg.width, limit, _label_size(cfg, role))
    return _capped(ds, cfg, role, split)


# name -> builder(cfg, role, split) -> Dataset. Read-only; the infos below describe each entry.
DATASETS: Mapping[str, Callable[[DataConfig, Role, str], Dataset]] = types.MappingProxyType(
    {"synthetic": _synthetic, "cityscapes": _cityscapes, "camvid": _camvid}
)
_INFOS: Mapping[str, DatasetInfo] = types.MappingProxyType(
    {
        "synthetic": DatasetInfo("synthetic", 19, CITYSCAPES_CLASSES, IGNORE, ERFNET_WEIGHTS),
        "cityscapes": DatasetInfo("cityscapes", 19, CITYSCAPES_CLASSES, IGNORE, ERFNET_WEIGHTS),
        "camvid": DatasetInfo("camvid", 11, CAMVID_CLASSES, IGNORE, None),
    }
)


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a registered dataset; ConfigError listing the names if unknown."""
    if name not in DATASETS:
        raise ConfigError(
            f"unknown dataset {name!r}; registered datasets: {', '.join(sorted(DATASETS))}"
        )
    return _INFOS[name]


# --------------------------------------------------------------------------------------------
# Datasets and loaders


def _mix(*keys: int) -> int:
    """A 63-bit seed from integer keys (numpy SeedSequence hashing: stable across platforms)."""
    seq = np.random.SeedSequence([k & 0xFFFFFFFFFFFFFFFF for k in keys])
    return int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1))


class SegmentationDataset(Dataset):
    """A base dataset plus an optional joint transform seeded per sample.

    An item key is either an index (augmentation seed derived from ``(seed, index)``) or an
    ``(index, seed)`` pair as yielded by :class:`KeyedSampler`.
    """

    def __init__(self, base: Dataset, transform: Transform | None, seed: int):
        self.base, self.transform, self.seed = base, transform, seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, aug_seed = key if isinstance(key, tuple) else (key, None)
        image, label = self.base[index]
        if self.transform is not None:
            g = torch.Generator().manual_seed(
                _mix(self.seed, index) if aug_seed is None else aug_seed
            )
            image, label = self.transform(image, label, g)
        return image, label


def build_dataset(cfg: DataConfig, split: Split) -> SegmentationDataset:
    """One split of dataset ``cfg.name``.

    ``train`` and ``val`` are roles: the files of ``cfg.train_split`` (with the configured
    augmentation) and of ``cfg.eval_split`` (unaugmented, labels at ``eval_label_size``).
    ``test`` and ``trainval`` name files directly and are read as evaluation data.
    """
    dataset_info(cfg.name)  # clear error for unknown names
    if split not in ("train", "val", "test", "trainval"):
        raise ConfigError(f"split must be train, val, test or trainval, got {split!r}")
    role: Role = "train" if split == "train" else "val"
    files = {"train": cfg.train_split, "val": cfg.eval_split}.get(split, split)
    base = DATASETS[cfg.name](cfg, role, files)
    transform = train_transform(cfg) if role == "train" else None
    return SegmentationDataset(base, transform, cfg.seed)


class KeyedSampler(Sampler):
    """Yields ``(index, augmentation seed)``, both drawn from a generator keyed by (seed, epoch).

    Each pass uses the current ``epoch`` and then advances it, so a fresh sampler iterated twice
    sees epochs 0 and 1; :meth:`set_epoch` jumps to any epoch (resume). Like
    ``DistributedSampler.set_epoch``, but the default advances by itself.
    """

    def __init__(self, indices: Sequence[int], shuffle: bool, seed: int):
        self.indices, self.shuffle, self.seed, self.epoch = list(indices), shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
        self.epoch += 1
        n = len(self.indices)
        order = torch.randperm(n, generator=g).tolist() if self.shuffle else range(n)
        seeds = torch.randint(0, 2**62, (n,), generator=g).tolist()
        for i, s in zip(order, seeds):
            yield self.indices[i], s


def build_loader(
    cfg: DataConfig,
    split: Split,
    *,
    shuffle: bool | None = None,
    seed: int | None = None,
    subset: int | Sequence[int] | None = None,
    dataset: Dataset | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """A deterministic ``DataLoader`` over ``split`` (or over ``dataset`` when given).

    ``shuffle`` defaults to ``split == 'train'``; training drops the last incomplete batch.
    ``seed`` (default ``cfg.seed``) keys the sampler; call ``loader.sampler.set_epoch(e)`` to
    replay epoch ``e``. ``subset`` keeps the first n items (int) or the given indices (e.g. the
    train-A / train-B halves of docs/method.md §12.2). ``pin_memory`` (set it when the batches
    go to a CUDA device) pins them, so that ``.to(device, non_blocking=True)`` overlaps the
    copy with computation.
    """
    ds = dataset if dataset is not None else build_dataset(cfg, split)
    n = len(ds)  # type: ignore[arg-type]
    if subset is None:
        indices: list[int] = list(range(n))
    elif isinstance(subset, int):
        indices = list(range(min(subset, n)))
    else:
        indices = [int(i) for i in subset]
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise ConfigError(f"subset indices {bad[:5]} out of range for {n} {split} items")
    train = split == "train"
    if train and len(indices) < cfg.batch_size:
        raise ConfigError(
            f"{cfg.name} {split}: {len(indices)} items but data.batch_size={cfg.batch_size}; "
            "training drops incomplete batches, so no batch would be left"
        )
    seed = cfg.seed if seed is None else seed
    sampler = KeyedSampler(indices, train if shuffle is None else shuffle, seed)
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        drop_last=train,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
        pin_memory=pin_memory,
    )


# --------------------------------------------------------------------------------------------
# Class weights


def enet_weights(counts: torch.Tensor, c: float = 1.02) -> torch.Tensor:
    """ENet class weights ``1 / ln(c + p_k)`` from per-class pixel counts (Paszke et al. 2016)."""
    p = counts.double() / counts.sum().clamp_min(1)
    return (1.0 / torch.log(c + p)).float()


def label_counts(dataset: Dataset, num_classes: int, max_images: int | None = 256) -> torch.Tensor:
    """Per-class pixel counts over up to ``max_images`` evenly spaced, unaugmented items."""
    base = dataset.base if isinstance(dataset, SegmentationDataset) else dataset
    counts = torch.zeros(num_classes, dtype=torch.int64)
    for i in evenly_spaced(len(base), max_images):  # type: ignore[arg-type]
        label = base[i][1].flatten()
        label = label[(label >= 0) & (label < num_classes)]
        counts += torch.bincount(label, minlength=num_classes)
    return counts


def class_weights(
    cfg: DataConfig, dataset: Dataset, *, max_images: int | None = 256
) -> torch.Tensor:
    """Loss weights per class as set by ``cfg.class_weights`` (docs/method.md §4.1, §12.14)."""
    info = dataset_info(cfg.name)
    if cfg.class_weights == "none":
        return torch.ones(info.num_classes)
    if cfg.class_weights == "erfnet":
        if info.erfnet_weights is None:
            raise ConfigError(
                f"data.class_weights=erfnet has constants only for Cityscapes classes; "
                f"use 'enet' or 'none' for {cfg.name}"
            )
        return torch.tensor(info.erfnet_weights, dtype=torch.float32)
    counts = label_counts(dataset, info.num_classes, max_images)
    if counts.sum() == 0:
        raise DatasetError(f"{cfg.name}: the sampled training labels contain no labelled pixel")
    return enet_weights(counts)
