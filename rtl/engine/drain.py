"""The drain: bias, wrap, ReLU and requantize finished tiles, one word per cycle."""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accel.engine.config import EngineConfig
from accel.engine.isa import instruction_layout
from accel.rtl.engine.requant import requantize


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

        step = Signal()
        final = Signal()
        m.d.comb += [
            self.busy.eq(active),
            step.eq(active & (~p.to_stream | self.o.ready)),
            final.eq(step & (row == cfg.rows - 1) & (word == words - 1)),
            self.accept.eq(~active | final),
        ]
        pos = Signal(range(cfg.rows * words))  # row * words + word
        m.d.comb += self.select.eq(pos)
        lane = []
        for e in range(cfg.group):
            b = Array(bias[k * cfg.group + e] for k in range(words))[word]
            if cfg.vector:  # a transposed tile leaves column ``row``: one bias for all lanes
                b = Mux(p.b_transpose, Array(bias)[row], b)
            lane.append(requantize(m, self.word[e] + b, p, cfg.acc_bits, f"lane{e}"))
        m.d.comb += [
            self.o.valid.eq(active & p.to_stream),
            self.waddr.eq(row_addr + col_addr + word),
        ]
        for e, v in enumerate(lane):
            m.d.comb += [self.o.payload[e].eq(v), self.wdata[e].eq(v)]
        to_banks = active & ~p.to_stream & ~p.to_offsets
        if cfg.vector:
            to_banks &= ~p.to_b
            b_row, b_col = Signal.like(self.baddr), Signal.like(self.baddr)
            m.d.comb += [
                self.bwe.eq(active & p.to_b),
                self.baddr.eq(p.bw_base + b_col + b_row + row),
            ]
            with m.If(final):
                with m.If(rb == p.row_blocks - 1):
                    m.d.sync += [b_row.eq(0), b_col.eq(b_col + p.bw_ct)]
                with m.Else():
                    m.d.sync += b_row.eq(b_row + p.bw_rb)
            with m.If(self.start):
                m.d.sync += [b_row.eq(0), b_col.eq(0)]
        with m.If(to_banks):
            m.d.comb += self.we.eq(1 << row)
        with m.If(active & p.to_offsets):
            m.d.comb += self.owe.eq(1 << row)

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
