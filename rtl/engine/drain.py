"""The drain: bias, wrap, ReLU and requantize finished tiles, one word per cycle."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
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
    """

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
        # handshake travel beside it. Everything moves unless the output stream
        # holds a word it cannot hand over.
        o_valid = Signal()
        go = Signal()
        step = Signal()
        final = Signal()
        m.d.comb += [
            go.eq(~(o_valid & ~self.o.ready)),
            step.eq(active & go),
            final.eq(step & (row == cfg.rows - 1) & (word == words - 1)),
            self.accept.eq(~active | final),
        ]
        pos = Signal(range(cfg.rows * words))  # row * words + word
        m.d.comb += self.select.eq(pos)

        def reg(value, name: str) -> Signal:
            if not isinstance(value, data.View):
                value = Value.cast(value)
            r = Signal(value.shape(), name=name)
            with m.If(go):
                m.d.sync += r.eq(value)
            return r

        lane = []
        for e in range(cfg.group):
            b = select([bias[k * cfg.group + e] for k in range(words)], word)
            if cfg.vector:  # a transposed tile leaves column ``row``: one bias for all lanes
                b = Mux(p.b_transpose, select(list(bias), row), b)
            rq = Requantizer(cfg)
            m.submodules[f"lane{e}"] = rq
            m.d.comb += [rq.instr.eq(p), rq.en.eq(go), rq.value.eq(reg(self.word[e] + b, f"v{e}"))]
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
        m.d.comb += [
            o_valid.eq(out.valid & p.to_stream),
            self.o.valid.eq(o_valid),
            self.busy.eq(active | Cat(s.valid for s in stages[1:]).any()),
            self.we.eq(out.we),
            self.owe.eq(out.owe),
            self.waddr.eq(out.waddr),
        ]
        if cfg.vector:
            m.d.comb += [self.bwe.eq(out.bwe), self.baddr.eq(out.baddr)]
        for e, v in enumerate(lane):
            m.d.comb += [self.o.payload[e].eq(v), self.wdata[e].eq(v)]

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
