"""Fixed-point numbers with power-of-two scales, with ap_fixed's exact semantics.

A value is stored as a raw integer ``q`` and means ``q * 2**-frac``. Every
conversion to a narrower type names its rounding and overflow mode, with the
meaning of Vitis HLS ``ap_fixed``: rounding is applied to the dropped fraction
bits first, then the overflow mode to the integer range. Arrays of raw
integers are ``int64``; widths are capped at 62 bits so sums of a few of them
cannot overflow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from accel.errors import AccelError

MAX_WIDTH = 62


class Rounding(StrEnum):
    """How dropped fraction bits are rounded (ap_fixed's quantization modes)."""

    TRN = "TRN"  # AP_TRN: toward minus infinity (floor)
    RND = "RND"  # AP_RND: to nearest, ties toward plus infinity
    RND_CONV = "RND_CONV"  # AP_RND_CONV: to nearest, ties to even


class Overflow(StrEnum):
    """What happens to values outside the target range (ap_fixed's overflow modes)."""

    WRAP = "WRAP"  # AP_WRAP: keep the low bits, two's complement
    SAT = "SAT"  # AP_SAT: clamp to the nearest representable value


@dataclass(frozen=True)
class FixedType:
    """A fixed-point format: ``width`` bits in all, ``frac`` of them fractional."""

    width: int
    frac: int
    signed: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.width <= MAX_WIDTH:
            raise AccelError(f"fixed-point width {self.width} is outside 1..{MAX_WIDTH}")
        if self.signed and self.width < 2:
            raise AccelError("a signed fixed-point type needs at least 2 bits")

    @property
    def int_bits(self) -> int:
        """Integer bits including the sign bit: the ``I`` of ``ap_fixed<W, I>``."""
        return self.width - self.frac

    @property
    def min_int(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def max_int(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def lsb(self) -> float:
        return 2.0**-self.frac

    def to_float(self, raw: np.ndarray) -> np.ndarray:
        return np.ldexp(np.asarray(raw, dtype=np.float64), -self.frac)

    def contains(self, raw: np.ndarray) -> bool:
        raw = np.asarray(raw)
        return bool(raw.size == 0 or (raw.min() >= self.min_int and raw.max() <= self.max_int))

    def ap(self, rounding: Rounding | None = None, overflow: Overflow | None = None) -> str:
        """The matching HLS type, e.g. ``ap_fixed<10,4,AP_RND,AP_SAT>``."""
        name = "ap_fixed" if self.signed else "ap_ufixed"
        args = [str(self.width), str(self.int_bits)]
        if rounding is not None or overflow is not None:
            args += [f"AP_{rounding or Rounding.TRN}", f"AP_{overflow or Overflow.WRAP}"]
        return f"{name}<{','.join(args)}>"

    def __str__(self) -> str:
        return self.ap()

    @classmethod
    def parse(cls, text: str) -> FixedType:
        """Read ``ap_fixed<W,I>`` / ``ap_ufixed<W,I>`` / ``ap_int<W>`` / ``ap_uint<W>``."""
        m = re.fullmatch(r"\s*ap_(u?)(fixed|int)<\s*(\d+)\s*(?:,\s*(-?\d+)\s*)?[^>]*>\s*", text)
        if not m:
            raise AccelError(f"cannot read fixed-point type {text!r}")
        unsigned, kind, width, ibits = m.groups()
        width = int(width)
        frac = 0 if kind == "int" else width - int(ibits if ibits is not None else width)
        return cls(width, frac, signed=not unsigned)

    def to_json(self) -> dict:
        return {"width": self.width, "frac": self.frac, "signed": self.signed}

    @classmethod
    def from_json(cls, d: dict) -> FixedType:
        return cls(int(d["width"]), int(d["frac"]), bool(d["signed"]))

    @classmethod
    def covering(cls, lo: int, hi: int, frac: int) -> FixedType:
        """The narrowest type at ``frac`` holding every integer in ``[lo, hi]``."""
        signed = lo < 0
        mag_bits = max(max(int(hi), 0).bit_length(), int(-lo - 1).bit_length() if signed else 0, 1)
        return cls(mag_bits + int(signed), frac, signed)


@dataclass(frozen=True)
class Quant:
    """A conversion target: a type plus its rounding and overflow modes."""

    type: FixedType
    rounding: Rounding = Rounding.TRN
    overflow: Overflow = Overflow.WRAP

    def ap(self) -> str:
        return self.type.ap(self.rounding, self.overflow)

    def __str__(self) -> str:
        return self.ap()

    def to_json(self) -> dict:
        return {
            **self.type.to_json(),
            "rounding": str(self.rounding),
            "overflow": str(self.overflow),
        }

    @classmethod
    def from_json(cls, d: dict) -> Quant:
        return cls(FixedType.from_json(d), Rounding(d["rounding"]), Overflow(d["overflow"]))


def _overflow(v: np.ndarray, t: FixedType, mode: Overflow) -> np.ndarray:
    if mode is Overflow.SAT:
        return np.clip(v, t.min_int, t.max_int)
    if t.contains(v):  # two reductions are much cheaper than the wrap arithmetic
        return v
    v = v & ((1 << t.width) - 1)
    if t.signed:
        v = v - ((v >> (t.width - 1)) & 1) * (1 << t.width)
    return v


def requantize(raw: np.ndarray, src_frac: int, quant: Quant) -> np.ndarray:
    """Convert raw integers at scale ``2**-src_frac`` to ``quant`` (exact, vectorised)."""
    v = np.asarray(raw, dtype=np.int64)
    shift = src_frac - quant.type.frac
    if shift < 0:
        headroom = MAX_WIDTH + 1 - (-shift)
        if v.size and (np.abs(v).max() >= (1 << max(headroom, 0))):
            raise AccelError(f"requantize to {quant} would overflow 64-bit intermediates")
        v = v << -shift
    elif shift > 0:
        floor = v >> shift
        if quant.rounding is Rounding.TRN:
            v = floor
        else:
            rem = v & ((1 << shift) - 1)
            half = 1 << (shift - 1)
            up = rem > half
            if quant.rounding is Rounding.RND:
                up = rem >= half
            else:
                up = up | ((rem == half) & ((floor & 1) == 1))
            v = floor + up
    return _overflow(v, quant.type, quant.overflow)


def quantize(x: np.ndarray, quant: Quant) -> np.ndarray:
    """Convert real numbers to raw integers of ``quant`` exactly as ap_fixed does.

    Exact for every finite float64: power-of-two scaling, ``x - floor(x)`` and
    ``fmod`` are exact in binary floating point. NaN and infinities are refused.
    """
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise AccelError("input contains NaN or infinity")
    t = quant.type
    span = 2.0 ** (t.width - t.frac)  # the type's range as a real interval length
    # WRAP: fmod removes whole multiples of 2**width in the raw domain, exactly;
    # SAT: anything past +-span saturates all the same.
    x = np.fmod(x, span) if quant.overflow is Overflow.WRAP else np.clip(x, -span, span)
    s = np.ldexp(x, t.frac)
    floor = np.floor(s)
    rem = s - floor
    if quant.rounding is Rounding.TRN:
        r = floor
    elif quant.rounding is Rounding.RND:
        r = floor + (rem >= 0.5)
    else:
        r = floor + ((rem > 0.5) | ((rem == 0.5) & (np.fmod(floor, 2) != 0)))
    if t.frac < 0:
        # Scaling down is exact unless the result is subnormal (|s| < 2**-1022), where
        # ldexp drops bits (a tiny negative becomes -0.0). Such an s floors to -1 or 0,
        # and rounds to 0 in every rounding mode.
        lost = np.ldexp(s, -t.frac) != x
        if lost.any():
            exact = np.where(x < 0, -1.0, 0.0) if quant.rounding is Rounding.TRN else 0.0
            r = np.where(lost, exact, r)
    return _overflow(r.astype(np.int64), t, quant.overflow)
