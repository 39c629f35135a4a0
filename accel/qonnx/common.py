"""What export and import share: the Quant domain, rounding-mode names, scale checks."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from accel.errors import AccelError
from accel.fixed import Rounding

# Where qonnx registers Quant; "onnx.brevitas" is the alias older Brevitas exports use.
DOMAIN = "qonnx.custom_op.general"
QUANT_DOMAINS = {DOMAIN, "onnx.brevitas", "finn.custom_op.general", ""}
OPSET = 13  # standard ONNX opset of exported models (Pad/Reshape take inputs; FINN-era tools)
IR_VERSION = 8  # the ONNX IR version that goes with opset 13
FLOAT32_INT = 1 << 24  # float32 holds every integer of magnitude <= 2**24, and no wider range

# Every rounding_mode qonnx 1.0's Quant (IntQuant) executes, as its own numpy code does,
# in float32 (constants are quantized with this so weights match qonnx bit for bit).
QONNX_ROUNDING = {
    "ROUND": np.round,  # half to even, like HALF_EVEN
    "HALF_EVEN": np.round,
    "CEIL": np.ceil,
    "FLOOR": np.floor,
    "UP": lambda x: np.sign(x) * np.ceil(np.abs(x)),
    "DOWN": np.fix,
    "HALF_UP": lambda x: np.sign(x) * np.floor(np.abs(x) + np.float32(0.5)),  # away from 0
    "HALF_DOWN": lambda x: np.sign(x) * np.ceil(np.abs(x) - np.float32(0.5)),
}


def require_onnx() -> ModuleType:
    """The onnx module, or a one-line error saying how to get it."""
    try:
        import onnx
    except ImportError:
        raise AccelError("QONNX support needs the 'onnx' package (pip install onnx)") from None
    return onnx


def activation_rounding(mode: str, signed: bool) -> Rounding | None:
    """Our rounding for a Quant of activations, or None when none is exactly equal.

    qonnx clamps to the integer range *before* rounding, so an unsigned Quant only
    ever rounds non-negative numbers: there HALF_UP (ties away from zero) is our RND
    (ties toward +inf) and DOWN (toward zero) is TRN. For signed Quants they differ.
    """
    mode = mode.upper()
    if mode == "FLOOR" or (mode == "DOWN" and not signed):
        return Rounding.TRN
    if mode in ("ROUND", "HALF_EVEN"):
        return Rounding.RND_CONV
    if mode == "HALF_UP" and not signed:
        return Rounding.RND
    return None


def pow2_frac(scale: np.ndarray) -> int | None:
    """``f`` with every element of ``scale`` equal to ``2**-f``, else None."""
    s = np.asarray(scale, dtype=np.float64)
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0) or np.any(s != s.flat[0]):
        return None
    mant, exp = np.frexp(s.flat[0])
    return int(1 - exp) if mant == 0.5 else None
