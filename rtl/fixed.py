"""Fixed-point conversions in Amaranth, mirroring :mod:`accel.fixed` bit for bit."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Shape, Signal, Value, signed, unsigned

from accel.fixed import FixedType, Overflow, Quant, Rounding


def shape_of(t: FixedType) -> Shape:
    return signed(t.width) if t.signed else unsigned(t.width)


def named(m: Module, value: Value, name: str) -> Signal:
    """Drive a Signal from ``value`` so later uses share one copy of its logic.

    Amaranth does not merge repeated uses of one expression; an expression
    used three times is built three times.
    """
    value = Value.cast(value)
    sig = Signal(value.shape(), name=name)
    m.d.comb += sig.eq(value)
    return sig


def requantize(m: Module, value: Value, src: FixedType, quant: Quant, name: str = "q") -> Value:
    """Round the dropped fraction bits, then wrap or saturate, as ap_fixed does."""
    t = quant.type
    v = named(m, value, f"{name}_in")
    shift = src.frac - t.frac
    if shift < 0:
        v = v << -shift
    elif shift > 0:
        floor = v >> shift  # arithmetic for signed values: floor division
        if quant.rounding is Rounding.TRN:
            v = floor
        elif quant.rounding is Rounding.RND:
            v = floor + v[shift - 1]  # the half bit decides: ties go up
        else:
            rem = v[:shift]
            half = 1 << (shift - 1)
            v = floor + ((rem > half) | ((rem == half) & floor[0]))
    if quant.overflow is Overflow.SAT:
        v = named(m, v, f"{name}_rnd")
        v = Mux(v > t.max_int, t.max_int, Mux(v < t.min_int, t.min_int, v))
    v = v[: t.width]
    return v.as_signed() if t.signed else v


def select(values: list, index: Value) -> Value:
    """``values[index]`` as a tree of 2-to-1 multiplexers on the index bits.

    ``Array(values)[index]`` becomes a case statement that yosys maps to a
    compare per value (nine LUTs per bit of an 8-to-1 multiplexer on ECP5);
    a tree maps to four, and its depth is the index width. An index past the
    end picks the last value.
    """
    values = [Value.cast(v) for v in values]
    level, bit = values, 0
    while len(level) > 1:
        s = index[bit] if bit < len(index) else 0
        level = [
            Mux(s, level[i + 1], level[i]) if i + 1 < len(level) else level[i]
            for i in range(0, len(level), 2)
        ]
        bit += 1
    return level[0]
