"""One dataflow layer: a phased multiply-accumulate stage with stream edges."""

from __future__ import annotations

from collections import defaultdict

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accel.compiler.dataflow import DotStage
from accel.rtl.fixed import named, requantize, shape_of


def tree_sum(terms: list[Value]) -> Value:
    """Balanced adder tree: log depth instead of a chain."""
    if not terms:
        return Const(0)
    while len(terms) > 1:
        terms = [a + b for a, b in zip(terms[0::2], terms[1::2], strict=False)] + (
            [terms[-1]] if len(terms) % 2 else []
        )
    return terms[0]


def vector_stream(t, n: int) -> stream.Signature:
    return stream.Signature(data.ArrayLayout(shape_of(t), n))


class StageLayer(wiring.Component):
    """A dataflow stage's component: its input and output vector streams."""

    def __init__(self, stage: DotStage) -> None:
        self.stage = stage
        super().__init__(
            {
                "i": In(vector_stream(stage.in_type, stage.n_in)),
                "o": Out(vector_stream(stage.out_type, stage.n_out)),
            }
        )


class DotLayer(StageLayer):
    """Computes one :class:`DotStage` in ``reuse`` cycles per sample, plus one pipeline stage.

    The layer reads its input straight from the upstream output register,
    which holds the sample until this layer accepts it in its last phase, so no
    input copy is needed. The layer has ``ceil(taps / reuse)`` multipliers
    shared by all its outputs (see :meth:`DotStage.lanes`); every output keeps
    its own accumulator, which wraps at its declared width like the reference.

    Products are registered before the adder tree: it splits the operand
    multiplexer and multiplier from the accumulate and requantize logic, which
    roughly doubles Fmax for one cycle of latency per layer. When the output
    register cannot take a finished sample, the whole layer stalls (products,
    phase and accumulators hold), so nothing is lost or recomputed.
    """

    def elaborate(self, platform) -> Module:
        m = Module()
        st = self.stage
        r = st.reuse
        phase = Signal(range(max(r, 2)))
        last = (phase == r - 1) if r > 1 else Const(1)
        # The product stage: products of phase ``phase_d`` of a sample, valid if ``live``.
        live = Signal()
        phase_d = Signal.like(phase)
        last_d = (phase_d == r - 1) if r > 1 else Const(1)
        can_out = ~self.o.valid | self.o.ready
        stall = named(m, live & last_d & ~can_out, "stall")
        m.d.comb += self.i.ready.eq(last & ~stall)
        with m.If(~stall):
            m.d.sync += [live.eq(self.i.valid), phase_d.eq(phase)]
        x = self.i.payload

        def register(product: Value, name: str) -> Signal:
            reg = Signal(product.shape(), name=name)
            with m.If(~stall):
                m.d.sync += reg.eq(product)
            return reg

        # Each lane multiplies one (input, weight) pair per phase; its product goes
        # to the output it serves in that phase.
        served: dict[int, list[tuple[Value, list[int]]]] = defaultdict(list)
        for j, lane in enumerate(st.lanes()):
            if r == 1:
                o, i, w = lane[0]
                served[o].append((register(x[i] * w, f"p{j}"), [0]))
                continue
            pad = [Const(0)] * (r - len(lane))
            # Name both muxes: arithmetic on an ArrayProxy is applied element by
            # element, so multiplying two proxies directly would multiply r*r pairs.
            a = named(m, Array([x[i] for _, i, _ in lane] + pad)[phase], f"x{j}")
            b = named(m, Array([Const(w) for _, _, w in lane] + pad)[phase], f"w{j}")
            prod = register(a * b, f"p{j}")
            phases = defaultdict(list)
            for p, (o, _, _) in enumerate(lane):
                phases[o].append(p)
            for o, ps in phases.items():
                served[o].append((prod, ps))

        results = []
        for o in range(st.n_out):
            bias = Const(int(st.bias[o]), shape_of(st.acc))
            terms = [
                prod if r == 1 else Mux(Cat(*(phase_d == p for p in ps)).any(), prod, 0)
                for prod, ps in served[o]
            ]
            if r > 1 and served[o]:
                acc = Signal(shape_of(st.acc), name=f"acc{o}")
                first = min(p for _, ps in served[o] for p in ps)
                bias = Mux(phase_d == first, bias, acc)
            total = named(m, (bias + tree_sum(terms))[: st.acc.width].as_signed(), f"sum{o}")
            if r > 1 and served[o]:
                with m.If(live & ~last_d):
                    m.d.sync += acc.eq(total)
            y = Mux(total < 0, 0, total) if st.relu else total
            results.append(requantize(m, y, st.acc, st.quant, f"q{o}") if st.quant else y)

        with m.If(live & last_d & can_out):
            m.d.sync += self.o.valid.eq(1)
            m.d.sync += [self.o.payload[o].eq(y) for o, y in enumerate(results)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        if r > 1:
            with m.If(self.i.valid & ~last & ~stall):
                m.d.sync += phase.eq(phase + 1)
            with m.Elif(self.i.valid & self.i.ready):
                m.d.sync += phase.eq(0)
        return m
