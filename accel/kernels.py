"""Exact integer kernels: dense and 2-D convolution on raw fixed-point integers.

Products and sums are exact. When the operand types bound every partial sum
by 2**24 the matrix product runs in float32 BLAS, by 2**53 in float64 BLAS,
which are exact for integers of that size (every partial sum is an integer
the float holds, so no rounding can happen); otherwise it runs in int64,
which is exact below 2**63.
The result is wrapped to the accumulator width, as the RTL does.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from accel.fixed import FixedType, Overflow, Quant, requantize

FLOAT_EXACT = 2**53
FLOAT32_EXACT = 2**24


def _bound(x: FixedType, w: FixedType, fan_in: int, bias_max: int) -> int:
    return fan_in * max(abs(x.min_int), x.max_int) * max(abs(w.min_int), w.max_int) + bias_max


def matmul_exact(
    x: np.ndarray, w: np.ndarray, x_type: FixedType, w_type: FixedType, bias_max: int = 0
) -> np.ndarray:
    """``x @ w`` for int64 arrays, exact; BLAS when the types prove it safe."""
    bound = _bound(x_type, w_type, w.shape[0], bias_max)
    if bound <= FLOAT32_EXACT:
        return (x.astype(np.float32) @ w.astype(np.float32)).astype(np.int64)
    if bound < FLOAT_EXACT:
        return (x.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)
    return x @ w


def finish(acc: np.ndarray, bias: np.ndarray | None, acc_type: FixedType) -> np.ndarray:
    """Add the (aligned) bias and wrap to the accumulator width, as the hardware does."""
    if bias is not None:
        acc = acc + bias
    return requantize(acc, acc_type.frac, Quant(acc_type, overflow=Overflow.WRAP))


def align_bias(bias: np.ndarray, bias_type: FixedType, acc_type: FixedType) -> np.ndarray:
    """Bias raw integers shifted to the accumulator's scale."""
    return np.asarray(bias, dtype=np.int64) << (acc_type.frac - bias_type.frac)


def dense(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    x_type: FixedType,
    w_type: FixedType,
    acc_type: FixedType,
) -> np.ndarray:
    """(N, K) x (K, O) + bias (already aligned) -> (N, O) accumulators."""
    bmax = 0 if bias is None else int(np.abs(bias).max(initial=0))
    return finish(matmul_exact(x, w, x_type, w_type, bmax), bias, acc_type)


def im2col(
    x: np.ndarray, kh: int, kw: int, pads: tuple[int, int, int, int], stride: int
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(N,H,W,C) -> (N*OH*OW, KH*KW*C) patch rows, columns ordered (KH, KW, C) like weights."""
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    win = sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    # win: (N, OH, OW, C, KH, KW)
    n, oh, ow, cin = win.shape[:4]
    return win.transpose(0, 1, 2, 4, 5, 3).reshape(n * oh * ow, kh * kw * cin), (n, oh, ow)


def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    pads: tuple[int, int, int, int],
    stride: int,
    x_type: FixedType,
    w_type: FixedType,
    acc_type: FixedType,
) -> np.ndarray:
    """NHWC convolution by im2col: (N,H,W,C) * (KH,KW,C,O) -> (N,OH,OW,O)."""
    kh, kw, cin, cout = w.shape
    cols, (n, oh, ow) = im2col(x, kh, kw, pads, stride)
    bmax = 0 if bias is None else int(np.abs(bias).max(initial=0))
    acc = matmul_exact(cols, w.reshape(kh * kw * cin, cout), x_type, w_type, bmax)
    return finish(acc, bias, acc_type).reshape(n, oh, ow, cout)
