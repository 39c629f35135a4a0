"""The importer's values: constants, and lazy layout views of accel tensors.

ONNX moves data around with Transpose, Reshape, Pad and Gather; accel computes on
(H, W, C) tensors. A :class:`View` records, for every element of an ONNX tensor
(batch axis excluded), which flat element of an accel tensor it reads (-1 reads
zero). Layout ops only rewrite that index array; a gather or reshape node is
emitted once a compute op needs the data in its own order. Elementwise ops
(Relu, Quant) act on the viewed tensor, which is exact because they map 0 to 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accel.errors import AccelError
from accel.fixed import MAX_WIDTH, FixedType
from accel.ir.graph import Param
from accel.qonnx.common import QONNX_ROUNDING


@dataclass
class Const:
    """A constant: exact real values; ``type`` when a Quant declared its fixed-point type."""

    value: np.ndarray
    type: FixedType | None = None

    def param(self, what: str, frac_offset: int = 0) -> Param:
        """As raw integers; plain floats get the narrowest exact fixed-point type."""
        v = np.asarray(self.value)
        if v.dtype.kind in "iub":
            v = v.astype(np.float64)
        if v.dtype.kind != "f" or not np.all(np.isfinite(v)):
            raise AccelError(f"{what} is not a finite numeric constant")
        v = v.astype(np.float64)
        if self.type is not None:
            t = self.type
        else:
            frac = next((f for f in range(MAX_WIDTH) if _integral(np.ldexp(v, f))), None)
            if frac is None:
                raise AccelError(f"{what} is not a fixed-point value; quantize it with a Quant")
            raw = np.ldexp(v, frac)
            t = FixedType.covering(int(raw.min(initial=0)), int(raw.max(initial=0)), frac)
        raw = np.ldexp(v, t.frac)
        if not _integral(raw):
            raise AccelError(f"{what} values are not multiples of 2**-{t.frac}")
        return Param(raw.astype(np.int64), FixedType(t.width, t.frac + frac_offset, t.signed))


def _integral(x: np.ndarray) -> bool:
    return bool(np.all(x == np.round(x)) and np.abs(x).max(initial=0) < 2.0**MAX_WIDTH)


def quantize_const(
    x: np.ndarray, scale: np.ndarray, bits: int, signed: bool, narrow: bool, mode: str
) -> np.ndarray:
    """qonnx's Quant of a constant, computed the way qonnx computes it (float32), as raw ints."""
    if mode not in QONNX_ROUNDING:
        raise AccelError(f"unknown rounding_mode {mode!r}")
    y = np.asarray(x, dtype=np.float32) / np.asarray(scale, dtype=np.float32)
    if bits == 1 and signed:  # qonnx treats a signed 1-bit Quant as bipolar
        return np.where(y >= 0, 1, -1).astype(np.int64)
    lo = -(1 << (bits - 1)) + int(narrow) if signed else 0
    hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1 - int(narrow)
    y = np.clip(y, np.float32(lo), np.float32(hi))
    return QONNX_ROUNDING[mode](y).astype(np.int64)


@dataclass
class View:
    """An ONNX activation: ``index`` (ONNX shape, no batch axis) into accel ``tensor``.

    The ONNX values equal the accel values times ``2**exp`` (a Mul by a power of two
    rescales without touching the integers). ``origin`` names a node that would
    materialise the view.
    """

    tensor: str
    index: np.ndarray
    origin: str
    exp: int = 0

    @classmethod
    def of(cls, tensor: str, shape: tuple[int, ...], origin: str, exp: int = 0) -> View:
        n = int(np.prod(shape, dtype=np.int64))
        return cls(tensor, np.arange(n, dtype=np.int64).reshape(shape), origin, exp)

    def with_index(self, index: np.ndarray, origin: str) -> View:
        return View(self.tensor, np.asarray(index, dtype=np.int64), origin, self.exp)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.index.shape)
