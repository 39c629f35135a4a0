"""Requantization with run-time parameters: the engine's version of ``accel.fixed``.

The dataflow RTL bakes one conversion into each layer; the engine changes it
per instruction, so widths, shift and modes are signals here. Bit for bit the
same as :func:`accel.fixed.requantize` after wrapping to the accumulator width.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value, signed

from accel.engine.isa import Rounding
from accel.rtl.fixed import named


def wrap(m: Module, v: Value, width: Value, is_signed: Value, bits: int, name: str) -> Signal:
    """``v`` reduced modulo ``2**width`` (two's complement when ``is_signed``)."""
    one = Value.cast(1).as_unsigned()
    mask = named(m, (one << width) - 1, f"{name}_mask")
    low = named(m, (v & mask)[:bits], f"{name}_low")
    top = named(m, (low >> (width - 1).as_unsigned())[0] & is_signed, f"{name}_top")
    return named(m, Mux(top, low.as_signed() - (one << width), low).as_signed(), name)


def requantize(m: Module, v: Value, p, bits: int, name: str) -> Signal:
    """``p`` is an instruction view with ``acc_width relu shift rounding sat out_*``.

    ``bits`` is the hardware accumulator width; the result is a signed ``bits``-bit
    value already inside the output type.
    """
    acc = wrap(m, v, p.acc_width, 1, bits, f"{name}_acc")
    x = named(m, Mux(p.relu & (acc < 0), 0, acc), f"{name}_relu")
    floor = named(m, x >> p.shift, f"{name}_floor")
    one = Value.cast(1).as_unsigned()
    rem = named(m, x.as_unsigned() & ((one << p.shift) - 1), f"{name}_rem")
    half = named(m, (one << p.shift) >> 1, f"{name}_half")
    up = Signal(name=f"{name}_up")
    with m.If(p.shift != 0):
        with m.Switch(p.rounding):
            with m.Case(Rounding.RND):
                m.d.comb += up.eq(rem >= half)
            with m.Case(Rounding.RND_CONV):
                m.d.comb += up.eq((rem > half) | ((rem == half) & floor[0]))
    r = named(m, (floor + up)[: bits + 1].as_signed(), f"{name}_rnd")
    hi = named(
        m,
        Mux(p.out_signed, (one << (p.out_width - 1).as_unsigned()) - 1, (one << p.out_width) - 1),
        f"{name}_hi",
    )
    lo = named(
        m, Mux(p.out_signed, -(one << (p.out_width - 1).as_unsigned()).as_signed(), 0), f"{name}_lo"
    )
    sat = Mux(r > hi.as_signed(), hi, Mux(r < lo, lo, r))
    wrapped = wrap(m, r, p.out_width, p.out_signed, bits, f"{name}_wrap")
    out = Signal(signed(bits), name=name)
    m.d.comb += out.eq(Mux(p.sat, sat, wrapped))
    return out
