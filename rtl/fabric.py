"""A multiplier-free dataflow layer: constant weights as a pipelined, shared adder graph.

The stage's adder graph (:mod:`accel.compiler.cmvm`) is laid out as
``ceil(depth / k)`` pipeline stages of ``k`` adder levels (``k`` =
``DotStage.levels_per_stage``): each value is computed in the stage of its
depth and carried in registers to the stages that read it. The outputs' terms
are summed with the bias into a register, then ReLU and the requantizer feed
the output register. Every register advances together unless the output
register holds a sample nobody takes (one enable for the whole layer), so the
layer accepts a sample every cycle and its latency is ``DotStage.pipeline``
cycles, as :class:`accel.perf.DataflowTiming` models it.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, Value, signed

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
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]

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
                reg = Signal(prev.shape(), name=f"v{i}_s{s}")
                with m.If(en):
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
        # into the output register
        sums = []
        for o, t in enumerate(g.outputs):
            bias = Const(int(st.bias[o]), shape_of(st.acc))
            total = bias if t is None else bias + term(t, n_stages, 0)
            reg = Signal(shape_of(st.acc), name=f"sum{o}")
            with m.If(en):
                m.d.sync += reg.eq(total[: st.acc.width].as_signed())
            sums.append(reg)
        results = []
        for o, y in enumerate(sums):
            y = Mux(y < 0, 0, y) if st.relu else y
            results.append(requantize(m, y, st.acc, st.quant, f"q{o}") if st.quant else y)

        # valid bits, one per register level: n_stages adder stages, then the sum register
        valid = [Signal(name=f"valid{s}") for s in range(n_stages + 1)]
        with m.If(en):
            m.d.sync += valid[0].eq(self.i.valid)
            m.d.sync += [valid[s].eq(valid[s - 1]) for s in range(1, len(valid))]
            m.d.sync += self.o.valid.eq(valid[-1])
            m.d.sync += [self.o.payload[o].eq(y) for o, y in enumerate(results)]
        return m
