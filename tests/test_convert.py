"""One elaboration, two texts: Amaranth's RTLIL and its Verilog; the simulator's copy."""

import re

from amaranth.back import verilog
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from accel.rtl.convert import to_rtlil, verilog_of
from accel.sim.verilator import SIM_PASSES, StreamSim


class Inner(wiring.Component):
    a: In(signed(8))
    y: Out(signed(32))

    def elaborate(self, platform):
        m = Module()
        acc = Signal(signed(32))
        m.d.sync += acc.eq((acc + self.a * 3)[:32].as_signed())
        m.d.comb += self.y.eq(acc)
        return m


class Outer(wiring.Component):
    a: In(signed(8))
    y: Out(signed(32))

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = Inner()
        m.d.comb += [inner.a.eq(self.a), self.y.eq(inner.y)]
        return m


def test_verilog_from_rtlil_is_amaranths():
    assert verilog_of(to_rtlil(Outer(), "top")) == verilog.convert(
        Outer(), name="top", emit_src=False
    )


def test_simulator_copy_is_one_flat_module_with_narrowed_sums():
    text = to_rtlil(Outer(), "top")
    sim = StreamSim(verilog_of(text), "top", 8, 32, 2, rtlil=text)
    assert sim.passes == SIM_PASSES
    out = sim._prepared()
    assert re.findall(r"^module (\S+)\(", out, re.M) == ["top"]
    # the 33-bit sum of a 32-bit accumulator is cut to 32 bits (wreduce)
    assert re.search(r"\[31:0\] = \$signed\(\\inner\.acc \) \+", out)
    # without passes the simulator gets Amaranth's Verilog as it is
    assert StreamSim(verilog_of(text), "top", 8, 32, 2, passes="")._prepared() == verilog_of(text)
