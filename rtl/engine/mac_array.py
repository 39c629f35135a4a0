"""The P x Q multiply-accumulate array with an index-driven N:M sparse mode."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from accel.engine.config import EngineConfig
from accel.rtl.dsp import dsp_sites, registered_product
from accel.rtl.engine.drain import select_bits, select_code
from accel.rtl.fixed import select


def skewed(cfg: EngineConfig) -> bool:
    """Whether row ``p`` runs ``p`` cycles behind row 0 (see :class:`MacArray`).

    The vector engine reads finished tiles by column too (K^T), which needs
    every row's sums at once, so its rows run in step.
    """
    return not cfg.vector


def floorplan(cfg: EngineConfig, sites: list[list[str]] | None) -> dict | None:
    """PE ``(p, q)`` -> the multiplier site its DSP block takes, or None (the placer's
    choice) when ``sites`` (:func:`accel.rtl.dsp.dsp_sites`) are unknown or too few.

    Left to itself, nextpnr packs the array's multipliers into a few neighbouring
    stretches of DSP rows, and the logic around them (operand, product,
    accumulator and result registers, crossbars, read-out) overfills the routing
    there. The plan spreads the array over every DSP row: PE rows in bands (a row's
    activations stay local), a band's PEs on every other site, the bands snaking
    from one DSP row to the next so that row ``p``'s weights pass a band's width
    to row ``p + 1``'s.
    """
    if not sites:
        return None
    per = -(-cfg.rows // len(sites))  # PE rows per DSP row
    if per * cfg.cols > min(len(r) for r in sites):
        return None
    plan = {}
    for p in range(cfg.rows):
        r, k = divmod(p, per)
        here = min(per, cfg.rows - r * per)  # PE rows in this DSP row
        band = len(sites[r]) // here
        start = (k if r % 2 == 0 else here - 1 - k) * band
        for q in range(cfg.cols):
            plan[p, q] = sites[r][start + (2 * q + 1) * band // (2 * cfg.cols)]
    return plan


class MacArray(wiring.Component):
    """Output-stationary array: PE (p, q) accumulates ``C[p, q]`` over one tile.

    Every cycle row ``p`` sees a whole group of ``group`` activations and
    column ``q`` one weight with its index in the group; each PE picks its
    activation with a ``group``-to-1 multiplexer driven by the column's index,
    so a group whose weights keep ``n`` of ``group`` takes ``n`` cycles. In dense
    mode the index is the step within the group.

    Six pipeline stages: the inputs (buffer outputs) are registered; each
    row's crossbar (the ``cols`` multiplexers of its PEs, beside the row's
    input register) picks every PE's activation into a register; the PE's DSP
    block takes it and the weight into its own input registers, and registers
    the product (:func:`accel.rtl.dsp.registered_product`: on ECP5 both are
    inside the MULT18X18D, so fewer fabric flip-flops crowd the DSP rows and the
    route into the block has a cycle to itself); a fabric register takes the
    product (the route out of the block has its cycle too, so the accumulator
    need not sit beside the DSP block); then the products are accumulated. On a
    tile's last step the finished sums move to the drain registers, read out a
    word at a time through ``select``/``word`` (``word`` is registered: the one
    selected the cycle before), and the accumulators clear (a reset that wins
    over the enable, so the flip-flops' LSR, no multiplexer) for the next
    tile, so tiles run back to back.

    Systolic rows (:func:`skewed`): row ``p`` runs ``p`` cycles behind row 0.
    Its activations arrive ``p`` cycles late (the engine delays the row's bank
    address), and the weights, their indices and the step's flags pass down
    each column from PE to PE, a register per row; so every control signal
    (the accumulators' enable and clear) is a register of the row's own,
    driving 8 PEs instead of 64, and each weight register drives one DSP
    block and the next row's register. Row ``p``'s sums are ready ``p`` cycles
    after row 0's, and the drain reads the rows in order, a cycle (``cols /
    group`` words) each, so it never waits for them.

    On a part whose DSP sites are known, the multipliers are placed by
    :func:`floorplan`.

    The array never stalls: the engine issues a tile's last step only when the
    drain will be free to take its sums (``finishing``).
    """

    # input, crossbar, PE (the DSP block's operand registers), the DSP block's product
    # and the fabric's product registers; then the accumulators
    LATENCY = 5

    def __init__(self, cfg: EngineConfig) -> None:
        self.cfg = cfg
        p, q, g = cfg.rows, cfg.cols, cfg.group
        super().__init__(
            {
                # row p's activations (p cycles after row 0's when skewed)
                "a": In(data.ArrayLayout(data.ArrayLayout(signed(cfg.pe_a_bits), g), p)),
                "w": In(data.ArrayLayout(signed(cfg.b_bits), q)),
                "idx": In(data.ArrayLayout(unsigned(cfg.idx_bits), q)),
                "valid": In(1),
                "first": In(1),
                "last": In(1),
                # the finished tile, read out one word of ``group`` sums at a time
                # per lane: row * (cols / group) + word, coded (``drain.select_code``)
                "select": In(data.ArrayLayout(select_bits(cfg), g)),
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
                "finishing": Out(1),  # row 0's accumulators take a tile's last step
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        plan = floorplan(cfg, dsp_sites(platform))

        def reg(value, name: str, flag: bool = False):
            """A pipeline register; only the step's flags take the reset (data need
            none, and a reset fanned out to every register is a net the size of the
            array)."""
            if not isinstance(value, data.View):
                value = Value.cast(value)
            r = Signal(value.shape(), name=name, reset_less=not flag)
            m.d.sync += r.eq(value)
            return r

        # stage 1: the inputs; stage x: the crossbars' picks; stage a: the DSP blocks'
        # operands; stage p: their products; stage 2: the fabric's products; then the
        # accumulators
        valid1, last1 = reg(self.valid, "valid1", True), reg(self.last, "last1", True)
        a1, w1, idx1 = reg(self.a, "a1"), reg(self.w, "w1"), reg(self.idx, "idx1")
        wx = reg(w1, "wx")
        # per row: (valid, last, index) at stage 1 and the weights at stage x (the
        # DSP blocks' B registers take them to stage a), passed down from the row
        # above when skewed: row p's weights are row p - 1's, a register later
        rows = []
        for p in range(cfg.rows):
            if p == 0 or not skewed(cfg):
                if p == 0:
                    first_row = (valid1, last1, idx1, wx)
                rows.append(first_row)
                continue
            v, la, ix, wp = rows[-1]
            rows.append(
                (reg(v, f"valid1_r{p}", True), reg(la, f"last1_r{p}", True),
                 reg(ix, f"idx1_r{p}"), reg(wp, f"w2_r{p}" if p > 1 else "w2"))
            )  # fmt: skip
        busy = []
        words = cfg.cols // cfg.group
        cells: list[list[Signal]] = [[] for _ in range(cfg.group)]  # per lane, in select order
        finished: list[list[Signal]] = [[] for _ in range(cfg.rows)]  # [p][q]
        flags = {}
        for p in range(cfg.rows):
            v1, l1, ix1, wp = rows[p]
            key = id(v1)
            if key not in flags:
                vx, lx = reg(v1, f"valid_x{p}", True), reg(l1, f"last_x{p}", True)
                va, la = reg(vx, f"valid_a{p}", True), reg(lx, f"last_a{p}", True)
                vp, lp = reg(va, f"valid_p{p}", True), reg(la, f"last_p{p}", True)
                # stage 2: the step's product, in the DSP block's register, then in
                # the fabric's; its accumulators take it
                v2, fin = reg(vp, f"valid2_{p}", True), reg(vp & lp, f"finish{p}", True)
                # the accumulators' clear: the tile's end, and the reset (so the
                # accumulators need none of their own)
                clr = Signal(name=f"clear{p}", init=1)
                m.d.sync += clr.eq(vp & lp)
                flags[key] = (v2, fin, clr)
                busy += [v1, vx, va, vp, v2]
                if p == 0:
                    m.d.comb += self.finishing.eq(fin)
            v2, fin, clr = flags[key]
            # one signal per activation: a multiplexer over small signals, not a
            # variable shift of the whole (wide) group word
            group = [Signal(signed(cfg.pe_a_bits), name=f"g_{p}_{e}") for e in range(cfg.group)]
            m.d.comb += [x.eq(a1[p][e]) for e, x in enumerate(group)]
            for q in range(cfg.cols):
                # the row's crossbar picks the PE's activation; the DSP block's
                # own registers take it and the weight (stage a), then the product
                x = reg(select(group, ix1[q]), f"x_{p}_{q}")
                product = registered_product(
                    m, x, wp[q], f"dsp_{p}_{q}", platform, plan and plan[p, q]
                )
                prod = reg(product, f"prod_{p}_{q}")
                acc = Signal(signed(cfg.acc_bits), name=f"acc_{p}_{q}", reset_less=True)
                total = Signal(signed(cfg.acc_bits), name=f"sum_{p}_{q}")
                done = Signal(signed(cfg.acc_bits), name=f"done_{p}_{q}", reset_less=True)
                cells[q % cfg.group].append(done)
                finished[p].append(done)
                m.d.comb += total.eq((prod + acc)[: cfg.acc_bits].as_signed())
                # the clear is written over the enable (a reset that wins over the
                # enable), so yosys maps it to the flip-flops' LSR, not a LUT per bit
                with m.If(clr):
                    m.d.sync += acc.eq(0)
                with m.Elif(v2):
                    m.d.sync += acc.eq(total)
                with m.If(fin):
                    m.d.sync += done.eq(total)
        m.d.comb += self.busy.eq(Cat(*busy).any())
        # cells[e] is ordered (p, q // group), which is the select order
        assert all(len(c) == cfg.rows * words for c in cells)
        for e, lane in enumerate(cells):
            k = select_code(cfg, e)  # lane e's select is the word's index ^ k
            coded = [lane[i ^ k] if i ^ k < len(lane) else 0 for i in range(1 << select_bits(cfg))]
            m.d.sync += self.word[e].eq(select(coded, self.select[e]))
        if cfg.vector:
            for p in range(cfg.rows):
                m.d.sync += self.tword[p].eq(select(finished[p], self.tselect))
        return m
