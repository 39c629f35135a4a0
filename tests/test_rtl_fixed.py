"""The Amaranth requantize mirrors accel.fixed for every mode, exhaustively on 8-bit sources."""

import itertools

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from accel.fixed import FixedType, Overflow, Quant, Rounding, requantize
from accel.rtl.fixed import requantize as rtl_requantize
from accel.rtl.fixed import shape_of

TARGETS = [FixedType(5, 1, True), FixedType(4, 0, False), FixedType(6, 5, True), FixedType(9, 4)]


@pytest.mark.parametrize("src", [FixedType(8, 3, True), FixedType(8, 2, False)])
def test_rtl_requantize_exhaustive(src):
    quants = [
        Quant(t, r, o) for t, r, o in itertools.product(TARGETS, list(Rounding), list(Overflow))
    ]
    m = Module()
    inp = Signal(shape_of(src))
    outs = [rtl_requantize(m, inp, src, q, name=f"q{i}") for i, q in enumerate(quants)]
    values = np.arange(src.min_int, src.max_int + 1)
    got = []

    async def testbench(ctx):
        for v in values:
            ctx.set(inp, int(v))
            got.append([ctx.get(o) for o in outs])

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()
    got = np.array(got)
    for i, q in enumerate(quants):
        assert got[:, i].tolist() == requantize(values, src.frac, q).tolist(), str(q)
