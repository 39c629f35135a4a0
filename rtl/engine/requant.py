"""Requantization with run-time parameters: the engine's version of ``accel.fixed``.

The dataflow RTL bakes one conversion into each layer; the engine changes it
per instruction, so widths, shift and modes are signals here. Bit for bit the
same as :func:`accel.fixed.requantize` after wrapping to the accumulator width.

Built for timing: a wrap to a run-time width is a sign test and a mask (no
subtraction), rounding looks at two bits of what the shift drops (the half
bit and whether anything below it is set; no wide comparison), and
:func:`requantize` takes a ``stage`` that the pipelined :class:`Requantizer`
uses to put a register between the steps (4 of them, then the result register).
"""

from __future__ import annotations

from collections.abc import Callable

from amaranth.hdl import Cat, Module, Mux, Signal, Value, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from accel.engine.isa import Rounding
from accel.rtl.copies import kept_copy
from accel.rtl.fixed import named


def wrap(m: Module, v: Value, mask: Value, sign: Value, bits: int, name: str) -> Signal:
    """``v`` reduced to the bits in ``mask``, two's complement when ``sign`` is its top bit.

    ``mask`` is ``2**w - 1`` and ``sign`` ``2**(w - 1)`` or 0, so a negative
    result is the low bits with every bit above them set.
    """
    low = named(m, (v.as_unsigned() & mask)[:bits], f"{name}_low")
    neg = named(m, (low & sign).any(), f"{name}_neg")
    out = Signal(signed(bits + 1), name=name)
    m.d.comb += out.eq(Mux(neg, Cat(low | ~mask[:bits], 1), low))
    return out


def requantize(
    m: Module, v: Value, p, bits: int, name: str, stage: Callable[[Value, str], Value] | None = None
) -> Signal:
    """``p`` is an instruction view (see :mod:`accel.engine.isa`'s drain fields).

    ``bits`` is the hardware accumulator width; the result is a signed value
    already inside the output type. Every operation is at most ``bits + 2`` wide.
    ``stage(value, name)`` is applied where a pipeline register may go (the
    default passes the value through: all combinational).
    """
    stage = stage or (lambda value, n: named(m, value, n))
    acc = wrap(m, v, p.acc_mask, p.acc_sign, bits, f"{name}_acc")
    x = stage(Mux(p.relu & (acc < 0), 0, acc), f"{name}_relu")
    # floor division by 2**shift; of the dropped bits (rem = x & rem_mask) only the
    # half bit and whether any bit below it is set matter (rem_mask = 2 * half - 1,
    # or half = 0 when the shift is wider than the word)
    low = x.as_unsigned()[:bits]
    floor = stage(x >> p.shift, f"{name}_floor")
    hb = stage((low & p.half).any() | (p.half == 0), f"{name}_half")
    sticky = stage((low & p.rem_mask & ~p.half).any(), f"{name}_sticky")
    rounds = stage(
        (p.shift != 0) & ((p.rounding == Rounding.RND) | (p.rounding == Rounding.RND_CONV)),
        f"{name}_rounds",
    )
    conv = p.rounding == Rounding.RND_CONV
    up = rounds & hb & (~conv | sticky | floor[0])
    r = stage((floor + up)[: bits + 1].as_signed(), f"{name}_rnd")
    above = stage(r > p.out_hi, f"{name}_above")
    below = stage(r < p.out_lo, f"{name}_below")
    wrapped = stage(wrap(m, r, p.out_mask, p.out_sign, bits, f"{name}_wrap"), f"{name}_wrapped")
    r = stage(r, f"{name}_rnd2")
    sat = Mux(above, p.out_hi, Mux(below, p.out_lo, r))
    out = Signal(signed(bits), name=name)
    m.d.comb += out.eq(Mux(p.sat, sat, wrapped))
    return out


# the instruction fields :func:`requantize` reads
DRAIN_FIELDS = (
    "acc_mask", "acc_sign", "relu", "shift", "half", "rem_mask", "rounding",
    "out_hi", "out_lo", "out_mask", "out_sign", "sat",
)  # fmt: skip


class Requantizer(wiring.Component):
    """One lane of the drain's requantizer, pipelined: ``value`` to ``result`` in :data:`LATENCY`.

    The stages: wrap and ReLU | shift, half bit, sticky bit | round |
    saturation tests and the output wrap | the mode's pick (registered).
    Every register moves when ``en`` is high; the instruction must not change
    while values are in flight, nor in the cycle before the first one arrives (the
    lane reads its own registered copy).
    """

    LATENCY = 5

    def __init__(self, cfg) -> None:
        from accel.engine.isa import instruction_layout

        self.cfg = cfg
        super().__init__(
            {
                "instr": In(instruction_layout(cfg)),
                "en": In(1, init=1),
                "value": In(signed(cfg.acc_bits + 1)),
                "result": Out(signed(cfg.acc_bits)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()

        def stage(value: Value, name: str) -> Signal:
            value = Value.cast(value)
            reg = Signal(value.shape(), name=name, reset_less=True)  # data: no reset
            with m.If(self.en):
                m.d.sync += reg.eq(value)
            return reg

        # the lane's own copy of the instruction, a cycle late: the fields fan out to
        # every bit of the lane, and one shared register placed far from the eight
        # lanes was the drain's critical path. The instruction changes only when the
        # drain is idle, and a GEMM's first word reaches the drain cycles after it.
        # (kept: eight plain copies were merged back into one by synthesis)
        instr = Signal.like(self.instr, reset_less=True)
        for field in DRAIN_FIELDS:
            m.d.comb += getattr(instr, field).eq(
                kept_copy(m, getattr(self.instr, field), f"instr_{field}", platform)
            )
        out = requantize(m, self.value, instr, self.cfg.acc_bits, "lane", stage)
        with m.If(self.en):
            m.d.sync += self.result.eq(out)
        return m
