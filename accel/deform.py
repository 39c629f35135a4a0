"""Depthwise deformable 3x3 convolution in exact integers (CoDeNet's modified form).

Three modes share one definition, so the reference, the trainer's export and
the engine agree on every detail:

- ``regular``: a depthwise 3x3 convolution with TensorFlow 'same' padding.
- ``square``: one non-negative integer offset ``d`` per output pixel scales the
  3x3 grid (a per-pixel dilation; ``d = 1`` is the regular convolution). Every
  sample is an aligned read, and a buffer of ``2R + 1`` rows holds them all.
- ``bilinear``: the general form, two offsets per tap with ``F`` fraction bits,
  sampled by bilinear interpolation whose integer weights keep the result
  exact (``2F`` more fraction bits, nothing rounded).

Offsets come from a regular 'same' convolution (3x3, or 1x1 for a ninth of the
MACs) of the same input and stride (one offset vector per output pixel),
rounded half up to ``F`` fraction bits and clipped to ``[0, R]`` (square) or
``[-R, R]`` pixels (bilinear).
Output pixel ``(oy, ox)`` is centred on input ``(oy*s - pad_top + 1, ox*s -
pad_left + 1)``; samples outside the image read zero, as torchvision's
``deform_conv2d`` does.
"""

from __future__ import annotations

import numpy as np

from accel.fixed import FixedType, Overflow, Quant, Rounding, requantize
from accel.ir.ops import conv_padding
from accel.kernels import conv2d, finish

MODES = ("regular", "square", "bilinear")
TAPS = 9
BATCH = 128  # samples gathered at a time: bounds the (N, OH, OW, 9, C) temporary


def geometry(h: int, w: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre rows and columns of the output pixels."""
    oh, top, _ = conv_padding(h, 3, stride, "same")
    ow, left, _ = conv_padding(w, 3, stride, "same")
    return np.arange(oh) * stride - top + 1, np.arange(ow) * stride - left + 1


def offset_bounds(mode: str, max_offset: int, frac: int) -> tuple[int, int]:
    """Raw bounds of a quantized offset."""
    hi = max_offset << frac
    return (0, hi) if mode == "square" else (-hi, hi)


def offsets(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    stride: int,
    x_type: FixedType,
    w_type: FixedType,
    acc_type: FixedType,
    mode: str,
    max_offset: int,
    frac: int,
) -> np.ndarray:
    """Quantized offsets (N, OH, OW, K): the offset conv, rounded half up, clipped."""
    k = w.shape[0]
    pads = []
    for size in x.shape[1:3]:
        _, before, after = conv_padding(size, k, stride, "same")
        pads += [before, after]
    acc = conv2d(x, w, bias, tuple(pads), stride, x_type, w_type, acc_type)
    lo, hi = offset_bounds(mode, max_offset, frac)
    q = Quant(FixedType.covering(lo, hi, frac), Rounding.RND, Overflow.SAT)
    return np.clip(requantize(acc, acc_type.frac, q), lo, hi)


def _read(x: np.ndarray, n: np.ndarray, y: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """x[n, y, xx, :] with zeros outside the image; index arrays broadcast together."""
    h, w = x.shape[1:3]
    inside = (y >= 0) & (y < h) & (xx >= 0) & (xx < w)
    v = x[n, np.clip(y, 0, h - 1), np.clip(xx, 0, w - 1)]
    return np.where(inside[..., None], v, 0)


def samples(
    x: np.ndarray, off: np.ndarray | None, stride: int, mode: str, frac: int = 0
) -> np.ndarray:
    """The values each tap multiplies, (N, OH, OW, 9, C); bilinear ones carry 2F more bits."""
    cy, cx = geometry(x.shape[1], x.shape[2], stride)
    ky, kx = np.divmod(np.arange(TAPS), 3)
    ky, kx = ky - 1, kx - 1  # tap position relative to the centre
    n = np.arange(len(x))[:, None, None, None]
    ys = cy[None, :, None, None]
    xs = cx[None, None, :, None]
    if mode == "regular":
        return _read(x, n, ys + ky, xs + kx)
    if mode == "square":
        d = off[..., :1]
        return _read(x, n, ys + ky * d, xs + kx * d)
    one = 1 << frac
    py = ((ys + ky) << frac) + off[..., 0::2]
    px = ((xs + kx) << frac) + off[..., 1::2]
    y0, fy = py >> frac, py & (one - 1)
    x0, fx = px >> frac, px & (one - 1)
    out = 0
    for dy, wy in ((0, one - fy), (1, fy)):
        for dx, wx in ((0, one - fx), (1, fx)):
            out = out + (wy * wx)[..., None] * _read(x, n, y0 + dy, x0 + dx)
    return out


def sample_type(x_type: FixedType, mode: str, frac: int) -> FixedType:
    """The type of a sampled value: the input's, with 2F more fraction bits if bilinear."""
    if mode != "bilinear" or frac == 0:
        return x_type
    s = 2 * frac
    return FixedType.covering(x_type.min_int << s, x_type.max_int << s, x_type.frac + s)


def deform_dw(
    x: np.ndarray,
    off: np.ndarray | None,
    w: np.ndarray,
    bias: np.ndarray | None,
    stride: int,
    acc_type: FixedType,
    mode: str,
    frac: int = 0,
) -> np.ndarray:
    """(N, H, W, C) -> (N, OH, OW, C) accumulators; ``w`` is (3, 3, C), bias aligned."""
    wt = np.asarray(w, dtype=np.int64).reshape(TAPS, -1)
    parts = []
    for i in range(0, len(x), BATCH):
        o = None if off is None else off[i : i + BATCH]
        s = samples(x[i : i + BATCH], o, stride, mode, frac)
        parts.append(np.einsum("nyxtc,tc->nyxc", s, wt))
    cy, cx = geometry(x.shape[1], x.shape[2], stride)
    acc = np.concatenate(parts) if parts else np.zeros((0, len(cy), len(cx), wt.shape[1]))
    return finish(acc.astype(np.int64), bias, acc_type)
