"""Joint image/label transforms on tensors (docs/method.md §6, §8.2, §12.13).

Images are float ``[3, H, W]``, labels int64 ``[H, W]`` with 255 = ignore. The pure functions
(:func:`resize`, :func:`hflip`, :func:`shift`, :func:`scale`, :func:`crop`) apply one decided
geometric change to both, so image and label stay aligned: bilinear for images, nearest for labels,
zero padding for images and ignore padding (255) for labels.

The random transforms draw their parameters from a ``torch.Generator`` they are given and nothing
else, so an augmented sample is a pure function of ``(image, label, generator seed)``: the data
loader hands each sample its own seed (see ``ssr.data.KeyedSampler``), which makes augmentation
independent of worker count and exactly reproducible on resume.

The official SSR augmentation (ERFNet's ``MyCoTransform``) is a horizontal flip with p = 0.5 and
a translation of -2..+2 px in x and y, image padded with 0 and label with ignore
(docs/method.md §6).
Random scale + crop is an optional extra (``DataConfig.scale_range`` / ``crop``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssr.config import ConfigError, DataConfig
from ssr.data.labels import IGNORE

Transform = Callable[
    [torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]
]


# --------------------------------------------------------------------------------------------
# Pure, deterministic transforms


def resize(
    image: torch.Tensor, label: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize to ``size=(H, W)``: bilinear (antialiased when shrinking) image, nearest label."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image, label
    shrink = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    img = F.interpolate(
        image[None], size=size, mode="bilinear", align_corners=False, antialias=shrink
    )[0]
    lbl = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0]
    return img, lbl.to(label.dtype)


def hflip(image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror left-right."""
    return image.flip(-1), label.flip(-1)


def _shift2d(x: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """Move content by ``(dy, dx)`` pixels (positive = down/right); exposed border = ``fill``."""
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src_y, dst_y = slice(max(-dy, 0), h - max(dy, 0)), slice(max(dy, 0), h - max(-dy, 0))
    src_x, dst_x = slice(max(-dx, 0), w - max(dx, 0)), slice(max(dx, 0), w - max(-dx, 0))
    out[..., dst_y, dst_x] = x[..., src_y, src_x]
    return out


def shift(
    image: torch.Tensor, label: torch.Tensor, dy: int, dx: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift by ``(dy, dx)`` px, same size: image padded with 0, label with 255.

    The official augmentation's translation (docs/method.md §6).
    """
    return _shift2d(image, dy, dx, 0.0), _shift2d(label, dy, dx, IGNORE)


def scale(
    image: torch.Tensor, label: torch.Tensor, factor: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescale both by ``factor`` (sizes rounded, at least 1 px)."""
    h, w = image.shape[-2:]
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    return resize(image, label, size)


def crop(
    image: torch.Tensor, label: torch.Tensor, top: int, left: int, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop ``size=(H, W)`` at ``(top, left)``; regions outside the input are padded (0 / 255)."""
    ch, cw = size
    h, w = image.shape[-2:]
    img = image.new_zeros((*image.shape[:-2], ch, cw))
    lbl = label.new_full((ch, cw), IGNORE)
    y0, y1 = max(top, 0), min(top + ch, h)
    x0, x1 = max(left, 0), min(left + cw, w)
    if y0 < y1 and x0 < x1:
        img[..., y0 - top : y1 - top, x0 - left : x1 - left] = image[..., y0:y1, x0:x1]
        lbl[y0 - top : y1 - top, x0 - left : x1 - left] = label[y0:y1, x0:x1]
    return img, lbl


# --------------------------------------------------------------------------------------------
# Random transforms: frozen dataclasses (picklable for DataLoader workers)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Integer in ``[lo, hi]`` inclusive."""
    return int(torch.randint(lo, hi + 1, (), generator=g))


@dataclass(frozen=True)
class RandomHFlip:
    """Horizontal flip with probability ``p`` (official: 0.5)."""

    p: float = 0.5

    def __call__(
        self, image: torch.Tensor, label: torch.Tensor, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            hflip(image, label) if float(torch.rand((), generator=g)) < self.p else (image, label)
        )


@dataclass(frozen=True)
class RandomShift:
    """Translation by ``-max_px..+max_px`` in x and y (official: 2), 0 / 255 padding."""

    max_px: int = 2

    def __call__(
        self, image: torch.Tensor, label: torch.Tensor, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dy, dx = _randint(g, -self.max_px, self.max_px), _randint(g, -self.max_px, self.max_px)
        return shift(image, label, dy, dx)


@dataclass(frozen=True)
class RandomScaleCrop:
    """Scale by a factor in ``scale_range``, then a random ``size`` crop (pad 0 / 255)."""

    scale_range: tuple[float, float]
    size: tuple[int, int]

    def __call__(
        self, image: torch.Tensor, label: torch.Tensor, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = scale(image, label, _uniform(g, *self.scale_range))
        h, w = image.shape[-2:]
        top = _randint(g, 0, max(h - self.size[0], 0))
        left = _randint(g, 0, max(w - self.size[1], 0))
        return crop(image, label, top, left, self.size)


@dataclass(frozen=True)
class Compose:
    """Apply transforms in order, all drawing from the same generator."""

    transforms: tuple[Transform, ...]

    def __call__(
        self, image: torch.Tensor, label: torch.Tensor, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        for t in self.transforms:
            image, label = t(image, label, g)
        return image, label


def _pair(values: Sequence[float] | None, name: str, kind: type) -> tuple | None:
    if values is None:
        return None
    if len(values) != 2:
        raise ConfigError(f"data.{name} must have two values, got {list(values)}")
    out = tuple(kind(v) for v in values)
    if min(out) <= 0:
        raise ConfigError(f"data.{name} must be positive, got {list(values)}")
    return out


def train_transform(cfg: DataConfig) -> Compose | None:
    """The training augmentation of ``cfg``: optional scale+crop, then flip and ±2 px shift.

    Returns None when ``cfg.augment`` is false and no scale/crop is configured.
    """
    scale_range = _pair(cfg.scale_range, "scale_range", float)
    size = _pair(cfg.crop, "crop", int)
    if scale_range is not None and scale_range[0] > scale_range[1]:
        raise ConfigError(f"data.scale_range must be [low, high], got {list(scale_range)}")
    steps: list[Transform] = []
    if scale_range is not None or size is not None:
        steps.append(RandomScaleCrop(scale_range or (1.0, 1.0), size or (cfg.height, cfg.width)))
    if cfg.augment:
        steps += [RandomHFlip(0.5), RandomShift(2)]
    return Compose(tuple(steps)) if steps else None
