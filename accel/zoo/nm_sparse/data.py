"""scikit-learn's handwritten digits (8x8, 16 grey levels), split with a fixed seed.

The 1,797 images ship inside scikit-learn (``load_digits``: nothing is
downloaded). Pixels are integers 0..16; the networks see ``pixel / 16``, which
the input type ``ap_ufixed<8,1>`` holds exactly. The split is stratified and
made here with numpy (not sklearn's splitters, whose draws may change between
versions): per class, a ``SPLIT_SEED`` permutation puts the first quarter in the
held-out test set.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from accel.errors import AccelError

SPLIT_SEED = 2024
TEST_FRACTION = 0.25
N_CLASSES = 10


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise AccelError("the digits data needs scikit-learn (pip install scikit-learn)") from None
    d = load_digits()
    pixels = np.asarray(d.images, dtype=np.int64)  # (1797, 8, 8), 0..16
    return pixels, np.asarray(d.target, dtype=np.int64)


@lru_cache(maxsize=1)
def _split() -> tuple[np.ndarray, np.ndarray]:
    _, labels = _digits()
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for c in range(N_CLASSES):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = round(TEST_FRACTION * len(idx))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def images(x_pixels: np.ndarray, net: str) -> np.ndarray:
    """Real-valued network inputs ``pixel / 16``: (n, 64) for the MLP, (n, 8, 8, 1) for the CNN."""
    x = np.asarray(x_pixels, dtype=np.float64) / 16.0
    return x.reshape(len(x), 64) if net == "mlp" else x.reshape(len(x), 8, 8, 1)


def load(split: str, net: str = "mlp") -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels) of the ``"train"`` or ``"test"`` split, inputs shaped for ``net``."""
    if split not in ("train", "test"):
        raise AccelError(f"split must be 'train' or 'test', got {split!r}")
    pixels, labels = _digits()
    idx = _split()[split == "test"]
    return images(pixels[idx], net), labels[idx]


def make_inputs(n: int, seed: int, net: str = "mlp") -> np.ndarray:
    """``n`` held-out test images drawn with a seed (with replacement when n > the test set)."""
    if n < 0:
        raise AccelError(f"number of samples must be >= 0, got {n}")
    x, _ = load("test", net)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))[:n] if n <= len(x) else rng.integers(0, len(x), n)
    return x[idx]
