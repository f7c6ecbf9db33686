"""Synthetic street scenes: the embedded default dataset (no files, no downloads).

Every image is a procedurally generated, perspective-correct street *canyon* labelled with the 19
Cityscapes train classes, generated on the fly and deterministically from
``(seed, split, index)`` (``numpy.random.default_rng([seed, split, index])``). It exists so that
search, retrain and sweeps run anywhere in seconds, and it is built so that a segmentation model
needs *spatial context* to score well, not just per-pixel colour.

Scene model (a pinhole camera at height ``c = 1`` looking down a straight street):

* A horizon row ``hy`` and vanishing point ``vx`` are drawn per image (so absolute position alone
  does not decide a class). A ground pixel ``(x, y)`` below the horizon sits at depth
  ``Z = f c / (y - hy)`` and lateral offset ``X = (x - vx) c / (y - hy)``; lines of constant ``X``
  converge on the vanishing point.
* Ground, by ``X``: **road** in the middle (with dashed white lane markings, also road), a
  **sidewalk** strip on each side and, in some depth segments, a **terrain** verge.
* Each side has a facade plane at ``X = ±a``, split along depth into segments of **building**
  (tall, window grid), **vegetation** (tree line with a bumpy top), **wall** (low) or **fence**
  (low, vertical slats), with a second plane of buildings/vegetation set back behind the low ones.
  Everything above the planes is **sky** (blue or, in some images, overcast grey).
* Objects stand on the ground at ``(X, Z)`` and are projected with the same camera, painted far to
  near: **pole**\\s on the sidewalks carrying **traffic sign**\\s and **traffic light**\\s, trees
  (vegetation), **person**\\s on sidewalks, **car**/**truck**/**bus** in lanes and parked along the
  kerb, a **train** (tram) crossing, **bicycle**\\s (ring wheels) and **motorcycle**\\s, parked or
  ridden by a **rider**.
* Some images have an ego-vehicle bonnet at the bottom labelled 255 (ignore), as in Cityscapes.

Classes that share colour statistics on purpose, so that only texture orientation, shape, position
or context tells them apart:

* road vs sidewalk: identical colour; road texture runs along the street (constant ``X``: stripes
  converging to the vanishing point), sidewalk tiles run across it (constant ``Z``).
* building vs wall: identical colour; windows vs horizontal bricks, tall vs low.
* vegetation vs terrain: identical green; coarse blobs above the ground vs fine grain on it.
* person vs rider: the same clothes palette; a rider is the one sitting on a two-wheeler.
* car vs truck vs bus: the same body palette; they differ by shape and size.
* overcast sky vs building: near-identical grey in some images; the sky is smooth and on top.

Per image the colours are jittered, a global brightness factor (0.7-1.3) and per-channel gains are
applied, and Gaussian pixel noise is added. Generation is vectorised numpy over the whole frame for
the background and over bounding boxes for objects: about 4 ms of CPU time per 128x256 image
(measured on a busy 2-core VM; 512x1024 takes about 16x that).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ssr.data.cityscapes import CITYSCAPES_CLASSES
from ssr.data.labels import IGNORE

_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(11, 19)
_GAP = 254  # a facade segment left open (the ground continues to the plane behind)
_FRONT_KINDS = np.array([BUILDING, BUILDING, VEGETATION, WALL, FENCE, _GAP], dtype=np.uint8)
_BACK_KINDS = np.array([BUILDING, BUILDING, VEGETATION], dtype=np.uint8)

# Base colours (RGB in [0, 1]); pairs that share colour on purpose share a row value.
_BASE = np.array(
    [
        [0.46, 0.42, 0.48],  # road
        [0.46, 0.42, 0.48],  # sidewalk (= road)
        [0.52, 0.48, 0.44],  # building
        [0.52, 0.48, 0.44],  # wall (= building)
        [0.60, 0.55, 0.48],  # fence
        [0.58, 0.58, 0.60],  # pole
        [0.12, 0.12, 0.10],  # traffic light
        [0.85, 0.75, 0.15],  # traffic sign
        [0.28, 0.45, 0.18],  # vegetation
        [0.28, 0.45, 0.18],  # terrain (= vegetation)
        [0.52, 0.68, 0.90],  # sky
        [0.0, 0.0, 0.0],  # person, rider and vehicles get per-instance colours
        [0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0],
        [0.15, 0.15, 0.17],  # motorcycle
        [0.10, 0.10, 0.12],  # bicycle
    ],
    dtype=np.float32,
)
_CLOTHES = np.array(
    [[0.8, 0.1, 0.2], [0.1, 0.2, 0.6], [0.2, 0.2, 0.2], [0.9, 0.8, 0.7], [0.4, 0.6, 0.3]],
    dtype=np.float32,
)
_VEHICLE = np.array(
    [[0.05, 0.1, 0.55], [0.7, 0.1, 0.1], [0.85, 0.85, 0.85], [0.1, 0.1, 0.1], [0.2, 0.4, 0.3]],
    dtype=np.float32,
)
# Background textures per class (row 19 = ignore), on world coordinates (u, v) of the surface:
# grain amplitude, stripe amplitude, stripe frequency along u and along v, blob amplitude. Road
# stripes run along the street (u = X), sidewalk tiles across it (v = Z); wall bricks are
# horizontal (v = height), fence slats vertical (u = depth); building windows are added apart.
_TEX = np.zeros((5, 20), dtype=np.float32)
_TEX[0] = 0.02
for _cls, _row in {
    ROAD: (0.03, 0.05, 9.0, 0.0, 0.0),
    SIDEWALK: (0.03, 0.07, 0.0, 2.5, 0.0),
    WALL: (0.02, 0.08, 0.0, 14.0, 0.0),
    FENCE: (0.02, 0.12, 12.0, 0.0, 0.0),
    VEGETATION: (0.06, 0.0, 0.0, 0.0, 0.14),
    TERRAIN: (0.07, 0.0, 0.0, 0.0, 0.0),
    SKY: (0.005, 0.0, 0.0, 0.0, 0.0),
}.items():
    _TEX[:, _cls] = _row
del _cls, _row
_WINDOW = np.float32(0.16)


class SyntheticStreets(Dataset):
    """Seeded synthetic street scenes with the 19 Cityscapes classes (see the module docstring).

    Items are ``(image float32 [3, H, W] in [0, 1], label int64 [H, W])`` with 255 = ignore.
    """

    def __init__(
        self, height: int, width: int, size: int, split: str = "train", seed: int = 0
    ) -> None:
        if split not in _SPLIT_IDS:
            raise ValueError(f"synthetic split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
        if size < 0:
            raise ValueError(f"synthetic dataset size must be >= 0, got {size}")
        self.height, self.width, self.size, self.split, self.seed = height, width, size, split, seed
        self.class_names = CITYSCAPES_CLASSES
        self._grid: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} synthetic images")
        if self._grid is None:
            self._grid = pixel_grid(self.height, self.width)
        split = _SPLIT_IDS[self.split]
        image, label = render_scene(self.height, self.width, self.seed, split, index, self._grid)
        return torch.from_numpy(image), torch.from_numpy(label.astype(np.int64))


def pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y, x)``, float32 ``[H, W]`` each."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return yy + 0.5, xx + 0.5


def render_scene(
    height: int,
    width: int,
    seed: int,
    split_id: int,
    index: int,
    grid: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One scene as numpy arrays: image float32 ``[3, H, W]`` in [0, 1] and label uint8 ``[H, W]``.

    Deterministic in ``(seed, split_id, index)``; ``grid`` is :func:`pixel_grid`, cached by callers.
    """
    rng = np.random.default_rng([seed, split_id, index])
    scene = _Scene(height, width, rng, grid or pixel_grid(height, width))
    scene.background()
    scene.objects()
    return scene.finish()


class _Scene:
    """Canvas plus camera of one scene; methods paint into ``label`` and ``cidx`` in place.

    ``cidx`` indexes ``colors``: rows 0-18 are the per-image class colours, 19 the lane marks,
    20 the bonnet, and each painted object part appends its own colour.
    """

    def __init__(self, h: int, w: int, rng: np.random.Generator, grid):
        self.h, self.w, self.rng = h, w, rng
        self.hy = h * rng.uniform(0.36, 0.5)  # horizon row
        self.vx = w * rng.uniform(0.35, 0.65)  # vanishing point column
        self.f = h * rng.uniform(0.8, 1.1)  # focal length in pixels (camera height c = 1)
        self.road = rng.uniform(1.3, 2.6)  # road half-width
        self.walk = rng.uniform(1.0, 2.5, size=2)  # sidewalk width (left, right)
        self.verge = np.where(rng.random(2) < 0.6, rng.uniform(0.8, 2.0, size=2), 0.0)
        self.label = np.full((h, w), SKY, dtype=np.uint8)
        jitter = rng.uniform(0.85, 1.15, size=(19, 1)).astype(np.float32)
        for a, b in ((ROAD, SIDEWALK), (BUILDING, WALL), (VEGETATION, TERRAIN)):
            jitter[b] = jitter[a]  # confusable pairs keep identical colours within an image
        palette = _BASE * jitter
        if rng.random() < 0.3:  # overcast: sky as grey as the buildings
            palette[SKY] = palette[BUILDING] * rng.uniform(1.1, 1.35)
        self.palette = palette
        self.colors = [*palette, np.full(3, 0.9, np.float32), np.full(3, 0.08, np.float32)]
        self.cidx: np.ndarray | None = None  # set after the background is labelled
        self.yy, self.xx = grid
        self.u = np.zeros((h, w), dtype=np.float32)  # world texture coordinates of the background
        self.v = np.zeros((h, w), dtype=np.float32)

    # ---------------------------------------------------------------- background (vectorised)
    def background(self) -> None:
        """Ground, verges, facades and sky from the camera model (rows/columns broadcast)."""
        rng, lab = self.rng, self.label
        dy = self.yy[:, :1] - self.hy  # [H, 1]
        dx = self.xx[:1, :] - self.vx  # [1, W]
        ground_row = dy > 0
        inv = np.where(ground_row, 1.0 / np.where(ground_row, dy, 1.0), 0.0).astype(np.float32)
        gx = dx * inv  # [H, W] lateral X of the ground point (0 above the horizon)
        gz = np.broadcast_to(self.f * inv, gx.shape)  # depth Z of the ground point
        ground = np.broadcast_to(ground_row, gx.shape)
        # Ground: road, sidewalks, verges (terrain in some depth segments, else sidewalk).
        edge = (self.road, self.road + self.walk[0], self.road + self.walk[1])
        flat = np.where(np.abs(gx) <= edge[0], np.uint8(ROAD), np.uint8(SIDEWALK))
        lab[:] = np.where(ground, flat, np.uint8(SKY))
        self.u[:], self.v[:] = gx, gz
        split = int(np.clip(round(self.vx), 1, self.w - 1))
        for side, sign, walk_edge in ((0, -1.0, edge[1]), (1, 1.0, edge[2])):
            cols = slice(0, split) if side == 0 else slice(split, self.w)
            a_front = walk_edge + self.verge[side]
            bounds, kinds, heights = self._segments()
            if self.verge[side] > 0:
                sgx = sign * gx[:, cols]
                green = rng.random(len(bounds) + 1) < 0.7
                row_green = green[np.searchsorted(bounds, gz[:, 0])][:, None]  # depth is per row
                on_verge = ground_row & row_green & (sgx > walk_edge) & (sgx <= a_front)
                np.copyto(lab[:, cols], np.uint8(TERRAIN), where=on_verge)
            inv_dx = 1.0 / np.maximum(sign * dx[:, cols], 1e-3)  # [1, w']
            a_back = a_front + rng.uniform(2.0, 5.0)
            self._facade(cols, inv_dx, dy, a_back, *self._segments(back=True))
            self._facade(cols, inv_dx, dy, a_front, bounds, kinds, heights)
        self.cidx = lab.astype(np.int16)
        self.lane_marks(gx, gz[:, 0], ground_row)

    def _segments(self, back: bool = False):
        """Depth segments of one facade: upper bounds, class per segment, height per segment."""
        rng = self.rng
        n = int(rng.integers(3, 8))
        bounds = np.sort(rng.uniform(2.0, 60.0, size=n)).astype(np.float32)
        table = _BACK_KINDS if back else _FRONT_KINDS
        kinds = table[rng.integers(len(table), size=n + 1)]
        low = (kinds == WALL) | (kinds == FENCE)
        heights = np.where(low, rng.uniform(0.6, 1.6, n + 1), rng.uniform(4, 20, n + 1))
        return bounds, kinds, heights.astype(np.float32)

    def _facade(self, cols: slice, inv_dx, dy, a: float, bounds, kinds, heights) -> None:
        """Paint the vertical plane at lateral offset ``a`` on one side (columns ``cols``).

        ``inv_dx`` is ``1 / |x - vx|`` per column ``[1, w']`` and ``dy = y - hy`` per row
        ``[H, 1]``; a pixel on the plane sits at depth ``f a / |dx|`` and height
        ``1 - a dy / |dx|``.
        """
        z = (self.f * a) * inv_dx  # [1, w']
        yw = 1.0 - (a * dy) * inv_dx  # [H, w']
        seg = np.searchsorted(bounds, z[0])
        kind, top = kinds[seg], heights[seg]
        bumps = np.sin(z[0] * 1.7) + 0.5 * np.sin(z[0] * 4.1)
        top = np.where(kind == VEGETATION, top * 0.5 + 1.2 * bumps, top)
        on = (yw >= 0) & (yw <= top) & (kind != _GAP)
        np.copyto(self.label[:, cols], kind, where=on)
        np.copyto(self.u[:, cols], z, where=on)
        np.copyto(self.v[:, cols], yw, where=on)

    def lane_marks(self, gx, gz_row, ground_row) -> None:
        """Dashed white centre line (labelled road, as in Cityscapes); ``gz_row`` is ``[H]``."""
        dash = ground_row[:, 0] & (np.sin(gz_row * 1.05 + self.rng.uniform(0, 6.3)) > 0.0)
        on = dash[:, None] & (np.abs(gx) < 0.12) & (self.label == ROAD)
        self.cidx[on] = 19

    # ---------------------------------------------------------------- objects (bounding boxes)
    def project(self, x: float, z: float, w: float, h: float, y0: float = 0.0):
        """Image box ``(top, bottom, left, right)`` of a world box standing at height ``y0``."""
        s = self.f / z
        return (self.hy + s * (1 - y0 - h), self.hy + s * (1 - y0), self.vx + s * (x - w / 2),
                self.vx + s * (x + w / 2))  # fmt: skip

    def box(self, b, cls: int, rgb, shape: str = "rect", ring: float = 0.0) -> None:
        """Paint a rectangle, ellipse or ring filling the image box ``b`` with colour ``rgb``."""
        t, bt, lf, rt = b
        if bt - t < 0.6 or rt - lf < 0.4:
            return
        # Pixel rows/columns whose centres fall inside, at least one (thin poles stay visible).
        y0, x0 = max(int(np.ceil(t - 0.5)), 0), max(int(np.ceil(lf - 0.5)), 0)
        y1 = min(max(int(np.floor(bt - 0.5)) + 1, y0 + 1), self.h)
        x1 = min(max(int(np.floor(rt - 0.5)) + 1, x0 + 1), self.w)
        if y0 >= y1 or x0 >= x1:
            return
        self.colors.append(np.asarray(rgb, dtype=np.float32))
        color = len(self.colors) - 1
        if shape == "rect":
            self.label[y0:y1, x0:x1] = cls
            self.cidx[y0:y1, x0:x1] = color
            return
        yy, xx = self.yy[y0:y1, x0:x1], self.xx[y0:y1, x0:x1]
        cy, cx = (t + bt) / 2, (lf + rt) / 2
        ry, rx = max((bt - t) / 2, 0.5), max((rt - lf) / 2, 0.5)
        r = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        m = (r <= 1.0) & (r >= ring)
        self.label[y0:y1, x0:x1][m] = cls
        self.cidx[y0:y1, x0:x1][m] = color

    def objects(self) -> None:
        rng = self.rng
        znear = max(self.f / (self.h - self.hy) * 1.3, 4.0)
        items = []  # (depth, painter)
        walk_x = (-(self.road + self.walk[0] * 0.5), self.road + self.walk[1] * 0.5)

        def depth() -> float:
            return float(znear + (45.0 - znear) * rng.random() ** 1.6)

        for _ in range(int(rng.integers(2, 6))):
            side = int(rng.integers(2))
            x = (-1, 1)[side] * (self.road + 0.3)
            items.append((depth(), self.pole, (x, rng.random() < 0.55, rng.random() < 0.5)))
        for _ in range(int(rng.integers(0, 3))):
            items.append((depth(), self.tree, (walk_x[int(rng.integers(2))],)))
        for _ in range(int(rng.integers(1, 6))):
            x = walk_x[int(rng.integers(2))] + rng.uniform(-0.4, 0.4)
            items.append((depth(), self.person, (x, 0.0)))
        for _ in range(int(rng.integers(2, 6))):
            kind = rng.choice([CAR, TRUCK, BUS], p=[0.6, 0.22, 0.18])
            parked = rng.random() < 0.4
            x = (
                (rng.choice([-1, 1]) * (self.road - 1.0))
                if parked
                else rng.uniform(-1, 1) * (self.road - 1.3)
            )
            items.append((depth(), self.vehicle, (x, kind)))
        for _ in range(int(rng.integers(2, 5))):
            kind = MOTORCYCLE if rng.random() < 0.5 else BICYCLE
            ridden = rng.random() < 0.6
            x = rng.uniform(-1, 1) * (self.road - 0.6) if ridden else walk_x[int(rng.integers(2))]
            items.append((depth(), self.two_wheeler, (x, kind, ridden)))
        if rng.random() < 0.45:
            items.append((rng.uniform(12.0, 40.0), self.train, (rng.uniform(-1.0, 1.0),)))
        for z, paint, args in sorted(items, key=lambda it: -it[0]):
            paint(z, *args)
        if rng.random() < 0.3:  # ego-vehicle bonnet: ignore
            rise = self.h * rng.uniform(0.05, 0.12)
            curve = ((self.xx[0] - self.w / 2) / (self.w / 2)) ** 2 * rise * 0.6
            on = self.yy >= self.h - rise + curve
            self.label[on] = IGNORE
            self.cidx[on] = 20

    def pole(self, z, x, sign, light) -> None:
        h = self.rng.uniform(4.0, 6.0)
        self.box(self.project(x, z, 0.15, h), POLE, self.palette[POLE])
        if sign:
            shape = "ellipse" if self.rng.random() < 0.5 else "rect"
            b = self.project(x, z, 0.7, 0.7, y0=self.rng.uniform(2.2, h - 1.0))
            self.box(b, SIGN, self.palette[SIGN] * self.rng.uniform(0.8, 1.2, 3), shape)
        if light:
            b = self.project(x, z, 0.4, 1.0, y0=h - 1.0)
            self.box(b, LIGHT, self.palette[LIGHT])
            t, bt, lf, rt = b
            lamp = self.rng.choice([[0.9, 0.1, 0.1], [0.1, 0.9, 0.2], [0.95, 0.7, 0.1]])
            k = self.rng.integers(3)
            self.box(
                (t + (bt - t) * k / 3, t + (bt - t) * (k + 1) / 3, lf, rt), LIGHT, lamp, "ellipse"
            )

    def tree(self, z, x) -> None:
        h = self.rng.uniform(3.5, 6.0)
        self.box(self.project(x, z, 0.3, h * 0.6), VEGETATION, self.palette[VEGETATION] * 0.6)
        b = self.project(x, z, self.rng.uniform(1.8, 3.0), h * 0.6, y0=h * 0.4)
        self.box(b, VEGETATION, self.palette[VEGETATION], "ellipse")

    def person(self, z, x, y0, cls=PERSON) -> None:
        h = self.rng.uniform(1.5, 1.9)
        clothes = _CLOTHES[self.rng.integers(len(_CLOTHES))] * self.rng.uniform(0.8, 1.1)
        self.box(self.project(x, z, 0.5, h * 0.85, y0=y0), cls, clothes, "ellipse")
        self.box(
            self.project(x, z, 0.25, h * 0.18, y0=y0 + h * 0.82), cls, (0.85, 0.65, 0.5), "ellipse"
        )

    def vehicle(self, z, x, kind) -> None:
        body = _VEHICLE[self.rng.integers(len(_VEHICLE))] * self.rng.uniform(0.85, 1.1)
        w, h = {CAR: (1.8, 0.9), TRUCK: (2.4, 1.4), BUS: (2.6, 3.0)}[kind]
        self.box(self.project(x, z, w, h, y0=0.3), kind, body)
        for wx in (-w * 0.33, w * 0.33):
            self.box(self.project(x + wx, z, 0.45, 0.5), kind, (0.05, 0.05, 0.05), "ellipse")
        if kind == CAR:  # cabin with dark glass
            self.box(self.project(x, z, w * 0.7, 0.6, y0=1.2), CAR, body)
            self.box(self.project(x, z, w * 0.6, 0.4, y0=1.25), CAR, (0.15, 0.2, 0.25))
        elif kind == TRUCK:  # tall cargo box above the cab
            self.box(self.project(x, z, w * 1.05, 2.0, y0=1.7), TRUCK, body * 0.8 + 0.15)
            self.box(self.project(x, z, w * 0.8, 0.35, y0=1.3), TRUCK, (0.15, 0.2, 0.25))
        else:  # bus: large windscreen and a destination board
            self.box(self.project(x, z, w * 0.9, 1.2, y0=1.7), BUS, (0.15, 0.2, 0.25))
            self.box(self.project(x, z, w * 0.6, 0.25, y0=3.0), BUS, (0.9, 0.6, 0.1))

    def two_wheeler(self, z, x, kind, ridden) -> None:
        dark = self.palette[kind]
        for wx in (-0.55, 0.55):
            ring = 0.45 if kind == BICYCLE else 0.0
            self.box(self.project(x + wx, z, 0.65, 0.65), kind, dark, "ellipse", ring=ring)
        if kind == BICYCLE:
            self.box(self.project(x, z, 1.1, 0.08, y0=0.55), kind, dark)
        else:
            self.box(self.project(x, z, 1.2, 0.45, y0=0.35), kind, dark * 2.0 + 0.1, "ellipse")
        if ridden:
            self.person(z, x, 0.55, cls=RIDER)

    def train(self, z, x) -> None:
        """A tram crossing the street: long, with a window band and a pantograph wire."""
        body = np.array([0.85, 0.85, 0.8], dtype=np.float32) * self.rng.uniform(0.8, 1.1)
        w = self.rng.uniform(8.0, 14.0)
        self.box(self.project(x, z, w, 3.2, y0=0.2), TRAIN, body)
        self.box(self.project(x, z, w * 0.95, 0.9, y0=1.8), TRAIN, (0.15, 0.2, 0.25))
        self.box(self.project(x, z, 0.08, 1.2, y0=3.4), TRAIN, (0.2, 0.2, 0.2))

    # ---------------------------------------------------------------- compose
    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Colours + per-class textures (world coordinates) + gain and noise -> image, label."""
        rng, lab, h, w = self.rng, self.label, self.h, self.w
        # NOTE: channel-first throughout, so that every broadcast runs over contiguous rows.
        color = np.take(np.stack(self.colors, axis=1), self.cidx.astype(np.intp), axis=1)
        u, v = self.u, self.v
        cls = np.minimum(lab, 19).astype(np.intp)
        grain = (rng.random((h, w), dtype=np.float32) - 0.5) * 3.4641  # unit variance
        coarse = (rng.random((h // 4 + 1, w // 4 + 1), dtype=np.float32) - 0.5) * 3.4641
        blobs = np.repeat(np.repeat(coarse, 4, 0), 4, 1)[:h, :w]
        a_grain, a_stripe, ku, kv, a_blob = (t[cls] for t in _TEX)
        tex = (a_grain + np.float32(rng.uniform(0.01, 0.04))) * grain  # grain + sensor noise
        tex += a_stripe * np.sin(ku * u + kv * v)
        tex += a_blob * blobs
        windows = (lab == BUILDING) & (np.sin(u * 2.1) > 0.0) & (np.sin(v * 2.1) > 0.3)
        tex -= _WINDOW * windows
        shade = np.where(lab == SKY, 0.85 + 0.3 * self.yy / h, 1.0).astype(np.float32)
        gain = (rng.uniform(0.7, 1.3) * rng.uniform(0.92, 1.08, size=3)).astype(np.float32)
        img = (color * shade + tex) * gain[:, None, None]
        np.clip(img, 0.0, 1.0, out=img)
        return img, lab
