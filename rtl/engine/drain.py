"""The drain: bias, wrap, ReLU and requantize finished tiles, one word per cycle."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from accel.engine.config import EngineConfig
from accel.engine.isa import instruction_layout
from accel.rtl.engine.requant import Requantizer
from accel.rtl.fixed import select


def out_word(cfg: EngineConfig) -> data.ArrayLayout:
    """An output-stream word: ``group`` results, each a signed accumulator-width value."""
    return data.ArrayLayout(signed(cfg.acc_bits), cfg.group)


class Drain(wiring.Component):
    """Empties the array's result registers while the next tile computes.

    A tile of ``rows x cols`` results leaves as ``rows * cols / group`` words of
    ``group`` values, row by row: into the activation bank of its row (the next
    layer's input) or onto the output stream. Tiles arrive in the GEMM's order
    (column tile outer, row block inner), which sets their write addresses.
    A GEMM that computes offsets writes its words into the row's offset memory
    instead, at the same addresses.

    The pipeline never stalls (no enable on its registers): a word for the
    stream is picked only while it has a place in the output queue
    (:data:`QUEUE` words, counted from the pick), so back-pressure holds the
    pick, not the ``Requantizer.LATENCY`` registers behind it. A word leaves
    the pipeline straight onto the stream when the queue is empty (no cycle
    added) and waits in the queue otherwise.
    """

    QUEUE = 16  # words of the output queue (one LUT-RAM of 16 deep)

    def __init__(self, cfg: EngineConfig) -> None:
        self.cfg = cfg
        a_addr = max(1, (cfg.a_depth - 1).bit_length())
        super().__init__(
            {
                "instr": In(instruction_layout(cfg)),
                "start": In(1),  # a GEMM begins: reset the tile counters
                "select": Out(range(cfg.rows * (cfg.cols // cfg.group))),  # the word to read
                "word": In(data.ArrayLayout(signed(cfg.acc_bits), cfg.group)),
                "bias": In(data.ArrayLayout(signed(cfg.acc_bits), cfg.cols)),
                "offer": In(1),  # the array holds a finished tile this cycle
                "accept": Out(1),  # ... and may hand it over
                "busy": Out(1),
                "o": Out(stream.Signature(out_word(cfg))),
                "we": Out(cfg.rows),  # one write enable per activation bank
                "waddr": Out(unsigned(a_addr)),
                "wdata": Out(data.ArrayLayout(signed(cfg.a_bits), cfg.group)),
                "owe": Out(cfg.rows),  # one write enable per offset memory
                **(
                    {  # results into the weight buffer (attention's K^T and V)
                        "bwe": Out(1),
                        "baddr": Out(unsigned(max(1, cfg.b_depth.bit_length()))),
                    }
                    if cfg.vector
                    else {}
                ),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        words = cfg.cols // cfg.group
        p = self.instr
        active = Signal()
        row = Signal(range(max(cfg.rows, 2)))
        word = Signal(range(max(words, 2)))
        bias = Signal.like(self.bias)
        # tile position -> output address
        rb = Signal(unsigned(len(p.row_blocks)))
        row_addr = Signal.like(self.waddr)
        col_addr = Signal.like(self.waddr)

        # The pipeline: a word is picked (and its bias added) into stage 0, then
        # requantized (Requantizer.LATENCY registers); its writes and stream
        # handshake travel beside it. It always moves; a stream word is picked
        # only while the queue has a place for it (``full``: none left).
        full = Signal()
        step = Signal()
        final = Signal()
        m.d.comb += [
            step.eq(active & ~(p.to_stream & full)),
            final.eq(step & (row == cfg.rows - 1) & (word == words - 1)),
            self.accept.eq(~active | final),
        ]
        pos = Signal(range(cfg.rows * words))  # row * words + word
        m.d.comb += self.select.eq(pos)

        def reg(value, name: str) -> Signal:
            if not isinstance(value, data.View):
                value = Value.cast(value)
            r = Signal(value.shape(), name=name)
            m.d.sync += r.eq(value)
            return r

        lane = []
        for e in range(cfg.group):
            b = select([bias[k * cfg.group + e] for k in range(words)], word)
            if cfg.vector:  # a transposed tile leaves column ``row``: one bias for all lanes
                b = Mux(p.b_transpose, select(list(bias), row), b)
            rq = Requantizer(cfg)
            m.submodules[f"lane{e}"] = rq
            m.d.comb += [rq.instr.eq(p), rq.value.eq(reg(self.word[e] + b, f"v{e}"))]
            lane.append(rq.result)
        # the word's destination, beside it
        to_banks = ~p.to_stream & ~p.to_offsets
        if cfg.vector:
            to_banks &= ~p.to_b
        ctl = data.StructLayout(
            {
                "valid": 1,
                "we": len(self.we),
                "owe": len(self.owe),
                "waddr": len(self.waddr),
                **({"bwe": 1, "baddr": len(self.baddr)} if cfg.vector else {}),
            }
        )
        now = Signal(ctl)
        m.d.comb += [
            now.valid.eq(step),
            now.waddr.eq(row_addr + col_addr + word),
            now.we.eq(Mux(step & to_banks, 1 << row, 0)),
            now.owe.eq(Mux(step & p.to_offsets, 1 << row, 0)),
        ]
        if cfg.vector:
            b_row, b_col = Signal.like(self.baddr), Signal.like(self.baddr)
            m.d.comb += [
                now.bwe.eq(step & p.to_b),
                now.baddr.eq(p.bw_base + b_col + b_row + row),
            ]
            with m.If(final):
                with m.If(rb == p.row_blocks - 1):
                    m.d.sync += [b_row.eq(0), b_col.eq(b_col + p.bw_ct)]
                with m.Else():
                    m.d.sync += b_row.eq(b_row + p.bw_rb)
            with m.If(self.start):
                m.d.sync += [b_row.eq(0), b_col.eq(0)]
        stages = [now]
        for k in range(1 + Requantizer.LATENCY):
            stages.append(reg(stages[-1], f"ctl{k}"))
        out = stages[-1]
        result = Signal(out_word(cfg))
        for e, v in enumerate(lane):
            m.d.comb += [result[e].eq(v), self.wdata[e].eq(v)]

        # the output queue: words the stream has not taken wait here, in order
        n = self.QUEUE
        m.submodules.queue = queue = Memory(shape=out_word(cfg), depth=n, init=[])
        q_wr, q_rd = queue.write_port(), queue.read_port(domain="comb")
        head, tail = Signal(range(n)), Signal(range(n))
        held = Signal(range(n + 1))  # words in the queue
        used = Signal(range(n + 1))  # places taken: picked stream words not yet handed over
        arriving = Signal()
        m.d.comb += [
            arriving.eq(out.valid & p.to_stream),
            q_rd.addr.eq(head),
            q_wr.addr.eq(tail),
            q_wr.data.eq(result),
            self.o.valid.eq(arriving | (held != 0)),
            self.o.payload.eq(Mux(held != 0, q_rd.data, result)),
            # an arriving word waits if older words do or the stream does not take it
            q_wr.en.eq(arriving & ((held != 0) | ~self.o.ready)),
        ]
        pop = Signal()
        m.d.comb += pop.eq((held != 0) & self.o.ready)
        with m.If(q_wr.en):
            m.d.sync += tail.eq(tail + 1)
        with m.If(pop):
            m.d.sync += head.eq(head + 1)
        m.d.sync += held.eq(held + q_wr.en - pop)
        taken = self.o.valid & self.o.ready
        used_next = Signal.like(used)
        m.d.comb += used_next.eq(used + (step & p.to_stream) - taken)
        m.d.sync += [used.eq(used_next), full.eq(used_next >= n)]

        m.d.comb += [
            self.busy.eq(active | Cat(s.valid for s in stages[1:]).any() | (held != 0)),
            self.we.eq(out.we),
            self.owe.eq(out.owe),
            self.waddr.eq(out.waddr),
        ]
        if cfg.vector:
            m.d.comb += [self.bwe.eq(out.bwe), self.baddr.eq(out.baddr)]

        with m.If(step):
            m.d.sync += [word.eq(word + 1), pos.eq(pos + 1)]
            with m.If(word == words - 1):
                m.d.sync += [word.eq(0), row.eq(row + 1)]
        with m.If(final):
            m.d.sync += [row.eq(0), pos.eq(0), active.eq(0)]
            with m.If(rb == p.row_blocks - 1):
                m.d.sync += [rb.eq(0), row_addr.eq(p.out_base), col_addr.eq(col_addr + words)]
            with m.Else():
                m.d.sync += [rb.eq(rb + 1), row_addr.eq(row_addr + p.out_stride)]
        with m.If(self.offer & self.accept):
            m.d.sync += [active.eq(1), bias.eq(self.bias)]
        with m.If(self.start):
            m.d.sync += [rb.eq(0), row_addr.eq(p.out_base), col_addr.eq(0)]
        return m
