"""Requantization with run-time parameters: the engine's version of ``accel.fixed``.

The dataflow RTL bakes one conversion into each layer; the engine changes it
per instruction, so widths, shift and modes are signals here. Bit for bit the
same as :func:`accel.fixed.requantize` after wrapping to the accumulator width.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value, signed

from accel.engine.isa import Rounding
from accel.rtl.fixed import named


def wrap(m: Module, v: Value, mask: Value, sign: Value, bits: int, name: str) -> Signal:
    """``v`` reduced to the bits in ``mask``, two's complement when ``sign`` is its top bit."""
    low = named(m, (v.as_unsigned() & mask)[:bits], f"{name}_low")
    out = Signal(signed(bits + 1), name=name)
    m.d.comb += out.eq(Mux((low & sign).any(), low - (sign << 1), low))
    return out


def requantize(m: Module, v: Value, p, bits: int, name: str) -> Signal:
    """``p`` is an instruction view (see :mod:`accel.engine.isa`'s drain fields).

    ``bits`` is the hardware accumulator width; the result is a signed value
    already inside the output type. Every operation is at most ``bits + 2`` wide.
    """
    acc = wrap(m, v, p.acc_mask, p.acc_sign, bits, f"{name}_acc")
    x = named(m, Mux(p.relu & (acc < 0), 0, acc), f"{name}_relu")
    floor = named(m, x >> p.shift, f"{name}_floor")
    rem = named(m, x.as_unsigned()[:bits] & p.rem_mask, f"{name}_rem")
    up = Signal(name=f"{name}_up")
    with m.If(p.shift != 0):
        with m.Switch(p.rounding):
            with m.Case(Rounding.RND):
                m.d.comb += up.eq(rem >= p.half)
            with m.Case(Rounding.RND_CONV):
                m.d.comb += up.eq((rem > p.half) | ((rem == p.half) & floor[0]))
    r = named(m, (floor + up)[: bits + 1].as_signed(), f"{name}_rnd")
    sat = Mux(r > p.out_hi, p.out_hi, Mux(r < p.out_lo, p.out_lo, r))
    wrapped = wrap(m, r, p.out_mask, p.out_sign, bits, f"{name}_wrap")
    out = Signal(signed(bits), name=name)
    m.d.comb += out.eq(Mux(p.sat, sat, wrapped))
    return out
