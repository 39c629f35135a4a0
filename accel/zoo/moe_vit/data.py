"""Seeded synthetic multi-task scenes: 32x32 grey images, per-pixel class and depth (numpy).

A scene is a background plane plus 1-3 shapes (``CLASSES``: disc, square,
triangle), painted far to near (nearer shapes occlude farther ones). Each
pixel has two targets, one per task:

- ``seg``: the class of the shape covering the pixel centre, 0 for the
  background (4 classes);
- ``depth``: a depth-like distance in the generator's units. The background
  is a tilted plane, ``4 + gx (x - 16) / 16 + gy (y - 16) / 16`` with ``gx, gy``
  in [-0.6, 0.6] (so 2.8..5.2); each shape is flat at its own depth ``z`` in
  [1, 3].

The intensity is only partly informative about depth, so the depth task
needs context: a shape's grey level is ``0.95 - 0.2 z`` plus a uniform offset
in +-0.15 and a stripe texture (amplitude up to 0.08), while its size
follows perspective (half-size ``9 / z`` px, times 0.8..1.2); the background's
grey level follows its plane only weakly (``0.1 x`` the slope, plus a random
base level). Gaussian pixel noise (sigma 0.03) on top. Images are ``(32, 32,
1)`` floats in ``[0, 1)``, multiples of 2^-8 (what ``ap_ufixed<8,0>`` holds).
Everything is deterministic for a given seed; the training and held-out
splits use different seeds.
"""

from __future__ import annotations

import numpy as np

from accel.errors import AccelError

SIZE = 32
CLASSES = ("background", "disc", "square", "triangle")
N_CLASSES = len(CLASSES)
TASKS = ("seg", "depth")
MAX_SHAPES = 3
Z_NEAR, Z_FAR = 1.0, 3.0  # shape depths
BG_DEPTH, BG_TILT = 4.0, 0.6
TRAIN_SEED, TEST_SEED = 20261201, 424242
N_TEST = 500

_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5


def _shape(cls: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Mask of pixel centres inside a shape of half-size ``r`` centred at (cx, cy)."""
    dx, dy = _XX - cx, _YY - cy
    if cls == 1:  # disc
        return dx * dx + dy * dy < r * r
    if cls == 2:  # square
        return (np.abs(dx) < r) & (np.abs(dy) < r)
    # triangle, apex up: |dx| grows from 0 at the top (dy = -r) to r at the base (dy = r)
    return (dy >= -r) & (dy < r) & (np.abs(dx) <= (dy + r) / 2)


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gx, gy = rng.uniform(-BG_TILT, BG_TILT, 2)
    depth = BG_DEPTH + gx * (_XX - 16) / 16 + gy * (_YY - 16) / 16
    img = rng.uniform(0.25, 0.55) - 0.1 * (depth - BG_DEPTH)
    img = img + rng.uniform(-0.05, 0.05) * np.sin(_XX * rng.uniform(0.1, 0.5))
    seg = np.zeros((SIZE, SIZE), np.int64)
    n = int(rng.integers(1, MAX_SHAPES + 1))
    zs = np.sort(rng.uniform(Z_NEAR, Z_FAR, n))[::-1]  # far to near
    for z in zs:
        cls = int(rng.integers(1, N_CLASSES))
        r = 9.0 / z * rng.uniform(0.8, 1.2)
        cx, cy = rng.uniform(4, SIZE - 4, 2)
        m = _shape(cls, cx, cy, r)
        angle = rng.uniform(0, np.pi)
        freq = rng.uniform(0.5, 1.5)
        stripes = np.sin((_XX * np.cos(angle) + _YY * np.sin(angle)) * freq)
        level = 0.95 - 0.2 * z + rng.uniform(-0.15, 0.15)
        tex = level + rng.uniform(0, 0.08) * stripes
        img = np.where(m, tex, img)
        seg = np.where(m, cls, seg)
        depth = np.where(m, z, depth)
    img = img + rng.normal(0, 0.03, img.shape)
    img = np.clip(np.floor(img * 256 + 0.5), 0, 255) / 256
    return img, seg, depth


def make_scenes(n: int, seed: int) -> dict[str, np.ndarray]:
    """``images`` (n, 32, 32, 1) in [0, 1), ``seg`` (n, 32, 32) ints, ``depth`` (n, 32, 32)."""
    if n < 0:
        raise AccelError(f"number of scenes must be non-negative, got {n}")
    rng = np.random.default_rng(seed)
    images = np.zeros((n, SIZE, SIZE, 1))
    seg = np.zeros((n, SIZE, SIZE), np.int64)
    depth = np.zeros((n, SIZE, SIZE))
    for i in range(n):
        images[i, ..., 0], seg[i], depth[i] = _scene(rng)
    return {"images": images, "seg": seg, "depth": depth}


def make_inputs(n: int, seed: int) -> np.ndarray:
    """Seeded images (n, 32, 32, 1) in [0, 1), as ``accel predict`` takes them."""
    return make_scenes(n, seed)["images"]


def training_set(n: int) -> dict[str, np.ndarray]:
    return make_scenes(n, TRAIN_SEED)


def test_set(n: int = N_TEST) -> dict[str, np.ndarray]:
    return make_scenes(n, TEST_SEED)
