"""Amaranth designs to RTLIL and RTLIL to Verilog, so one elaboration serves both.

The RTLIL is what Amaranth elaborates a design into; :func:`verilog_of` turns it
into the same Verilog as ``amaranth.back.verilog.convert`` (Amaranth's own
step, through its Yosys), and the simulator reads the RTLIL directly
(:mod:`accel.sim.verilator`): yosys reads RTLIL about 10x as fast as it reads
that Verilog back (the 8x8 engine: 6 s against 58 s).
"""

from __future__ import annotations

from amaranth.back import rtlil


def to_rtlil(component, name: str) -> str:
    """RTLIL of an Amaranth component (its signature gives the ports), no source locations."""
    return rtlil.convert(component, name=name, emit_src=False)


def verilog_of(rtlil_text: str) -> str:
    """The Verilog ``amaranth.back.verilog.convert(..., emit_src=False)`` writes for it."""
    from amaranth.back.verilog import _convert_rtlil_text  # Amaranth 0.5's own step

    return _convert_rtlil_text(rtlil_text)
