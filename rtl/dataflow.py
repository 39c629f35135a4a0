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
    ``copies``: ports ``i_valids`` (in) and ``i_readys`` (out) beside ``i``, and
    ``o_readys`` (in) beside ``o``: copies of the handshake, as
    :class:`accel.rtl.dotlayer.StageLayer` has them, for a sliced queue on either side
    (its ``r_rdys``, ``r_ens`` and ``w_rdys``); without them the layers' copies are
    copies of the one net.
    """

    def __init__(self, plan: DataflowPlan, copies: bool = False) -> None:
        self.plan, self.copies = plan, copies
        ports = {
            "i": In(vector_stream(plan.in_type, plan.n_in)),
            "o": Out(vector_stream(plan.out_type, plan.n_out)),
        }
        if copies:
            n_i, n_o = copies_of(plan.in_type, plan.n_in), copies_of(plan.out_type, plan.n_out)
            ports |= {"i_valids": In(n_i), "i_readys": Out(n_i), "o_readys": In(n_o)}
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
        first, last = layers[0], layers[-1]
        if self.copies:
            m.d.comb += [
                first.i_valids.eq(self.i_valids),
                self.i_readys.eq(first.i_readys),
                last.o_readys.eq(self.o_readys),
            ]
        else:
            m.d.comb += [
                first.i_valids.eq(self.i.valid.replicate(len(first.i_valids))),
                last.o_readys.eq(self.o.ready.replicate(len(last.o_readys))),
            ]
        for a, b in itertools.pairwise(layers):
            wiring.connect(m, a.o, b.i)
            m.d.comb += [b.i_valids.eq(a.o_valids), a.o_readys.eq(b.i_readys)]
        wiring.connect(m, layers[-1].o, wiring.flipped(self.o))
        return m


def to_verilog(plan: DataflowPlan, name: str) -> str:
    """Verilog of the accelerator; ports ``clk rst i__payload i__valid i__ready o__...``."""
    return verilog.convert(DataflowAccelerator(plan), name=name, emit_src=False)
