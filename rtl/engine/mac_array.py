"""The P x Q multiply-accumulate array with an index-driven N:M sparse mode."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from accel.engine.config import EngineConfig
from accel.rtl.fixed import select


class MacArray(wiring.Component):
    """Output-stationary array: PE (p, q) accumulates ``C[p, q]`` over one tile.

    Every cycle row ``p`` sees a whole group of ``group`` activations and
    column ``q`` one weight with its index in the group; each PE picks its
    activation with a ``group``-to-1 multiplexer driven by the column's index,
    so a group whose weights keep ``n`` of ``group`` takes ``n`` cycles. In dense
    mode the index is the step within the group.

    Five pipeline stages: the inputs (buffer outputs) are registered; each
    row's crossbar (the ``cols`` multiplexers of its PEs, beside the row's
    input register) picks every PE's activation into a register; a second
    register per PE carries it to the PE's DSP block (no logic between the two,
    so the placer can put the first beside the crossbar and the second beside
    the DSP: the 72 wires of a row's group stay local, and each DSP sees 9);
    the products are registered, then accumulated. On a tile's last step the
    finished sums move to the drain registers, read out a word at a time
    through ``select``/``word``, and the accumulators clear (a synchronous
    reset, so accumulating needs no multiplexer) for the next tile, so tiles
    run back to back. ``stall`` freezes every stage.
    """

    # input, crossbar, PE and product registers; then the accumulators
    LATENCY = 4

    def __init__(self, cfg: EngineConfig) -> None:
        self.cfg = cfg
        p, q, g = cfg.rows, cfg.cols, cfg.group
        super().__init__(
            {
                "a": In(data.ArrayLayout(data.ArrayLayout(signed(cfg.pe_a_bits), g), p)),
                "w": In(data.ArrayLayout(signed(cfg.b_bits), q)),
                "idx": In(data.ArrayLayout(unsigned(cfg.idx_bits), q)),
                "valid": In(1),
                "first": In(1),
                "last": In(1),
                "stall": In(1),
                # the finished tile, read out one word of ``group`` sums at a time
                "select": In(range(p * (q // g))),  # row * (cols / group) + word
                "word": Out(data.ArrayLayout(signed(cfg.acc_bits), g)),
                **(
                    {  # the finished tile's column ``tselect`` (rows == group), for K^T
                        "tselect": In(range(q)),
                        "tword": Out(data.ArrayLayout(signed(cfg.acc_bits), g)),
                    }
                    if cfg.vector
                    else {}
                ),
                "busy": Out(1),  # a step is in flight
                "finishing": Out(1),  # the accumulate stage holds a tile's last step
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        go = ~self.stall

        def reg(value, name: str):
            if not isinstance(value, data.View):
                value = Value.cast(value)
            r = Signal(value.shape(), name=name)
            with m.If(go):
                m.d.sync += r.eq(value)
            return r

        # stage 1: the inputs; stage x: the crossbars' picks; stage a: each PE's
        # activation; stage 2: the products; then the accumulators
        valid1, last1 = reg(self.valid, "valid1"), reg(self.last, "last1")
        a1, w1, idx1 = reg(self.a, "a1"), reg(self.w, "w1"), reg(self.idx, "idx1")
        valid_x, last_x, wx = reg(valid1, "valid_x"), reg(last1, "last_x"), reg(w1, "wx")
        valid_a, last_a, w2 = reg(valid_x, "valid_a"), reg(last_x, "last_a"), reg(wx, "w2")
        valid2, last2 = reg(valid_a, "valid2"), reg(last_a, "last2")
        m.d.comb += [
            self.busy.eq(valid1 | valid_x | valid_a | valid2),
            self.finishing.eq(valid2 & last2),
        ]
        finish = Signal()
        m.d.comb += finish.eq(go & valid2 & last2)
        words = cfg.cols // cfg.group
        cells: list[list[Signal]] = [[] for _ in range(cfg.group)]  # per lane, in select order
        finished: list[list[Signal]] = [[] for _ in range(cfg.rows)]  # [p][q]
        for p in range(cfg.rows):
            # one signal per activation: a multiplexer over small signals, not a
            # variable shift of the whole (wide) group word
            group = [Signal(signed(cfg.pe_a_bits), name=f"g_{p}_{e}") for e in range(cfg.group)]
            m.d.comb += [x.eq(a1[p][e]) for e, x in enumerate(group)]
            for q in range(cfg.cols):
                # the row's crossbar picks the PE's activation; a second register
                # carries it to the DSP block
                x = reg(select(group, idx1[q]), f"x_{p}_{q}")
                a = reg(x, f"a_{p}_{q}")
                prod = reg(a * w2[q], f"prod_{p}_{q}")
                acc = Signal(signed(cfg.acc_bits), name=f"acc_{p}_{q}")
                total = Signal(signed(cfg.acc_bits), name=f"sum_{p}_{q}")
                done = Signal(signed(cfg.acc_bits), name=f"done_{p}_{q}")
                cells[q % cfg.group].append(done)
                finished[p].append(done)
                m.d.comb += total.eq((prod + acc)[: cfg.acc_bits].as_signed())
                # the clear is written over the enable (a reset that wins over the
                # enable), so yosys maps it to the flip-flops' LSR, not a LUT per bit
                with m.If(finish):
                    m.d.sync += [done.eq(total), acc.eq(0)]
                with m.Elif(go & valid2):
                    m.d.sync += acc.eq(total)
        # cells[e] is ordered (p, q // group), which is the select order
        assert all(len(c) == cfg.rows * words for c in cells)
        for e, lane in enumerate(cells):
            m.d.comb += self.word[e].eq(select(lane, self.select))
        if cfg.vector:
            for p in range(cfg.rows):
                m.d.comb += self.tword[p].eq(select(finished[p], self.tselect))
        return m
