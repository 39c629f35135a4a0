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
from accel.rtl.dotlayer import valid_copies as copies_of
from accel.rtl.fabric import FabricLayer


class DataflowAccelerator(wiring.Component):
    """Whole-sample streams: ``i`` carries one input vector per transfer, ``o`` one result.

    Initiation interval is the largest layer reuse factor; latency the sum.
    ``valid_copies``: a port ``i_valids`` beside ``i`` takes copies of its valid
    (:func:`accel.rtl.dotlayer.valid_copies`, from a sliced queue's ``r_rdys``) for the
    first layer's lanes; without it they are copies of the one net.
    """

    def __init__(self, plan: DataflowPlan, valid_copies: bool = False) -> None:
        self.plan = plan
        ports = {
            "i": In(vector_stream(plan.in_type, plan.n_in)),
            "o": Out(vector_stream(plan.out_type, plan.n_out)),
        }
        if valid_copies:
            ports["i_valids"] = In(copies_of(plan.in_type, plan.n_in))
        super().__init__(ports)

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
        first = layers[0].i_valids
        copies = self.i_valids if "i_valids" in self.signature.members else None
        m.d.comb += first.eq(copies if copies is not None else self.i.valid.replicate(len(first)))
        for a, b in itertools.pairwise(layers):
            wiring.connect(m, a.o, b.i)
            m.d.comb += b.i_valids.eq(a.o_valids)
        wiring.connect(m, layers[-1].o, wiring.flipped(self.o))
        return m


def to_verilog(plan: DataflowPlan, name: str) -> str:
    """Verilog of the accelerator; ports ``clk rst i__payload i__valid i__ready o__...``."""
    return verilog.convert(DataflowAccelerator(plan), name=name, emit_src=False)
