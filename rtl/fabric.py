"""A multiplier-free dataflow layer: constant weights as a pipelined, shared adder graph.

The stage's adder graph (:mod:`accel.compiler.cmvm`) is laid out as
``ceil(depth / k)`` pipeline stages of ``k`` adder levels (``k`` =
``DotStage.levels_per_stage``): each value is computed in the stage of its
depth and carried in registers to the stages that read it. The outputs' terms
are summed with the bias into a register, then ReLU and the requantizer write
the result into an output queue.

The pipeline never stalls, as the detector's encoder (a sample every bunch
crossing) needs: no enable reaches its thousands of flip-flops, and its data
registers take no reset, so neither is a net the size of the layer. Back-pressure
is met by credits instead: the layer accepts a sample while fewer than ``D``
(``DotStage.credits``; ``L + 1`` into a layer of reuse 1, ``L`` =
``DotStage.pipeline``) samples are inside it (in the pipeline or queued), and the
queue holds ``D``, so nothing is ever dropped.
A sample accepted at cycle ``f`` is readable at ``f + L``, as
:class:`accel.perf.DataflowTiming` models it; with a sink that always takes, the
layer accepts a sample every cycle.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, Value, signed
from amaranth.lib.fifo import SyncFIFO

from accel.compiler.cmvm import Term
from accel.compiler.dataflow import DotStage
from accel.rtl.dotlayer import StageLayer
from accel.rtl.fixed import requantize, shape_of


class FabricLayer(StageLayer):
    """Computes one multiplier-free :class:`DotStage` with initiation interval 1."""

    def __init__(self, stage: DotStage) -> None:
        if stage.adders is None or stage.reuse != 1:
            raise ValueError("a FabricLayer needs a stage with an adder graph at reuse 1")
        super().__init__(stage)

    def elaborate(self, platform) -> Module:
        m = Module()
        st, g = self.stage, self.stage.adders
        k = st.levels_per_stage
        depth = st.credits  # the samples the layer may hold (DotStage.credits)
        inside = Signal(range(depth + 1))  # accepted and not yet taken
        accept = Signal()
        take = Signal()
        m.d.comb += [
            self.i.ready.eq(inside < depth),
            accept.eq(self.i.valid & self.i.ready),
            take.eq(self.o.valid & self.o.ready),
        ]
        m.d.sync += inside.eq(inside + accept - take)

        def stage_of(i: int) -> int:
            return -(-g.depth_of(i) // k)

        n_stages = -(-g.depth // k)
        # the last stage each value is read in (outputs are read after the last)
        last_use = {i: stage_of(i) for i in range(g.n_in + len(g.adds))}
        for j, op in enumerate(g.adds):
            for t in (op.a, op.b):
                last_use[t.index] = max(last_use[t.index], stage_of(g.n_in + j))
        for t in g.outputs:
            if t is not None:
                last_use[t.index] = n_stages

        # copies[i][s]: value i as seen in pipeline stage s (registered across boundaries)
        copies: dict[int, dict[int, Value]] = {}

        def at(i: int, s: int) -> Value:
            have = copies[i]
            if s not in have:
                prev = at(i, s - 1)
                reg = Signal(prev.shape(), name=f"v{i}_s{s}", reset_less=True)
                m.d.sync += reg.eq(prev)
                have[s] = reg
            return have[s]

        def term(t: Term, s: int, frac: int) -> Value:
            v = at(t.index, s)
            shift = g.align(t, frac)
            v = v << shift if shift >= 0 else v >> -shift
            return -v if t.neg else v

        x = self.i.payload
        for i in range(g.n_in):
            copies[i] = {0: x[i].as_signed() if st.in_type.signed else x[i]}
        for j, op in enumerate(g.adds):
            i = g.n_in + j
            s = stage_of(i)
            v = Signal(signed(g.width(i)), name=f"a{j}")
            m.d.comb += v.eq(term(op.a, s, op.frac) + term(op.b, s, op.frac))
            copies[i] = {s: v}

        # the outputs' terms, the bias, into the sum register; ReLU and the requantizer
        # into the output queue
        sums = []
        for o, t in enumerate(g.outputs):
            bias = Const(int(st.bias[o]), shape_of(st.acc))
            total = bias if t is None else bias + term(t, n_stages, 0)
            reg = Signal(shape_of(st.acc), name=f"sum{o}", reset_less=True)
            m.d.sync += reg.eq(total[: st.acc.width].as_signed())
            sums.append(reg)
        results = []
        for o, y in enumerate(sums):
            y = Mux(y < 0, 0, y) if st.relu else y
            results.append(requantize(m, y, st.acc, st.quant, f"q{o}") if st.quant else y)

        # valid bits, one per register level: n_stages adder stages, then the sum register
        valid = [Signal(name=f"valid{s}") for s in range(n_stages + 1)]
        m.d.sync += valid[0].eq(accept)
        m.d.sync += [valid[s].eq(valid[s - 1]) for s in range(1, len(valid))]
        # the output queue: written as the sum register's sample is requantized
        out = Signal.like(self.o.payload, name="result")
        m.d.comb += [out[o].eq(y) for o, y in enumerate(results)]
        m.submodules.queue = queue = SyncFIFO(width=len(out.as_value()), depth=depth)
        m.d.comb += [
            queue.w_en.eq(valid[-1]),
            queue.w_data.eq(out),
            self.o.valid.eq(queue.r_rdy),
            # one queue, one control: its valid copied, the copies of ready not needed
            self.o_valids.eq(queue.r_rdy.replicate(len(self.o_valids))),
            self.i_readys.eq(self.i.ready.replicate(len(self.i_readys))),
            self.o.payload.eq(queue.r_data),
            queue.r_en.eq(self.o.ready),
        ]
        return m
