"""The drain: bias, wrap, ReLU and requantize finished tiles, one word per cycle."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from accel.engine.config import EngineConfig
from accel.engine.cycles import reduce_latency
from accel.engine.isa import Deform, instruction_layout
from accel.rtl.engine.requant import Requantizer
from accel.rtl.fixed import select


def queue_words(cfg: EngineConfig) -> int:
    """Words of the drain's output queue, a power of two.

    Enough that a free-flowing stream never holds the issue stage: a tile's
    words are reserved from its last step's issue, and word ``w`` leaves
    ``L + w`` cycles later (``L = ISSUE_TO_DRAIN + 1 + DRAIN_LATENCY``); tiles
    are at least a tile's words apart, so at most ``L`` words of earlier tiles
    are still held when a tile asks for its own.
    """
    from accel.engine.cycles import DRAIN_LATENCY, ISSUE_TO_DRAIN

    tile = cfg.rows * (cfg.cols // cfg.group)
    need = ISSUE_TO_DRAIN + 1 + DRAIN_LATENCY + tile
    return 1 << (need - 1).bit_length()


def select_bits(cfg: EngineConfig) -> int:
    """Bits of the array's read-out select: a word of a finished tile (row * words + word)."""
    return max(1, (cfg.rows * (cfg.cols // cfg.group) - 1).bit_length())


def select_code(cfg: EngineConfig, lane: int) -> int:
    """The mask lane ``lane``'s copy of the read-out select is kept in: word ``i`` is
    ``i ^ select_code(cfg, lane)``. One register per lane instead of one for all
    (each select bit fanned out to every bit of every lane was the array's most
    congested net); coded differently, so synthesis cannot merge the copies back."""
    return lane % (1 << select_bits(cfg))


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

    A reducing GEMM (``isa.Deform.OFFSETS``: an offset conv whose reduction is
    split across the columns) sums each word's ``group`` values in an adder tree,
    one register per level (``cycles.reduce_latency``), into lane 0's
    requantizer; result ``i`` of a row block (word ``w`` of column tile ``ct``,
    ``i = ct * cols / group + w``) leaves in lane 0 for lane ``i % group``
    (``olane``) of offset word ``i // group`` of the row's pixel.

    The drain never stalls (no enable on its registers): it takes a finished
    tile whenever the array offers one (the engine issues a tile's last step
    only when the drain will have emptied the tile before), and reads a word
    every cycle. Back-pressure on the stream is met by the output queue: the
    engine reserves a tile's words in it (``reserve``) when it issues the
    tile's last step, and only while ``room`` says they fit, so the queue
    never overflows and back-pressure holds the issue stage, not the
    ``Requantizer.LATENCY`` registers. A word leaves the pipeline straight
    onto the stream when the queue is empty (no cycle added) and waits in the
    queue otherwise.
    """

    def __init__(self, cfg: EngineConfig) -> None:
        self.cfg = cfg
        a_addr = max(1, (cfg.a_depth - 1).bit_length())
        super().__init__(
            {
                "instr": In(instruction_layout(cfg)),
                "start": In(1),  # a GEMM begins: reset the tile counters
                # the word to read, a copy per lane (:func:`select_code`)
                "select": Out(data.ArrayLayout(select_bits(cfg), cfg.group)),
                "word": In(data.ArrayLayout(signed(cfg.acc_bits), cfg.group)),
                "bias": In(data.ArrayLayout(signed(cfg.acc_bits), cfg.cols)),
                "offer": In(1),  # the array finishes a tile this cycle: take it
                "reserve": In(1),  # a stream tile's last step is issued: keep its words
                "room": Out(1),  # the queue has room for a tile's words
                "busy": Out(1),
                "o": Out(stream.Signature(out_word(cfg))),
                "we": Out(cfg.rows),  # one write enable per activation bank
                "waddr": Out(unsigned(a_addr)),
                "wdata": Out(data.ArrayLayout(signed(cfg.a_bits), cfg.group)),
                "owe": Out(cfg.rows),  # one write enable per offset memory
                "olane": Out(cfg.group),  # ... and the lanes of its word written
                "reducing": Out(1),  # a reducing GEMM: its results leave in lane 0
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
        bias = Signal.like(self.bias, reset_less=True)
        # tile position -> output address
        rb = Signal(unsigned(len(p.row_blocks)))
        row_addr = Signal.like(self.waddr)
        col_addr = Signal.like(self.waddr)

        # The pipeline: a word is picked (and its bias added) into stage 0, then
        # requantized (Requantizer.LATENCY registers); its writes and stream
        # handshake travel beside it. It always moves.
        step = Signal()
        final = Signal()
        m.d.comb += [
            step.eq(active),
            final.eq(step & (row == cfg.rows - 1) & (word == words - 1)),
        ]
        # the word to read (row * words + word), a copy per lane, lane e's XOR-coded
        codes = [select_code(cfg, e) for e in range(cfg.group)]
        copies = [Signal(select_bits(cfg), name=f"select{e}", init=c) for e, c in enumerate(codes)]
        m.d.comb += [self.select[e].eq(c) for e, c in enumerate(copies)]

        def reg(value, name: str, flag: bool = False) -> Signal:
            """A pipeline register; data take no reset (only the flags beside them)."""
            if not isinstance(value, data.View):
                value = Value.cast(value)
            r = Signal(value.shape(), name=name, reset_less=not flag)
            m.d.sync += r.eq(value)
            return r

        # a reducing GEMM (the split offset conv), decoded a cycle after the instruction
        # (its first word comes many later)
        reduce = Signal()
        m.d.sync += reduce.eq(p.deform == Deform.OFFSETS)
        m.d.comb += self.reducing.eq(reduce)
        lane, biased = [], []
        for e in range(cfg.group):
            b = select([bias[k * cfg.group + e] for k in range(words)], word)
            if cfg.vector:  # a transposed tile leaves column ``row``: one bias for all lanes
                b = Mux(p.b_transpose, select(list(bias), row), b)
            # the array's word is the one selected a cycle ago: the bias waits a cycle too
            biased.append(self.word[e] + reg(b, f"bias_read{e}"))
        # reducing GEMMs: the word's sum, an adder tree registered at every level but
        # the last, whose sum enters lane 0's register in place of the lane's value
        vwidth = cfg.acc_bits + 1  # the requantizer keeps the low acc_bits bits: sums wrap

        def add(terms):
            return sum(terms[1:], terms[0])[:vwidth].as_signed()

        extra = reduce_latency(cfg)
        v = [None] + [reg(x, f"v{e}") for e, x in enumerate(biased) if e]
        level = [reg(biased[0], "u0"), *v[1:]]  # lane 0's value again, for the tree
        depth = 0
        while len(level) > 2:
            level = [
                reg(add(level[i : i + 2]), f"tree{depth}_{i // 2}") for i in range(0, len(level), 2)
            ]
            depth += 1
        assert depth + 1 == extra or cfg.group == 1
        v[0] = reg(Mux(reduce, add(level), biased[0]) if cfg.group > 1 else biased[0], "v0")
        for e in range(cfg.group):
            rq = Requantizer(cfg)
            m.submodules[f"lane{e}"] = rq
            m.d.comb += [rq.instr.eq(p), rq.value.eq(v[e])]
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
                "olane": len(self.olane),
                "waddr": len(self.waddr),
                **({"bwe": 1, "baddr": len(self.baddr)} if cfg.vector else {}),
            }
        )
        # a reducing GEMM's result: its lane and word in the pixel's offset words, at the
        # column tile's first result (``t_``) plus the word in the row (``o_``)
        lanes = range(max(cfg.group, 2))
        t_lane, t_word = Signal(lanes), Signal.like(self.waddr)
        o_lane, o_word = Signal(lanes), Signal.like(self.waddr)
        now = Signal(ctl)
        m.d.comb += [
            now.valid.eq(step),
            now.waddr.eq(row_addr + Mux(reduce, o_word, col_addr + word)),
            now.we.eq(Mux(step & to_banks, 1 << row, 0)),
            now.owe.eq(Mux(step & p.to_offsets, 1 << row, 0)),
            now.olane.eq(Mux(reduce, 1 << o_lane, (1 << cfg.group) - 1)),
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
        # the word's controls, a cycle later: beside the array's registered read-out
        read = reg(now, "ctl_read", True)
        # a reducing GEMM's words take ``extra`` registers more (its valid flags are
        # zero otherwise)
        late = Signal(ctl)
        m.d.comb += [late.eq(read), late.valid.eq(read.valid & reduce)]
        delayed = [late]
        for k in range(extra):
            delayed.append(reg(delayed[-1], f"ctl_reduce{k}", True))
        picked = Signal(ctl)
        m.d.comb += picked.eq(Mux(reduce, delayed[-1], read))
        stages = [read, reg(picked, "ctl0", True)]
        for k in range(1, 1 + Requantizer.LATENCY):
            stages.append(reg(stages[-1], f"ctl{k}", True))
        stages += delayed[1:]  # for ``busy``
        out = stages[1 + Requantizer.LATENCY]
        result = Signal(out_word(cfg))
        for e, x in enumerate(lane):
            m.d.comb += [result[e].eq(x), self.wdata[e].eq(x)]

        # the output queue: words the stream has not taken wait here, in order. A
        # block RAM with a registered read and an output register, as amaranth's
        # SyncFIFOBuffered: ``n - 1`` words in the RAM, the head in its read register
        # (as LUT RAM, whose read is asynchronous, the board flow's abc9 failed an
        # assertion in ABC_OPS_REINTEGRATE)
        n = queue_words(cfg)
        m.submodules.queue = queue = Memory(
            shape=out_word(cfg), depth=n - 1, init=[], attrs={"ram_style": "block"}
        )
        q_wr, q_rd = queue.write_port(), queue.read_port(domain="sync")
        w_at, r_at = Signal(range(n - 1)), Signal(range(n - 1))
        inner = Signal(range(n))  # words in the RAM
        head = Signal()  # the RAM's read register holds the queue's head
        held = Signal()  # words wait (in the RAM or the head)
        free = Signal(range(n + 1), init=n)  # places not reserved
        arriving = Signal()
        fetch = Signal()
        m.d.comb += [
            arriving.eq(out.valid & p.to_stream),
            held.eq(head | (inner != 0)),
            # an arriving word waits if older words do or the stream does not take it
            q_wr.en.eq(arriving & (held | ~self.o.ready)),
            q_wr.addr.eq(w_at),
            q_wr.data.eq(result),
            self.o.valid.eq(Mux(held, head, arriving)),
            self.o.payload.eq(Mux(held, q_rd.data, result)),
            fetch.eq((inner != 0) & (~head | self.o.ready)),
            q_rd.addr.eq(r_at),
            q_rd.en.eq(fetch),
        ]
        with m.If(q_wr.en):
            m.d.sync += w_at.eq(Mux(w_at == n - 2, 0, w_at + 1))
        with m.If(fetch):
            m.d.sync += r_at.eq(Mux(r_at == n - 2, 0, r_at + 1))
        m.d.sync += inner.eq(inner + q_wr.en - fetch)
        with m.If(fetch):
            m.d.sync += head.eq(1)
        with m.Elif(self.o.ready):
            m.d.sync += head.eq(0)
        taken = self.o.valid & self.o.ready
        tile = cfg.rows * words
        free_next = Signal.like(free)
        m.d.comb += free_next.eq(free + taken - Mux(self.reserve, tile, 0))
        room = Signal(init=1)
        m.d.sync += [free.eq(free_next), room.eq(free_next >= tile)]
        m.d.comb += self.room.eq(room)

        m.d.comb += [
            self.busy.eq(active | Cat(s.valid for s in stages).any() | held),
            self.we.eq(out.we),
            self.owe.eq(out.owe),
            self.olane.eq(out.olane),
            self.waddr.eq(out.waddr),
        ]
        if cfg.vector:
            m.d.comb += [self.bwe.eq(out.bwe), self.baddr.eq(out.baddr)]

        def plus(lane_, word_, k: int):
            """(lane, word) of the result ``k`` (a constant) after ``(lane_, word_)``."""
            s_lane = lane_ + k % cfg.group
            carry = s_lane >= cfg.group
            return (
                Mux(carry, s_lane - cfg.group, s_lane),
                word_ + k // cfg.group + carry,
            )

        with m.If(step):
            m.d.sync += word.eq(word + 1)
            m.d.sync += [c.eq(((c ^ k) + 1) ^ k) for c, k in zip(copies, codes, strict=True)]
            n_lane, n_word = plus(o_lane, o_word, 1)
            m.d.sync += [o_lane.eq(n_lane), o_word.eq(n_word)]
            with m.If(word == words - 1):
                # the next row (or tile of this column tile) starts at the tile's first
                m.d.sync += [word.eq(0), row.eq(row + 1), o_lane.eq(t_lane), o_word.eq(t_word)]
        with m.If(final):
            m.d.sync += [row.eq(0), active.eq(0)]
            m.d.sync += [c.eq(k) for c, k in zip(copies, codes, strict=True)]
            with m.If(rb == p.row_blocks - 1):
                m.d.sync += [rb.eq(0), row_addr.eq(p.out_base), col_addr.eq(col_addr + words)]
                n_lane, n_word = plus(t_lane, t_word, words)
                m.d.sync += [t_lane.eq(n_lane), t_word.eq(n_word)]
                m.d.sync += [o_lane.eq(n_lane), o_word.eq(n_word)]
            with m.Else():
                m.d.sync += [rb.eq(rb + 1), row_addr.eq(row_addr + p.out_stride)]
        with m.If(self.offer):
            m.d.sync += [active.eq(1), bias.eq(self.bias)]
        with m.If(self.start):
            m.d.sync += [rb.eq(0), row_addr.eq(p.out_base), col_addr.eq(0)]
            m.d.sync += [t_lane.eq(0), t_word.eq(0), o_lane.eq(0), o_word.eq(0)]
        return m
