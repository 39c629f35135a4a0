"""The vector unit: a transformer's integer non-linearities and residual adds, row-parallel.

Tensors sit in the activation banks as the GEMMs leave them: token ``p`` of a
row block in bank ``p``, its values in words of ``group`` lanes. So every bank
holds whole rows, and the unit works on ``vec_rows`` tokens of a row block at
once (all ``rows`` by default; fewer make it smaller and an instruction
``rows / vec_rows`` times longer), one word of each per cycle, each row with
its own statistics. The
arithmetic is :mod:`accel.intops`, bit for bit:

- ADD: ``(a << sh_a) + (b << sh_b)`` of two tensors (a second read port);
- GELU: ShiftGELU; its per-value division is sequential, one quotient bit
  per cycle in every lane (``sig_bits + 1`` cycles per word);
- SOFTMAX: Shiftmax in two passes: the first keeps the running maximum
  exponent and the exact running sum (Edge-MoE's single pass), a division per
  row follows, the second pass normalizes;
- LAYERNORM: three passes (sum; squared deviations; normalize and the affine
  with gamma and beta read from the bias buffer), a division for the mean,
  an integer square root and a division per row between them.

Row divisions and square roots are sequential, one result bit per cycle, with
iteration counts the compiler sets from the operand widths, so every
instruction takes a fixed number of cycles (:func:`vec_cycles`). Results go
through the same run-time requantizer as the GEMM drain.
"""

from __future__ import annotations

from amaranth.hdl import C, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from accel.engine.config import EngineConfig
from accel.engine.isa import VecOp, instruction_layout
from accel.engine.vector import GELU_MAX_SIG
from accel.intops import SOFTMAX_GUARD
from accel.rtl.engine.requant import requantize
from accel.rtl.fixed import named

WIDE = 64  # row statistics: the IR keeps every intermediate below 62 bits


def _sext(m: Module, v: Value, bits: int, name: str) -> Signal:
    s = Signal(signed(bits), name=name)
    m.d.comb += s.eq(v)
    return s


def exponent(m: Module, x: Value, frac: Value, name: str) -> tuple[Signal, Signal]:
    """``(k, mant)`` of the shift exponential of ``x`` (``intops.exp2_split``)."""
    t = _sext(m, x + (x >> 1) - (x >> 4), 40, f"{name}_t")
    k = named(m, (t >> frac)[:16].as_signed(), f"{name}_k")
    mask = ((C(1, 1) << frac) - 1)[:40]
    mant = named(m, ((C(1, 1) << frac) + (t.as_unsigned() & mask))[:26], f"{name}_mant")
    return k, mant


def shl(m: Module, v: Value, amount: Value, name: str, width: int = 64) -> Value:
    """``v << amount`` kept to ``width`` bits (the caller bounds the result).

    A barrel shifter of ``width``-bit stages: a plain variable shift is
    ``len(v) + 2**len(amount) - 1`` bits wide, which slows Verilator down
    (wide words) and means nothing in hardware.
    """
    shape = signed(width) if v.shape().signed else unsigned(width)
    out = Signal(shape, name=name)
    m.d.comb += out.eq(v)
    # each stage and the amount are named: an expression used twice is built twice, so
    # an unnamed stage doubles the netlist at every level (2**len(amount) multiplexers)
    amount = named(m, amount, f"{name}_by")
    stage: Value = out
    for i in range(len(amount)):
        stage = named(m, Mux(amount[i], (stage << (1 << i))[:width], stage[:width]), f"{name}_s{i}")
    return stage.as_signed() if shape.signed else stage


def bit_length(m: Module, v: Value, name: str) -> Signal:
    """A leading-one detector: ``int.bit_length`` of an unsigned value."""
    n = Signal(range(len(v) + 1), name=name)
    for i in range(len(v)):
        with m.If(v[i]):
            m.d.comb += n.eq(i + 1)
    return n


class RowDivider(wiring.Component):
    """``floor(a / b)`` of unsigned values, one quotient bit per cycle (restoring).

    ``n`` iterations consume the dividend's bits ``n - 1`` down to 0; the
    dividend must be below ``2**n`` and the divisor positive.
    """

    def __init__(self, a_bits: int, b_bits: int) -> None:
        self.a_bits, self.b_bits = a_bits, b_bits
        super().__init__(
            {
                "start": In(1),
                "a": In(a_bits),
                "b": In(b_bits),
                "n": In(range(a_bits + 1)),
                "step": In(1),
                "q": Out(a_bits),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        dvd = Signal(self.a_bits)
        div = Signal(self.b_bits)
        rem = Signal(self.b_bits + 1)
        i = Signal(range(self.a_bits + 1))
        trial = Signal(self.b_bits + 2)
        m.d.comb += trial.eq((rem << 1) | dvd.bit_select((i - 1).as_unsigned(), 1))
        with m.If(self.start):
            m.d.sync += [dvd.eq(self.a), div.eq(self.b), rem.eq(0), i.eq(self.n)]
            m.d.sync += self.q.eq(0)
        with m.Elif(self.step & (i != 0)):
            take = trial >= div
            m.d.sync += [
                rem.eq(Mux(take, trial - div, trial)),
                self.q.eq((self.q << 1) | take),
                i.eq(i - 1),
            ]
        return m


class RowSqrt(wiring.Component):
    """``floor(sqrt(v))`` digit by digit, ``n`` result bits (``v < 4**n``)."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        super().__init__(
            {
                "start": In(1),
                "v": In(bits),
                "n": In(range(bits // 2 + 2)),
                "step": In(1),
                "root": Out(bits),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        rem = Signal(self.bits)
        bit = Signal(self.bits)
        trial = Signal(self.bits + 1)
        m.d.comb += trial.eq(self.root + bit)
        with m.If(self.start):
            m.d.sync += [
                rem.eq(self.v),
                self.root.eq(0),
                bit.eq(Mux(self.n == 0, 0, C(1, 1) << ((self.n << 1) - 2).as_unsigned())),
            ]
        with m.Elif(self.step & (bit != 0)):
            take = rem >= trial
            with m.If(take):
                m.d.sync += [rem.eq(rem - trial), self.root.eq((self.root >> 1) + bit)]
            with m.Else():
                m.d.sync += self.root.eq(self.root >> 1)
            m.d.sync += bit.eq(bit >> 2)
        return m


class VectorUnit(wiring.Component):
    """Runs one VEC instruction over the banks; ``busy`` until its last write."""

    def __init__(self, cfg: EngineConfig) -> None:
        self.cfg = cfg
        a_addr = max(1, (cfg.a_depth - 1).bit_length())
        c_addr = max(1, (cfg.bias_depth - 1).bit_length())
        words = data.ArrayLayout(data.ArrayLayout(signed(cfg.a_bits), cfg.group), cfg.rows)
        params = data.ArrayLayout(signed(cfg.acc_bits), cfg.cols)
        super().__init__(
            {
                "instr": In(instruction_layout(cfg)),
                "start": In(1),
                "busy": Out(1),
                "a_addr": Out(a_addr),  # every bank's read port (the GEMM path's)
                "b_addr": Out(a_addr),  # every bank's second read port
                "a_data": In(words),
                "b_data": In(words),
                "g_addr": Out(c_addr),  # the bias buffer's two read ports: gamma, beta
                "e_addr": Out(c_addr),
                "g_data": In(params),
                "e_data": In(params),
                "we": Out(cfg.rows),  # per bank
                "waddr": Out(a_addr),
                "wdata": Out(words),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg, p = self.cfg, self.instr
        rows, lanes = cfg.vec_lanes_rows, cfg.group
        passes = cfg.vec_passes
        sub = Signal(range(passes))  # which rows of the block the lanes hold
        sub_last = sub == passes - 1

        def rows_in(port: data.View) -> list[data.View]:
            """The ``rows`` words of the lanes' current rows."""
            word = data.ArrayLayout(signed(cfg.a_bits), lanes)
            if passes == 1:
                return [port[r] for r in range(rows)]
            flat = port.as_value()
            return [data.View(word, flat.word_select(sub * rows + r, word.size))
                    for r in range(rows)]  # fmt: skip

        a_in, b_in = rows_in(self.a_data), rows_in(self.b_data)
        we = Signal()
        for r in range(cfg.rows):
            m.d.comb += self.we[r].eq(we & (sub == r // rows))
        bits = cfg.acc_bits

        rb = Signal.like(p.row_blocks)
        cnt = Signal(range(max(cfg.a_depth, 64) + 2))
        a_row, b_row = Signal.like(self.a_addr), Signal.like(self.b_addr)
        o_row = Signal.like(self.waddr)
        w_in = Signal.like(cnt)  # the word whose data arrives this cycle
        m.d.comb += w_in.eq(cnt - 1)

        # per-row statistics
        big_k = [Signal(signed(16), name=f"K_{r}") for r in range(rows)]
        total = [Signal(signed(WIDE + 2), name=f"S_{r}") for r in range(rows)]
        lead = [Signal(range(WIDE + 1), name=f"lead_{r}") for r in range(rows)]
        mu = [Signal(signed(WIDE), name=f"mu_{r}") for r in range(rows)]
        mu_neg = [Signal(name=f"mu_neg_{r}") for r in range(rows)]
        zero_sigma = [Signal(name=f"zero_sigma_{r}") for r in range(rows)]
        dividers = []
        roots = []
        for r in range(rows):
            d = RowDivider(WIDE, 32)  # divisors: S cut to 20 bits, 2C, sigma < 2**31
            s = RowSqrt(62)
            m.submodules[f"div{r}"] = d
            m.submodules[f"sqrt{r}"] = s
            dividers.append(d)
            roots.append(s)

        fsm_first = Signal()  # the first word of a softmax pass
        g = SOFTMAX_GUARD

        # whether lane ``e`` holds a value of the row (the row's last word may be short)
        valid_lane = [named(m, (w_in * lanes + e) < p.v_count, f"valid_{e}") for e in range(lanes)]

        def lane_valid(e: int) -> Value:
            return valid_lane[e]

        def mean(r: int) -> Value:
            q = dividers[r].q.as_signed()
            return Mux(mu_neg[r], -q, q)

        def deviation(r: int, e: int) -> Signal:
            x = a_in[r][e]
            y = named(m, ((x << p.ln_m) - mean(r)[:40].as_signed())[:27].as_signed(), f"y_{r}_{e}")
            return y

        m.d.comb += [
            self.a_addr.eq(a_row + cnt),
            self.b_addr.eq(b_row + cnt),
            self.g_addr.eq(p.bias_base + cnt),
            self.e_addr.eq(p.bias_base + p.v_len + cnt),
            self.waddr.eq(o_row + w_in),
        ]

        last_block = (rb == p.row_blocks - 1) & sub_last

        def next_block() -> None:
            """After a pass's last state: the block's next rows, the next block, or done."""
            m.d.sync += cnt.eq(0)
            with m.If(sub_last):
                m.d.sync += [
                    sub.eq(0),
                    rb.eq(rb + 1),
                    a_row.eq(a_row + p.a_stride),
                    b_row.eq(b_row + p.a_stride),
                    o_row.eq(o_row + p.out_stride),
                ]
            with m.Else():
                m.d.sync += sub.eq(sub + 1)

        # GELU lanes: sequential dividers, one per value
        gelu_x = [[Signal(signed(cfg.a_bits), name=f"gx_{r}_{e}") for e in range(lanes)]
                  for r in range(rows)]  # fmt: skip
        gelu_q = [[Signal(GELU_MAX_SIG + 2, name=f"gq_{r}_{e}") for e in range(lanes)]
                  for r in range(rows)]  # fmt: skip
        gelu_rem = [[Signal(GELU_MAX_SIG + 3, name=f"grem_{r}_{e}") for e in range(lanes)]
                    for r in range(rows)]  # fmt: skip
        gelu_dvd = [[Signal(2 * GELU_MAX_SIG + 2, name=f"gdvd_{r}_{e}") for e in range(lanes)]
                    for r in range(rows)]  # fmt: skip
        gelu_den = [[Signal(GELU_MAX_SIG + 2, name=f"gden_{r}_{e}") for e in range(lanes)]
                    for r in range(rows)]  # fmt: skip
        gelu_i = Signal(range(GELU_MAX_SIG + 2))
        sg = p.sig_bits

        out = [[Signal(signed(bits + 2), name=f"v_{r}_{e}") for e in range(lanes)]
               for r in range(rows)]  # fmt: skip
        for r in range(rows):
            for e in range(lanes):
                res = requantize(m, out[r][e], p, bits, f"vq_{r}_{e}")
                for s in range(passes):  # every bank sees the result; ``we`` picks
                    m.d.comb += self.wdata[s * rows + r][e].eq(res)

        # one multiplier per lane, shared by the ops' passes: y * y (layernorm's variance),
        # mant * 1/S (softmax), y * 1/sigma (layernorm), x * sigmoid (GELU)
        mul_a = [[Signal(signed(27), name=f"ma_{r}_{e}") for e in range(lanes)]
                 for r in range(rows)]  # fmt: skip
        mul_b = [[Signal(signed(37), name=f"mb_{r}_{e}") for e in range(lanes)]
                 for r in range(rows)]  # fmt: skip
        mul_p = [[Signal(signed(64), name=f"mp_{r}_{e}") for e in range(lanes)]
                 for r in range(rows)]  # fmt: skip
        for r in range(rows):
            for e in range(lanes):
                m.d.comb += mul_p[r][e].eq(mul_a[r][e] * mul_b[r][e])
        # each value's shift exponential, for both softmax passes
        lane_exp = [[exponent(m, a_in[r][e], p.x_frac, f"xe_{r}_{e}") for e in range(lanes)]
                    for r in range(rows)]  # fmt: skip

        def iterate(units, n: Value) -> Value:
            """Step the rows' dividers or roots; true in the last of ``n`` cycles."""
            m.d.comb += self.busy.eq(1)
            m.d.comb += [u.step.eq(1) for u in units]
            m.d.sync += cnt.eq(cnt + 1)
            done = Signal(name=f"iterated_{len(iterations)}")
            iterations.append(done)
            m.d.comb += done.eq(cnt + 1 >= n)
            with m.If(done):
                m.d.sync += cnt.eq(0)
            return done

        iterations: list[Signal] = []
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        rb.eq(0),
                        sub.eq(0),
                        cnt.eq(0),
                        a_row.eq(p.a_base),
                        b_row.eq(p.v_b),
                        o_row.eq(p.out_base),
                        fsm_first.eq(1),
                    ]
                    with m.Switch(p.vop):
                        with m.Case(VecOp.ADD):
                            m.next = "OUT"
                        with m.Case(VecOp.GELU):
                            m.next = "G_READ"
                        with m.Case(VecOp.SOFTMAX, VecOp.LAYERNORM):
                            m.next = "STAT"
            # -- first pass: softmax's running exponent and sum; layernorm's sum
            with m.State("STAT"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt != 0):
                    m.d.sync += fsm_first.eq(0)
                    for r in range(rows):
                        ks, mants, valid = [], [], []
                        for e in range(lanes):
                            k, mant = lane_exp[r][e]
                            ks.append(k)
                            mants.append(mant)
                            valid.append(lane_valid(e))
                        kw = ks[0]
                        for e in range(1, lanes):
                            kw = named(m, Mux(valid[e] & (ks[e] > kw), ks[e], kw), f"kw_{r}_{e}")
                        kw = named(m, kw, f"kw_{r}")
                        new_k = named(
                            m, Mux(fsm_first | (kw > big_k[r]), kw, big_k[r]), f"newk_{r}"
                        )
                        terms = [
                            Mux(
                                valid[e],
                                shl(m, mants[e], (ks[e] - new_k + p.span)[:6], f"term_{r}_{e}"),
                                0,
                            )
                            for e in range(lanes)
                        ]
                        kept = Mux(fsm_first, 0, total[r] >> (new_k - big_k[r])[:7])
                        sums = [a_in[r][e] for e in range(lanes)]
                        with m.If(p.vop == VecOp.SOFTMAX):
                            m.d.sync += [big_k[r].eq(new_k), total[r].eq(kept + sum(terms))]
                        with m.Else():
                            s_word = sum(Mux(lane_valid(e), sums[e], 0) for e in range(lanes))
                            m.d.sync += total[r].eq(Mux(fsm_first, 0, total[r]) + s_word)
                with m.If(cnt == p.v_len):
                    m.d.sync += cnt.eq(0)
                    m.next = "PREP1"
            # -- the row's first division: softmax's reciprocal, layernorm's mean
            with m.State("PREP1"):
                m.d.comb += self.busy.eq(1)
                mm = p.sm_bits + g + 2
                for r in range(rows):
                    s = total[r].as_unsigned()[:WIDE]
                    ld = bit_length(m, s, f"ld_{r}")
                    cut = named(m, ld.as_signed() - mm, f"cut_{r}")
                    dn = Mux(cut > 0, cut, 0)[:7]
                    sticky = (s & (shl(m, C(1, 1), dn[:6], f"stk_{r}") - 1)[:WIDE]).any()
                    s_top = Mux(cut > 0, (s >> dn) + sticky, shl(m, s, (-cut)[:6], f"stop_{r}"))
                    # layernorm: floor((2**(m+1) sum + C) / (2C)) on magnitudes
                    c2 = p.v_count << 1
                    wide_sum = shl(m, total[r][:48].as_signed(), (p.ln_m + 1)[:6], f"msum_{r}")
                    num = named(m, wide_sum + p.v_count, f"mnum_{r}")
                    neg = num < 0
                    mag = Mux(neg, -num + c2 - 1, num)
                    sm = p.vop == VecOp.SOFTMAX
                    dv = dividers[r]
                    m.d.comb += [
                        dv.start.eq(1),
                        dv.a.eq(
                            Mux(
                                sm,
                                shl(m, C(1, 1), (2 * p.sm_bits + 2 * g + 3)[:6], f"one_{r}"),
                                mag,
                            )
                        ),
                        dv.b.eq(Mux(sm, s_top, c2)),
                        dv.n.eq(Mux(sm, p.div_n, p.mu_n)),
                    ]
                    m.d.sync += [lead[r].eq(ld), mu_neg[r].eq(neg)]
                m.d.sync += cnt.eq(0)
                m.next = "DIV1"
            with m.State("DIV1"):
                with m.If(iterate(dividers, Mux(p.vop == VecOp.SOFTMAX, p.div_n, p.mu_n))):
                    m.d.sync += fsm_first.eq(1)
                    with m.If(p.vop == VecOp.SOFTMAX):
                        m.next = "OUT"
                    with m.Else():
                        m.next = "VAR"
            # -- layernorm: the sum of squared deviations, its root, the division
            with m.State("VAR"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt != 0):
                    m.d.sync += fsm_first.eq(0)
                    for r in range(rows):
                        for e in range(lanes):
                            y = deviation(r, e)
                            m.d.comb += [mul_a[r][e].eq(y), mul_b[r][e].eq(y)]
                        sq = sum(Mux(lane_valid(e), mul_p[r][e], 0) for e in range(lanes))
                        m.d.sync += total[r].eq(Mux(fsm_first, 0, total[r]) + sq)
                with m.If(cnt == p.v_len):
                    m.d.sync += cnt.eq(0)
                    m.next = "PREP2"
            with m.State("PREP2"):
                m.d.comb += self.busy.eq(1)
                for r in range(rows):
                    cv = (total[r].as_unsigned()[:WIDE] * p.v_count) << (p.ln_g << 1)
                    m.d.comb += [
                        roots[r].start.eq(1),
                        roots[r].v.eq(cv[:WIDE]),
                        roots[r].n.eq(p.sqrt_n),
                    ]
                m.next = "SQRT"
            with m.State("SQRT"):
                with m.If(iterate(roots, p.sqrt_n)):
                    m.next = "PREP3"
            with m.State("PREP3"):
                m.d.comb += self.busy.eq(1)
                for r in range(rows):
                    sigma = roots[r].root
                    shift = p.ln_w + p.ln_m + p.ln_g + p.ln_p
                    dv = dividers[r]
                    # the mean stays in mu for the last pass
                    m.d.sync += [mu[r].eq(mean(r)), zero_sigma[r].eq(sigma == 0)]
                    m.d.comb += [
                        dv.start.eq(1),
                        dv.a.eq(shl(m, p.v_count, shift[:6], f"lnd_{r}")),
                        dv.b.eq(Mux(sigma == 0, 1, sigma)),
                        dv.n.eq(p.div_n),
                    ]
                m.next = "DIV2"
            with m.State("DIV2"):
                with m.If(iterate(dividers, p.div_n)):
                    m.next = "OUT"
            # -- the last pass: one word per cycle out of each row
            with m.State("OUT"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt != 0):
                    m.d.comb += we.eq(1)
                for r in range(rows):
                    recip = dividers[r].q
                    for e in range(lanes):
                        x = a_in[r][e]
                        add = (x << p.sh_a) + (b_in[r][e] << p.sh_b)
                        k, mant = lane_exp[r][e]
                        sh = (1 + g + lead[r] - p.span + big_k[r] - k).as_signed()
                        sh = named(m, Mux(sh > 62, 62, sh)[:7], f"osh_{r}_{e}")
                        half = shl(m, C(1, 1), (sh - 1).as_unsigned()[:6], f"half_{r}_{e}")
                        sm = p.vop == VecOp.SOFTMAX
                        prob = (mul_p[r][e].as_unsigned()[:63] + half[:63]) >> sh
                        y = named(
                            m,
                            ((x << p.ln_m) - mu[r][:40].as_signed())[:27].as_signed(),
                            f"oy_{r}_{e}",
                        )
                        r_ln = Mux(zero_sigma[r], 0, recip)
                        m.d.comb += [
                            mul_a[r][e].eq(Mux(sm, mant, y)),
                            mul_b[r][e].eq(Mux(sm, recip[:20], r_ln[:36])),
                        ]
                        norm = named(
                            m, (mul_p[r][e] >> (p.ln_w + p.ln_m))[:30].as_signed(), f"on_{r}_{e}"
                        )
                        beta = shl(m, self.e_data[e], p.beta_shift, f"beta_{r}_{e}", 62)
                        ln = norm * self.g_data[e] + beta
                        v = Mux(
                            p.vop == VecOp.ADD,
                            add,
                            Mux(p.vop == VecOp.SOFTMAX, Mux(lane_valid(e), prob, 0), ln),
                        )
                        m.d.comb += out[r][e].eq(v)
                with m.If(cnt == p.v_len):
                    m.d.sync += cnt.eq(0)
                    with m.If(p.vop == VecOp.ADD):
                        next_block()
                        with m.If(last_block):
                            m.next = "IDLE"
                    with m.Else():
                        next_block()
                        m.d.sync += fsm_first.eq(1)
                        with m.If(last_block):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "STAT"
            # -- GELU, a word at a time: read, set up the lanes' divisions, divide, write
            with m.State("G_READ"):
                m.d.comb += self.busy.eq(1)
                m.next = "G_LOAD"
            with m.State("G_LOAD"):
                m.d.comb += self.busy.eq(1)
                m.d.comb += [self.a_addr.eq(a_row + cnt)]
                for r in range(rows):
                    for e in range(lanes):
                        x = a_in[r][e]
                        a = named(m, Mux(x < 0, x, -x), f"ga_{r}_{e}")
                        z = named(m, a + (a >> 1) + (a >> 3) + (a >> 4), f"gz_{r}_{e}")
                        k, mant = exponent(m, z, p.x_frac, f"ge_{r}_{e}")
                        dn = (p.x_frac - k).as_signed()
                        dn = Mux(dn > 63, 63, dn)[:7]
                        ee = named(m, ((mant << sg) >> dn)[: GELU_MAX_SIG + 2], f"gE_{r}_{e}")
                        num = Mux(x >= 0, C(1, 1) << sg, ee)
                        m.d.sync += [
                            gelu_x[r][e].eq(x),
                            gelu_dvd[r][e].eq(num << sg),
                            gelu_den[r][e].eq((C(1, 1) << sg) + ee),
                            gelu_rem[r][e].eq(num >> 1),  # the dividend's bits above sg
                            gelu_q[r][e].eq(0),
                        ]
                m.d.sync += gelu_i.eq(sg + 1)  # quotient bits: sigmoid <= 2**sg
                m.next = "G_DIV"
            with m.State("G_DIV"):
                m.d.comb += self.busy.eq(1)
                gelu_bit = named(m, (gelu_i - 1).as_unsigned(), "gelu_bit")
                m.d.comb += self.a_addr.eq(a_row + cnt)
                for r in range(rows):
                    for e in range(lanes):
                        rem, den = gelu_rem[r][e], gelu_den[r][e]
                        trial = (rem << 1) | gelu_dvd[r][e].bit_select(gelu_bit, 1)
                        take = trial >= den
                        m.d.sync += [
                            rem.eq(Mux(take, trial - den, trial)),
                            gelu_q[r][e].eq((gelu_q[r][e] << 1) | take),
                        ]
                m.d.sync += gelu_i.eq(gelu_i - 1)
                with m.If(gelu_i == 1):
                    m.next = "G_WRITE"
            with m.State("G_WRITE"):
                m.d.comb += self.busy.eq(1)
                m.d.comb += [we.eq(1), self.waddr.eq(o_row + cnt)]
                for r in range(rows):
                    for e in range(lanes):
                        m.d.comb += [
                            mul_a[r][e].eq(gelu_x[r][e]),
                            mul_b[r][e].eq(gelu_q[r][e]),
                            out[r][e].eq(mul_p[r][e]),
                        ]
                m.d.sync += cnt.eq(cnt + 1)
                m.next = "G_READ"
                with m.If(cnt == p.v_len - 1):
                    next_block()
                    with m.If(last_block):
                        m.next = "IDLE"
        return m
