"""The dataflow accelerator: a chain of layers between two vector streams (a DotLayer on
multipliers, or a multiplier-free FabricLayer, as the plan places each stage)."""

from __future__ import annotations

import itertools

from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from accel.compiler.dataflow import DataflowPlan
from accel.rtl.dotlayer import DotLayer, vector_stream
from accel.rtl.fabric import FabricLayer


class DataflowAccelerator(wiring.Component):
    """Whole-sample streams: ``i`` carries one input vector per transfer, ``o`` one result.

    Initiation interval is the largest layer reuse factor; latency the sum.
    """

    def __init__(self, plan: DataflowPlan) -> None:
        self.plan = plan
        super().__init__(
            {
                "i": In(vector_stream(plan.in_type, plan.n_in)),
                "o": Out(vector_stream(plan.out_type, plan.n_out)),
            }
        )

    @property
    def target_mhz(self) -> float | None:
        """The clock a board build runs it at (its PLL): 40 MHz for a design whose layers are
        all multiplier-free (a sample every cycle: the detector's 40 M inferences/s; the
        autoencoder's routes at 60-62 MHz); ``None`` (the board's oscillator) otherwise."""
        return 40.0 if all(s.fabric for s in self.plan.stages) else None

    def elaborate(self, platform) -> Module:
        m = Module()
        layers = [FabricLayer(s) if s.fabric else DotLayer(s) for s in self.plan.stages]
        for s, layer in zip(self.plan.stages, layers, strict=True):
            m.submodules[s.name] = layer
        wiring.connect(m, wiring.flipped(self.i), layers[0].i)
        for a, b in itertools.pairwise(layers):
            wiring.connect(m, a.o, b.i)
        wiring.connect(m, layers[-1].o, wiring.flipped(self.o))
        return m


def to_verilog(plan: DataflowPlan, name: str) -> str:
    """Verilog of the accelerator; ports ``clk rst i__payload i__valid i__ready o__...``."""
    return verilog.convert(DataflowAccelerator(plan), name=name, emit_src=False)
