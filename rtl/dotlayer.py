"""One dataflow layer: a phased multiply-accumulate stage with stream edges."""

from __future__ import annotations

from collections import Counter, defaultdict

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accel.compiler.dataflow import DotStage
from accel.rtl.dsp import registered_product
from accel.rtl.fixed import requantize, select, shape_of
from accel.rtl.queue import SlicedQueue, slice_count

# lanes that share one toggle telling them of a take (see DotLayer)
CREDIT_GROUP = 8


def vector_stream(t, n: int) -> stream.Signature:
    return stream.Signature(data.ArrayLayout(shape_of(t), n))


def valid_copies(t, n: int) -> int:
    """How many copies of a vector stream's ``valid`` travel beside it: one per slice
    of the producer's :class:`SlicedQueue`, each from that slice's own register."""
    return slice_count(shape_of(t).width * n)


class StageLayer(wiring.Component):
    """A dataflow stage's component: its input and output vector streams, and beside
    each, copies of its handshake (:func:`valid_copies` of each, every copy equal to
    the stream's signal every cycle, each from a register of its own): ``i_valids`` and
    ``o_valids`` of ``valid``, ``i_readys`` and ``o_readys`` of ``ready``. A layer whose
    lanes spread over the part reads its own copy of the valid per run of lanes, and
    its output queue's slices each read on their own copy of the consumer's ready, so
    no one register drives them all. Whoever connects a layer drives ``i_valids`` and
    ``o_readys`` (copies of ``i.valid`` and ``o.ready`` at least)."""

    def __init__(self, stage: DotStage) -> None:
        self.stage = stage
        n_i = valid_copies(stage.in_type, stage.n_in)
        n_o = valid_copies(stage.out_type, stage.n_out)
        super().__init__(
            {
                "i": In(vector_stream(stage.in_type, stage.n_in)),
                "i_valids": In(n_i),
                "i_readys": Out(n_i),
                "o": Out(vector_stream(stage.out_type, stage.n_out)),
                "o_valids": Out(n_o),
                "o_readys": In(n_o),
            }
        )


class DotLayer(StageLayer):
    """Computes one :class:`DotStage` on multipliers in ``reuse`` cycles per sample.

    The layer reads its input straight from the upstream output, which holds
    the sample until this layer accepts it in its last phase, so no input copy
    is needed. It has about ``taps / reuse`` multipliers shared by all its
    outputs (:meth:`DotStage.lanes`: packed, or in blocks that share their
    inputs and so one operand multiplexer); every output keeps its own
    accumulator, which wraps at its declared width like the reference.

    Built to close timing: each phase's operands are picked into registers
    (the DSP block's inputs), the products are registered (on ECP5, both inside
    the DSP block: :func:`accel.rtl.dsp.registered_product`), with reuse each
    output a lane serves copies the product into a register of its own (zeroed
    in the phases of the lane's other outputs), each output's products of the
    phase are summed by a tree with a register every ``levels_per_stage``
    levels and after the last, then accumulated; ReLU and the requantizer write
    the finished sum into an output queue. So the paths are: a multiplexer, a
    multiplier, a route, ``levels_per_stage`` adders, one adder and a
    multiplexer, the requantizer (into a result register, then the queue).
    Shared-input lanes (:attr:`DotStage.shared_inputs`) pick each block's input
    once, into a register that every lane of the block copies.

    The pipeline never stalls: no enable reaches its data registers, which take
    no reset (the accumulators load the bias in phase 0, which is also the idle
    phase). Back-pressure is met
    by credits, as in :class:`accel.rtl.fabric.FabricLayer`: a sample's first
    phase starts while fewer than ``D`` (:attr:`DotStage.credits`) samples are
    inside the layer, and the queue holds ``D``, so nothing is dropped. ``D`` is
    what the layer's rate needs, not ``L + 1`` (``L`` = :attr:`DotStage.pipeline`):
    at reuse 16 two or three samples. A sample accepted at cycle ``f`` is readable at ``f + L``, as
    :class:`accel.perf.DataflowTiming` models it.
    """

    def elaborate(self, platform) -> Module:
        m = Module()
        st = self.stage
        r, k, w = st.reuse, st.levels_per_stage, st.acc.width
        depth = st.credits  # the samples the layer may hold (DotStage.credits)
        inside = Signal(range(depth + 1))  # started and not yet taken
        phase = Signal(range(max(r, 2)))
        # whether the phase is the last (phase == r - 1), kept in a register: it is the
        # producer's ``ready``, which reaches every slice of its queue (the phase ->
        # compare -> a slice's read pointer was the autoencoder's critical path at reuse
        # 16, 11.4 of 12.4 ns routing)
        last = Signal(name="last") if r > 1 else Const(1)
        ok, go, take = Signal(), Signal(), Signal()
        m.d.comb += [
            ok.eq((phase != 0) | (inside < depth)),  # a sample starts only on a credit
            go.eq(self.i.valid & ok),
            # in the last phase ``ok`` holds (the phase is not 0): ready is the register
            self.i.ready.eq(last if r > 1 else ok),
            take.eq(self.o.valid & self.o.ready),
        ]
        # a take counts ``credit_delay`` cycles late: with reuse, through the registers
        # that tell the lanes of it (below)
        takes = [take]
        for n in range(st.credit_delay):
            takes.append(Signal(name=f"take_r{n}"))
            m.d.sync += takes[-1].eq(takes[-2])
        m.d.sync += inside.eq(inside + (go & (phase == 0)) - takes[-1])
        if r > 1:
            with m.If(go):
                m.d.sync += [phase.eq(Mux(last, 0, phase + 1)), last.eq(phase == r - 2)]

        def reg(value: Value, name: str) -> Signal:
            """A data register: loads every cycle, no reset."""
            value = Value.cast(value)
            out = Signal(value.shape(), name=name, reset_less=True)
            m.d.sync += out.eq(value)
            return out

        def flag(value: Value, name: str) -> Signal:
            out = Signal(name=name)
            m.d.sync += out.eq(value)
            return out

        # beside the data, per register level: whether it holds a sample's last phase
        ends = [go & last]

        # every lane keeps its own copy of the phase counter, and of its delays: one
        # counter fanned out to every lane's operand multiplexers was the layer's critical
        # path (12 ns of routing in 14), and copies with their own feedback are not merged
        # by synthesis. Phases are 0 while the layer is idle. Each copy also decides for
        # itself whether it moves on (the same ``go``, from its own phase): one ``go`` net
        # to every lane's counter was the critical path of the dense layer at reuse 16
        # (10.4 of 12.1 ns routing, from the phase through ``go`` to the credit counter).
        lanes = st.lanes()
        lane_phase: list[list[Value]] = []
        lane_go: list[Value] = []  # whether the lane's phase moves on (as ``go``)
        # Each lane also keeps its own count of the samples inside (the same as
        # ``inside``): one ``room`` net from the credit counter to every lane was the
        # whole autoencoder's critical path at reuse 16 (11.0 of 12.0 ns routing, lanes
        # from one edge of the die to the other). A take reaches them registered, then
        # as a toggle per group of lanes, each with its own feedback (so synthesis cannot
        # merge them back into one register), whose change is registered and then read
        # by the group's lanes: ``DotStage.credit_delay`` = 3 cycles, in the credits and
        # the cycle model. A group is a block of shared-input lanes (which sit around the
        # block's pick register), else 8 lanes in a row: a toggle -> its change (a LUT)
        # -> the counts of 8 lanes in a row was the whole autoencoder's critical path at
        # reuse 16 (9.9 of 10.9 ns routing, one lane 78 rows from the toggle).
        group_of: dict[tuple, int] = {}  # (block's inputs, run of the block) -> group
        in_block: Counter[tuple[int, ...]] = Counter()  # a block's lanes so far
        group = []  # per lane (a block's lanes in runs of at most 2 * CREDIT_GROUP)
        for j, lane in enumerate(lanes):
            key: tuple = ((), j // CREDIT_GROUP)
            if st.shared_inputs:
                seq = tuple(i for _, i, _ in lane)
                key = (seq, in_block[seq] // (2 * CREDIT_GROUP))
                in_block[seq] += 1
            group.append(group_of.setdefault(key, len(group_of)))
        seen: list[Value] = []
        # a take: registered, a toggle, its change registered: three cycles
        assert st.credit_delay == (3 if r > 1 else 0), "DotStage.credit_delay != the RTL's"
        for g in range(max(group) + 1 if r > 1 else 0):
            t, d = Signal(name=f"credit_t{g}"), Signal(name=f"credit_d{g}")
            change = Signal(name=f"credit_s{g}")
            m.d.sync += [t.eq(t ^ takes[1]), d.eq(t), change.eq(t ^ d)]
            seen.append(change)

        # and reads its own copy of the input's valid (lanes in runs, one copy each): one
        # valid from the producer's queue to every lane's count was the whole autoencoder's
        # critical path at reuse 16 (10.0 of 11.3 ns routing)
        n_valids = len(self.i_valids)

        def own_phase(name: str, j: int) -> tuple[Signal, Value]:
            """A copy of the phase counter with its own count of the samples inside,
            beside lane ``j``'s group; the copy and whether it moves on (as ``go``)."""
            c = Signal.like(phase, name=f"phase{name}")
            held = Signal.like(inside, name=f"inside{name}")
            valid = self.i_valids[j * n_valids // len(lanes)]
            moves = valid & ((c != 0) | (held < depth))
            m.d.sync += held.eq(held + (moves & (c == 0)) - seen[group[j]])
            with m.If(moves):
                m.d.sync += c.eq(Mux(c == r - 1, 0, c + 1))
            return c, moves

        for j in range(len(lanes)):
            if r == 1:
                lane_phase.append([Const(0)])
                continue
            c, moves = own_phase(str(j), j)
            lane_go.append(moves)
            lane_phase.append([c])
        # the producer's queue reads slice n on copy n of ``ready``: the last-phase flag
        # kept by the first lane of run n, from its own phase (the same as ``last``; the
        # conv layer's one ``last`` -> the UART bridge's input queue across the die was
        # the whole autoencoder's critical path at reuse 16, 7.0 of 10.0 ns routing)
        for n, ready in enumerate(self.i_readys):
            run = [j for j in range(len(lane_go)) if j * n_valids // len(lanes) == n]
            if not run:  # no lane reads copy n (reuse 1, or fewer lanes than copies)
                m.d.comb += ready.eq(self.i.ready)
                continue
            copy = Signal(name=f"last{n}")
            with m.If(lane_go[run[0]]):
                m.d.sync += copy.eq(lane_phase[run[0]][0] == r - 2)
            m.d.comb += ready.eq(copy)

        def step(name: str) -> None:
            """A register level: the last-phase flag and every lane's phase move one on."""
            ends.append(flag(ends[-1], f"{name}_end"))
            for j, copies in enumerate(lane_phase):
                if r > 1:
                    copies.append(reg(copies[-1], f"{name}_phase{j}"))

        # operands, then products: each lane multiplies one (input, weight) pair per phase.
        # Lanes that read the same inputs in the same phases (shared-input lanes: a block's
        # lanes, see DotStage.lanes) share one multiplexer into a register, copied into a
        # register per lane on its way to the multiplier's operand register (one register
        # driving a block's multipliers spread over the part's DSP rows was 13-14 ns of
        # routing, into fabric registers and into the DSP blocks' own alike). With
        # reuse > 1 the operand and product registers are the DSP block's own on ECP5
        # (accel.rtl.dsp), and each output a lane serves takes the product into a register
        # of its own, zeroed (a synchronous reset) in the phases that serve another output:
        # no gate between the products and the adder trees, and the route out of the DSP
        # block has a cycle to itself.
        x = self.i.payload
        inputs: dict[tuple[int, ...], Signal] = {}
        if st.shared_inputs:
            for j, lane in enumerate(lanes):
                seq = tuple(i for _, i, _ in lane)
                if seq not in inputs:
                    # the block's multiplexer has its own copy of the phase (a lane's,
                    # beside that lane's DSP block, -> the block's pick register was the
                    # whole autoencoder's critical path, 8.4 of 12.2 ns routing)
                    pad = [Const(0)] * (r - len(lane))
                    bc, _ = own_phase(f"_block{len(inputs)}", j)
                    picked = select([x[i] for i in seq] + pad, bc)
                    inputs[seq] = reg(picked, f"xs{len(inputs)}")
            step("pick")
            # a copy loads when its lane's phase moved one cycle before (the pick it takes
            # was a phase of a sample): the lanes' own decisions make the copies differ,
            # so synthesis cannot merge them back into one register (it merges registers
            # with the same input, and a keep attribute does not stop it). A copy that
            # holds instead repeats phase 0 of an idle layer, which only reloads the bias.
            copies = {}
            for j, lane in enumerate(lanes):
                picked = inputs[tuple(i for _, i, _ in lane)]
                copies[j] = Signal(picked.shape(), name=f"x{j}", reset_less=True)
                with m.If(flag(lane_go[j], f"moved{j}")):
                    m.d.sync += copies[j].eq(picked)
            step("copy")
        elif r > 1:
            # packed: each lane's own multiplexer picks into a register, so the route to
            # the DSP block starts at a register (the input -> the multiplexer -> a DSP
            # block across the part was the whole autoencoder's critical path at reuse
            # 16, 10.1 of 11.9 ns routing)
            copies = {}
            for j, lane in enumerate(lanes):
                pad = [Const(0)] * (r - len(lane))
                seq = [x[i] for _, i, _ in lane] + pad
                copies[j] = reg(select(seq, lane_phase[j][0]), f"xp{j}")
            step("pick")
        served: dict[int, list[Value]] = defaultdict(list)
        first_lane: dict[int, int] = {}  # an output's first lane, whose phase copy it reads
        if r == 1:  # constant weights: an input register, the product's register
            for j, ((o, i, wt),) in enumerate(lanes):
                first_lane.setdefault(o, j)
                served[o].append(reg(reg(x[i], f"x{j}") * wt, f"p{j}"))
            step("op")
            step("prod")
        else:
            products, serving = [], []
            for j, lane in enumerate(lanes):
                seq, ph = tuple(i for _, i, _ in lane), lane_phase[j][-1]
                pad = [Const(0)] * (r - len(lane))
                a = copies[j]
                weight = select([Const(wt) for _, _, wt in lane] + pad, ph)
                products.append(registered_product(m, a, weight, f"m{j}", platform))
                phases: dict[int, list[int]] = defaultdict(list)
                for p, (o, _, _) in enumerate(lane):
                    if o >= 0:  # an idle phase: its weight is 0
                        phases[o].append(p)
                alone = len(phases) == 1
                serving.append({
                    o: None if alone else Cat(*(ph == p for p in ps)).any()
                    for o, ps in phases.items()
                })  # fmt: skip
            step("op")
            step("prod")
            for j, prod in enumerate(products):
                for o, g in serving[j].items():
                    first_lane.setdefault(o, j)
                    if g is not None:  # whether the product is this output's: 2 registers on
                        g = flag(flag(g, f"g{j}_{o}_op"), f"g{j}_{o}")
                    served[o].append(reg(prod if g is None else Mux(g, prod, 0), f"p{j}_{o}"))
            step("gate")

        # each output's products of the phase, summed by a tree: every output's tree is
        # as deep as the deepest (st.phase_levels), with a register every k levels and
        # after the last, so all outputs' sums arrive together
        def wrap(v: Value) -> Value:
            return v[:w].as_signed() if len(v) > w else v

        level = dict(served)
        levels = st.phase_levels
        for lv in range(levels):
            level = {
                o: [wrap(a + b) for a, b in zip(t[0::2], t[1::2], strict=False)]
                + ([t[-1]] if len(t) % 2 else [])
                for o, t in level.items()
            }
            if (lv + 1) % k == 0 and lv + 1 < levels:
                level = {o: [reg(v, f"t{lv}_{o}_{i}") for i, v in enumerate(t)]
                         for o, t in level.items()}  # fmt: skip
                step(f"tree{lv}")
        assert all(len(t) == 1 for t in level.values())
        sums = {o: reg(t[0], f"ps{o}") for o, t in level.items()}
        step("sum")

        # the accumulators, with no enable: the bias and the phase sum in phase 0 (a
        # sample's first, or idle), the phase sum added after; the phase is the copy of
        # the output's first lane
        results = []
        for o in range(st.n_out):
            bias = Const(int(st.bias[o]), shape_of(st.acc))
            if o in sums:
                acc = Signal(shape_of(st.acc), name=f"acc{o}", reset_less=True)
                first = lane_phase[first_lane[o]][-1] == 0
                m.d.sync += acc.eq((Mux(first, bias, acc) + sums[o])[:w].as_signed())
                y: Value = acc
            else:
                y = bias
            y = Mux(y < 0, 0, y) if st.relu else y
            results.append(requantize(m, y, st.acc, st.quant, f"q{o}") if st.quant else y)
        # the accumulators hold a finished sample, then its result register does
        done = flag(flag(ends[-1], "done"), "result_valid")
        assert len(ends) - 1 + 4 == st.pipeline  # the flag's registers, acc, result, queue (2)

        out = Signal.like(self.o.payload, name="result")
        for o, y in enumerate(results):  # registered, but an output with no taps: a constant
            m.d.comb += out[o].eq(reg(y, f"res{o}") if o in sums else y)
        # the queue's head is a register (one cycle more): read straight from its
        # distributed RAM, the read pointer -> the RAM -> the next layer's input
        # multiplexers was the whole autoencoder's critical path (11.3 of 13.0 ns routing);
        # in slices, each its own control, as one head's enable to every bit was next
        # (10.96 of 11.72 ns routing, the conv layer at reuse 16)
        m.submodules.queue = queue = SlicedQueue(len(out.as_value()), depth)
        m.d.comb += [
            queue.w_en.eq(done),
            queue.w_data.eq(out),
            self.o.valid.eq(queue.r_rdy),
            self.o_valids.eq(queue.r_rdys),
            self.o.payload.eq(queue.r_data),
            queue.r_ens.eq(self.o_readys),  # slice k on copy k of the consumer's ready
        ]
        return m
