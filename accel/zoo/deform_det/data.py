"""Seeded synthetic detection images and their CenterNet targets (numpy only).

An image is 32x32 grey (``(32, 32, 1)`` floats in ``[0, 1)``, multiples of
2^-8, which the input type ``ap_ufixed<8,0>`` holds exactly) on a cluttered
background: a random grey level, a
smooth gradient, pixel noise, 1-3 thin random lines and 1-3 soft blobs. On it
1-3 objects of ``CLASSES`` (filled square, disc, triangle, cross), each 5..14
px wide and high (aspect up to 4:3), drawn 4x supersampled (anti-aliased) in
a grey level that stands out from the local background by 0.25..0.5.
Objects overlap little (under 15 % of the smaller box) and no two share a centre
cell of the stride-4 output grid.

Boxes are ``(class, x0, y0, x1, y1)`` in pixels (x right, y down, the image
spans ``[0, 32]``), the exact extent of the drawn shape's bounding box.

CenterNet targets at output stride 4 (an 8x8 grid; cell ``(i, j)`` covers
pixels ``[4j, 4j+4) x [4i, 4i+4)``): per class a heatmap with a Gaussian
peak of 1 at the cell holding each object's centre ``c = centre / 4``
(sigma from the box size), the box size ``(w, h) / 4`` and the centre offset
``c - floor(c)`` (in ``[0, 1)``) at that cell, and a mask of the centre cells.
Everything is deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np

from accel.errors import AccelError

SIZE = 32  # image side, pixels
STRIDE = 4  # output stride of the detector
GRID = SIZE // STRIDE  # 8x8 output grid
CLASSES = ("square", "disc", "triangle", "cross")
N_CLASSES = len(CLASSES)
MAX_OBJECTS = 3
MIN_SIDE, MAX_SIDE = 5.0, 14.0
SUPER = 4  # supersampling factor of the rasterizer
TRAIN_SEED, TEST_SEED = 20240601, 987654321
N_TEST = 1000


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Supersample centres (y, x) in pixel coordinates, shape (SIZE*n, SIZE*n)."""
    c = (np.arange(SIZE * n) + 0.5) / n
    return np.meshgrid(c, c, indexing="ij")


_YS, _XS = _grid(SUPER)


def _shape_mask(cls: int, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Coverage (0..1) of a shape filling the box, per pixel, by 4x4 supersampling."""
    w, h = x1 - x0, y1 - y0
    u = (_XS - x0) / w  # 0..1 across the box
    v = (_YS - y0) / h
    inside = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
    if cls == 0:  # filled square (rectangle)
        m = inside
    elif cls == 1:  # disc (ellipse)
        m = (u - 0.5) ** 2 + (v - 0.5) ** 2 < 0.25
    elif cls == 2:  # triangle, apex up
        m = inside & (np.abs(u - 0.5) <= 0.5 * v)
    else:  # cross: two bars a third of the side thick
        m = inside & ((np.abs(u - 0.5) < 1 / 6) | (np.abs(v - 0.5) < 1 / 6))
    return m.reshape(SIZE, SUPER, SIZE, SUPER).mean(axis=(1, 3))


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection of two boxes over the smaller one's area."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def _background(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5
    img = (
        rng.uniform(0.15, 0.55)
        + rng.uniform(-0.1, 0.1)
        * (np.cos(rng.uniform(0, 2 * np.pi)) * xx + np.sin(rng.uniform(0, 2 * np.pi)) * yy)
        / SIZE
    )
    for _ in range(rng.integers(1, 4)):  # thin lines: distance to a random line < 0.6 px
        a = rng.uniform(0, np.pi)
        px, py = rng.uniform(0, SIZE, 2)
        dist = np.abs((xx - px) * np.sin(a) - (yy - py) * np.cos(a))
        img += rng.uniform(-0.25, 0.25) * np.clip(1.2 - dist, 0, 1)
    for _ in range(rng.integers(1, 4)):  # soft blobs
        bx, by = rng.uniform(0, SIZE, 2)
        r = rng.uniform(1.5, 4.0)
        img += rng.uniform(-0.25, 0.25) * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * r * r))
    return img + rng.normal(0, rng.uniform(0.02, 0.08), img.shape)


def _place(rng: np.random.Generator, boxes: list[np.ndarray]) -> np.ndarray | None:
    """A box (x0, y0, x1, y1) inside the image, apart from ``boxes``; None after 50 tries."""
    for _ in range(50):
        side = rng.uniform(MIN_SIDE, MAX_SIDE)
        aspect = np.exp(rng.uniform(-np.log(4 / 3), np.log(4 / 3)))
        w = float(np.clip(side * np.sqrt(aspect), MIN_SIDE, MAX_SIDE))
        h = float(np.clip(side / np.sqrt(aspect), MIN_SIDE, MAX_SIDE))
        x0, y0 = rng.uniform(0, SIZE - w), rng.uniform(0, SIZE - h)
        box = np.array([x0, y0, x0 + w, y0 + h])
        cell = np.floor((box[:2] + box[2:]) / 2 / STRIDE)
        if all(
            _overlap(box, b) < 0.15 and np.any(np.floor((b[:2] + b[2:]) / 2 / STRIDE) != cell)
            for b in boxes
        ):
            return box
    return None


def make_images(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` images with their objects.

    Returns ``images`` (n, 32, 32, 1) float64 in [0, 255/256], ``boxes``
    (n, MAX_OBJECTS, 4) float64 (x0, y0, x1, y1; unused rows 0), ``classes``
    (n, MAX_OBJECTS) int64 (-1 for unused rows) and ``count`` (n,) int64.
    """
    if n < 0:
        raise AccelError(f"number of images must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    images = np.zeros((n, SIZE, SIZE, 1))
    boxes = np.zeros((n, MAX_OBJECTS, 4))
    classes = np.full((n, MAX_OBJECTS), -1, dtype=np.int64)
    count = np.zeros(n, dtype=np.int64)
    for i in range(n):
        img = _background(rng)
        placed: list[np.ndarray] = []
        for _ in range(rng.integers(1, MAX_OBJECTS + 1)):
            box = _place(rng, placed)
            if box is None:
                continue
            cls = int(rng.integers(N_CLASSES))
            cover = _shape_mask(cls, *box)
            x0, y0, x1, y1 = (int(v) for v in np.floor(box).clip(0, SIZE - 1))
            local = img[y0 : y1 + 1, x0 : x1 + 1].mean()
            sign = 1.0 if local < 0.5 else -1.0
            level = np.clip(local + sign * rng.uniform(0.25, 0.5), 0.0, 1.0)
            tex = level + rng.normal(0, 0.02, img.shape)
            img = img * (1 - cover) + tex * cover
            k = len(placed)
            boxes[i, k], classes[i, k] = box, cls
            placed.append(box)
        count[i] = len(placed)
        images[i, :, :, 0] = img
    images = np.clip(np.round(images * 256) / 256, 0.0, 255 / 256)
    return {"images": images, "boxes": boxes, "classes": classes, "count": count}


def make_inputs(n: int, seed: int) -> np.ndarray:
    """Just the float images (n, 32, 32, 1), as ``accel predict`` takes them."""
    return make_images(n, seed)["images"]


def sigma(w: float, h: float) -> float:
    """Heatmap Gaussian sigma in grid cells for a box of w x h pixels."""
    return max(0.5, (w + h) / 2 / STRIDE / 3)


def targets(boxes: np.ndarray, classes: np.ndarray) -> dict[str, np.ndarray]:
    """CenterNet targets on the 8x8 grid for ``make_images``' boxes and classes.

    ``heatmap`` (n, 8, 8, K) in [0, 1] (exactly 1 at centre cells), ``size``
    (n, 8, 8, 2) as (w, h) / 4, ``offset`` (n, 8, 8, 2) as (x, y) centre / 4
    minus its cell, ``mask`` (n, 8, 8) bool at the centre cells.
    """
    n = len(boxes)
    heat = np.zeros((n, GRID, GRID, N_CLASSES))
    size = np.zeros((n, GRID, GRID, 2))
    offset = np.zeros((n, GRID, GRID, 2))
    mask = np.zeros((n, GRID, GRID), dtype=bool)
    ii, jj = np.mgrid[0:GRID, 0:GRID]
    for i in range(n):
        for box, cls in zip(boxes[i], classes[i], strict=True):
            if cls < 0:
                continue
            c = (box[:2] + box[2:]) / 2 / STRIDE  # (x, y) in cells
            cj, ci = (int(v) for v in np.floor(c))
            s = sigma(box[2] - box[0], box[3] - box[1])
            g = np.exp(-((ii - ci) ** 2 + (jj - cj) ** 2) / (2 * s * s))
            heat[i, :, :, cls] = np.maximum(heat[i, :, :, cls], g)
            size[i, ci, cj] = (box[2:] - box[:2]) / STRIDE
            offset[i, ci, cj] = c - (cj, ci)
            mask[i, ci, cj] = True
    return {"heatmap": heat, "size": size, "offset": offset, "mask": mask}
