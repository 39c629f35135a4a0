"""The issue stage's address generator: one GEMM step per cycle, dense layers and convolutions.

A step reads one activation word per array row and one weight word. Loops,
outermost first: column tile; row block = (sample block, output y, output x);
kernel (ky, kx, channel block) = the group; kept weight ``j``. Array row ``p``
of a row block is sample ``p`` of the block, so all rows read the same pixel
of their own sample: one address for every bank, no conflicts. A dense layer
is a 1x1 convolution of a 1x1 image. Pixels in the padding read as zeros.

Addresses come from running sums (no multipliers): the pixel's offset
``(iy * W + ix) * CB`` moves by ``stride * CB`` along x and ``stride * W * CB``
along y, the kernel offset by ``CB`` along kx and ``W * CB`` along ky.

A depthwise convolution's column tile reads only the channel blocks of its own
columns (``cb_loop`` of them, from ``chan``).

Deformable convolutions take one more pipeline stage, the :class:`Sampler`,
between the generator (which also addresses each row's offset memory) and the
banks: it turns the row's offsets into that row's own bank address, padding
flag and (bilinear) corner weight, so every bank reads its own pixel.

- square (CoDeNet): tap ``(ky, kx)`` of row ``r``'s pixel reads ``(cy + (ky-1)
  d, cx + (kx-1) d)`` with the row's offset ``d``;
- bilinear: the loops run tap ``t`` (as ``ky``, 0..8) and corner (as ``kx``,
  0..3); corner ``(a, b)`` of tap ``t`` reads ``(cy + ty + floor(dy) + a, cx + tx +
  floor(dx) + b)`` with weight ``(a ? fy : 1 - fy) (b ? fx : 1 - fx)``, in units
  of ``2**-F``; the PEs get the activation times that weight.

Products with the offsets are a few shifted adds of their bits (no DSP blocks).
"""

from __future__ import annotations

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from accel.engine.config import EngineConfig
from accel.engine.isa import Deform, instruction_layout
from accel.rtl.fixed import select


def times(d: Value, v: Value) -> Value:
    """``d * v`` for a few-bit unsigned ``d``, as shifted adds (no DSP block)."""
    return sum(Mux(d[i], v << i, 0) for i in range(len(d)))


def signed_times(d: Value, v: Value) -> Value:
    """``d * v`` for a few-bit signed ``d``."""
    neg = d < 0
    mag = Mux(neg, -d, d).as_unsigned()
    prod = times(mag, v)
    return Mux(neg, -prod, prod)


def step_layout(cfg: EngineConfig) -> data.StructLayout:
    """One issued step, as the generator hands it to the sampler stage."""
    layout = instruction_layout(cfg)
    wide = signed(max(1, (cfg.a_depth - 1).bit_length()) + 8)
    return data.StructLayout(
        {
            "base": wide,  # sample block + pixel + channel block
            "koff": wide,  # regular kernel offset
            "iy0": wide,  # input row of the kernel's corner (centre - 1)
            "ix0": wide,
            "ky": layout["kh"].shape,  # bilinear: the tap
            "kx": layout["kw"].shape,  # bilinear: the corner
            "b_addr": layout["b_base"].shape,
            "c_addr": layout["bias_base"].shape,
            "j": layout["n"].shape,
            "first": 1,  # first step of a tile
            "last": 1,  # last step of a tile
        }
    )


def tap(k: Value, step: Value) -> Value:
    """``(k - 1) * step`` for a 3x3 tap index ``k``."""
    return Mux(k == 0, -step, Mux(k == 1, 0, step))


class AddressGenerator(wiring.Component):
    def __init__(self, cfg: EngineConfig) -> None:
        self.cfg = cfg
        layout = instruction_layout(cfg)
        super().__init__(
            {
                "instr": In(layout),
                "init": In(1),  # load the loop state from ``instr``
                "advance": In(1),  # issue the current step, move to the next
                "step": Out(step_layout(cfg)),
                "o_addr": Out(range(max(cfg.offset_depth, 2))),  # the step's offset word
                "done": Out(1),  # last step of the GEMM
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.instr
        wide = step_layout(self.cfg)["base"].shape
        # loop counters
        j = Signal.like(p.n)
        cb = Signal.like(p.cblocks)
        kx, ky = Signal.like(p.kw), Signal.like(p.kh)
        ox, oy = Signal.like(p.out_w), Signal.like(p.out_h)
        sb = Signal.like(p.sample_blocks)
        ct = Signal.like(p.col_tiles)
        chan = Signal.like(p.cblocks)  # depthwise: the column tile's first channel block
        opix = Signal.like(self.o_addr)  # the pixel's first offset word
        # running offsets
        sb_base = Signal(wide)
        ix0, iy0 = Signal(wide), Signal(wide)  # input x, y of the kernel's corner
        pix, pix_row = Signal(wide), Signal(wide)  # (iy0 * W + ix0) * CB; at ox == 0
        koff, krow = Signal(wide), Signal(wide)  # (ky * W + kx) * CB; at kx == 0
        b_ptr, b_tile = Signal.like(p.b_base), Signal.like(p.b_base)
        c_ptr = Signal.like(p.bias_base)

        # each loop's last index, latched with the loops (no subtraction on the way to
        # the counters)
        lasts = {
            "n": (j, p.n),
            "cb_loop": (cb, p.cb_loop),
            "kw": (kx, p.kw),
            "kh": (ky, p.kh),
            "out_w": (ox, p.out_w),
            "out_h": (oy, p.out_h),
            "sample_blocks": (sb, p.sample_blocks),
            "col_tiles": (ct, p.col_tiles),
        }
        at_end = {}
        for name, (counter, count) in lasts.items():
            top = Signal.like(count, name=f"{name}_last")
            with m.If(self.init):
                m.d.sync += top.eq(count - 1)
            at_end[name] = counter == top
        end_j = at_end["n"]
        end_cb = end_j & at_end["cb_loop"]
        end_kx = end_cb & at_end["kw"]
        end_tile = end_kx & at_end["kh"]
        end_ox = end_tile & at_end["out_w"]
        end_oy = end_ox & at_end["out_h"]
        end_sb = end_oy & at_end["sample_blocks"]
        # bilinear: tap t's two offsets sit in word (2t) // group of the pixel
        word_of_tap = Array(2 * t // self.cfg.group for t in range(16))
        st = self.step
        m.d.comb += [
            st.base.eq(sb_base + pix + chan + cb),
            st.koff.eq(koff),
            st.iy0.eq(iy0),
            st.ix0.eq(ix0),
            st.ky.eq(ky),
            st.kx.eq(kx),
            st.b_addr.eq(b_ptr),
            st.c_addr.eq(c_ptr),
            st.j.eq(j),
            st.first.eq((j == 0) & (cb == 0) & (kx == 0) & (ky == 0)),
            st.last.eq(end_tile),
            self.o_addr.eq(opix + Mux(p.deform == Deform.BILINEAR, word_of_tap[ky], 0)),
            self.done.eq(end_sb & at_end["col_tiles"]),
        ]

        def restart_image():
            return [
                oy.eq(0),
                ox.eq(0),
                iy0.eq(-p.pad_top),
                ix0.eq(-p.pad_left),
                pix.eq(p.origin),
                pix_row.eq(p.origin),
            ]

        with m.If(self.init):
            m.d.sync += [
                j.eq(0),
                cb.eq(0),
                kx.eq(0),
                ky.eq(0),
                koff.eq(0),
                krow.eq(0),
                sb.eq(0),
                ct.eq(0),
                chan.eq(0),
                opix.eq(0),
                sb_base.eq(p.a_base),
                b_ptr.eq(p.b_base),
                b_tile.eq(p.b_base),
                c_ptr.eq(p.bias_base),
                *restart_image(),
            ]
        with m.Elif(self.advance):
            m.d.sync += [j.eq(j + 1), b_ptr.eq(b_ptr + 1)]
            with m.If(end_j):
                m.d.sync += [j.eq(0), cb.eq(cb + 1)]
            with m.If(end_cb):
                m.d.sync += [cb.eq(0), kx.eq(kx + 1), koff.eq(koff + p.cblocks)]
            with m.If(end_kx):
                m.d.sync += [kx.eq(0), ky.eq(ky + 1), krow.eq(krow + p.row_words)]
                m.d.sync += koff.eq(krow + p.row_words)
            with m.If(end_tile):
                m.d.sync += [ky.eq(0), krow.eq(0), koff.eq(0)]
                m.d.sync += [ox.eq(ox + 1), ix0.eq(ix0 + p.stride), pix.eq(pix + p.step_x)]
                # the next row block reads this column tile's weights again
                m.d.sync += [b_ptr.eq(b_tile), opix.eq(opix + p.offset_words)]
            with m.If(end_ox):
                m.d.sync += [ox.eq(0), ix0.eq(-p.pad_left), oy.eq(oy + 1), iy0.eq(iy0 + p.stride)]
                m.d.sync += [pix.eq(pix_row + p.step_y), pix_row.eq(pix_row + p.step_y)]
            with m.If(end_oy):
                m.d.sync += [sb.eq(sb + 1), sb_base.eq(sb_base + p.a_stride), *restart_image()]
            with m.If(end_sb):
                # next column tile: its weights follow this tile's
                m.d.sync += [
                    sb.eq(0),
                    sb_base.eq(p.a_base),
                    ct.eq(ct + 1),
                    chan.eq(chan + p.chan_step),
                    opix.eq(0),
                    b_tile.eq(b_ptr + 1),
                    b_ptr.eq(b_ptr + 1),
                    c_ptr.eq(c_ptr + 1),
                ]
        return m


class Sampler(wiring.Component):
    """The deformable stage: each row's bank address, padding flag and corner weight.

    Pipelined over :data:`LATENCY` registers, all moving when ``en`` is high:
    (1) the step and each row's offset word (read from its offset memory at
    the step's ``o_addr`` a cycle before), registered; (2) each row's tap
    offsets, looked up in tables of ``k * row_words`` and ``k * cblocks``
    (registers, one adder each, steady while the instruction holds), and the
    sample's input row and column; (3) the bank address (two adds), the padding
    test and the corner weight. ``valid_o`` and ``step_o`` are the step's valid
    flag and fields, delayed to match.
    """

    LATENCY = 3

    def __init__(self, cfg: EngineConfig) -> None:
        self.cfg = cfg
        a_bits = max(1, (cfg.a_depth - 1).bit_length())
        super().__init__(
            {
                "instr": In(instruction_layout(cfg)),
                "en": In(1, init=1),
                "valid": In(1),
                "step": In(step_layout(cfg)),
                "offsets": In(data.ArrayLayout(offset_word(cfg), cfg.rows)),
                "valid_o": Out(1),
                "step_o": Out(step_layout(cfg)),
                "a_addr": Out(data.ArrayLayout(a_bits, cfg.rows)),  # one per bank
                "a_zero": Out(cfg.rows),  # the row's pixel lies in the padding
                "weight": Out(data.ArrayLayout(weight_bits(cfg), cfg.rows)),  # bilinear
                "busy": Out(1),  # a step is in flight
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg, p = self.cfg, self.instr
        f = cfg.bilinear_frac
        wide = step_layout(cfg)["base"].shape

        def reg(value, name: str):
            """A stage register; only the valid flags take the reset (data need none)."""
            if not isinstance(value, data.View):
                value = Value.cast(value)
            r = Signal(value.shape(), name=name, reset_less="valid" not in name)
            with m.If(self.en):
                m.d.sync += r.eq(value)
            return r

        # k * row_words and k * cblocks for every tap offset k a row can ask for; a bank
        # address wraps at its width, so the tables and sums keep only its bits
        addr = unsigned(len(self.a_addr[0]))
        lo, hi = table_range(cfg)
        t_rw = {k: reg(const_times(p.row_words, k, addr), f"t_rw{k}".replace("-", "m"))
                for k in range(lo, hi + 1)}  # fmt: skip
        t_cb = {k: reg(const_times(p.cblocks, k, addr), f"t_cb{k}".replace("-", "m"))
                for k in range(lo, hi + 1)}  # fmt: skip
        rwcb = reg((p.row_words + p.cblocks)[: addr.width], "rwcb")
        square = p.deform == Deform.SQUARE
        bil = p.deform == Deform.BILINEAR

        # (1) the step and the offset words
        valid1, st = reg(self.valid, "s_valid1"), reg(self.step, "s_step1")
        words = [reg(self.offsets[r], f"s_offs{r}") for r in range(cfg.rows)]
        # (2) table look-ups, the sample's input row and column, corner weights
        valid2, st2 = reg(valid1, "s_valid2"), reg(st, "s_step2")
        base2 = reg((st.base + Mux(square | bil, rwcb, st.koff))[: addr.width], "s_base2")
        sq_max = (1 << max(1, cfg.max_offset.bit_length())) - 1
        lane_of_tap = Array(2 * t % cfg.group for t in range(16))
        tap_y = Array(t // 3 - 1 for t in range(16))
        tap_x = Array(t % 3 - 1 for t in range(16))
        zero = C(0, addr)
        rows2 = []
        for r in range(cfg.rows):
            word = words[r]
            # square: lane 0 is the pixel's d; tap (ky, kx) moves by ((ky - 1) d, (kx - 1) d)
            d = word[0].as_unsigned()[: max(1, cfg.max_offset.bit_length())]

            def tap_of(k, table, d=d):
                pos = select([table[i] for i in range(sq_max + 1)], d)
                neg = select([table[-i] for i in range(sq_max + 1)], d)
                return Mux(k == 0, neg, Mux(k == 1, zero, pos))

            ty, tx = tap_of(st.ky, t_rw), tap_of(st.kx, t_cb)
            off_y = Mux(st.ky == 0, -d, Mux(st.ky == 1, 0, d))
            off_x = Mux(st.kx == 0, -d, Mux(st.kx == 1, 0, d))
            ry = Mux(square, st.iy0 + 1 + off_y, st.iy0 + st.ky)
            rx = Mux(square, st.ix0 + 1 + off_x, st.ix0 + st.kx)
            wy = wx = C(1, 1)
            if f:
                lane = lane_of_tap[st.ky]
                dy = Array(word)[lane].as_signed()
                dx = Array(word)[lane + 1].as_signed()
                by, bx = st.kx[1], st.kx[0]  # the corner
                sy = Signal(signed(8), name=f"sy_{r}")
                sx = Signal(signed(8), name=f"sx_{r}")
                m.d.comb += [
                    sy.eq(tap_y[st.ky] + (dy >> f) + by),
                    sx.eq(tap_x[st.ky] + (dx >> f) + bx),
                ]
                fy, fx = dy[:f], dx[:f]
                one = 1 << f
                wy = Mux(bil, Mux(by, fy, one - fy)[: f + 1], 1)
                wx = Mux(bil, Mux(bx, fx, one - fx)[: f + 1], 1)
                ry = Mux(bil, st.iy0 + 1 + sy, ry)
                rx = Mux(bil, st.ix0 + 1 + sx, rx)
                ty = Mux(bil, select([t_rw[k] for k in range(lo, hi + 1)], (sy - lo)[:8]), ty)
                tx = Mux(bil, select([t_cb[k] for k in range(lo, hi + 1)], (sx - lo)[:8]), tx)
            deform = square | bil
            rows2.append(
                {
                    "ty": reg(Mux(deform, ty, 0), f"s_ty{r}"),
                    "tx": reg(Mux(deform, tx, 0), f"s_tx{r}"),
                    "ry": reg(ry.as_signed()[: wide.width + 2].as_signed(), f"s_ry{r}"),
                    "rx": reg(rx.as_signed()[: wide.width + 2].as_signed(), f"s_rx{r}"),
                    "wy": reg(wy, f"s_wy{r}"),
                    "wx": reg(wx, f"s_wx{r}"),
                }
            )
        # (3) the bank address, the padding test, the corner weight
        m.d.comb += [
            self.busy.eq(valid1 | valid2 | self.valid_o),
        ]
        with m.If(self.en):
            m.d.sync += [self.valid_o.eq(valid2), self.step_o.eq(st2)]
            for r, row in enumerate(rows2):
                ry, rx = row["ry"], row["rx"]
                m.d.sync += [
                    self.a_addr[r].eq((base2 + row["ty"] + row["tx"])[: addr.width]),
                    self.a_zero[r].eq((ry < 0) | (ry >= p.in_h) | (rx < 0) | (rx >= p.in_w)),
                    self.weight[r].eq(times(row["wy"], row["wx"]) if f else 1),
                ]
        return m


def table_range(cfg: EngineConfig) -> tuple[int, int]:
    """The tap offsets ``k`` (in rows or pixels) a row's offsets can ask for."""
    sq = (1 << max(1, cfg.max_offset.bit_length())) - 1
    lo, hi = -sq, sq
    if cfg.bilinear_frac:  # tap -1..1, floor(d / 2**F), corner 0..1
        half = 1 << (cfg.offset_bits - 1)
        lo = min(lo, -1 + (-half >> cfg.bilinear_frac))
        hi = max(hi, 1 + ((half - 1) >> cfg.bilinear_frac) + 1)
    return lo, hi


def const_times(v: Value, k: int, shape) -> Value:
    """``k * v`` for a constant ``k`` as shifted adds: one per non-zero digit of its
    non-adjacent form past the first (one add for every ``|k| <= 10``)."""
    digits, n, i = [], abs(k), 0
    while n:
        if n & 1:
            digit = 2 - (n & 3)  # +1 or -1
            digits.append((digit if k > 0 else -digit, i))
            n -= digit
        n >>= 1
        i += 1
    if not digits:
        return C(0, shape)
    if not v.shape().signed:
        v = Cat(v, C(0, 1)).as_signed()
    digits.sort(key=lambda d: -d[0])  # a positive term first: no negation when there is one
    first, i = digits[0]
    total = (v << i) if first > 0 else -(v << i)
    for digit, i in digits[1:]:
        total = total + (v << i) if digit > 0 else total - (v << i)
    return total[: shape.width] if not shape.signed else total[: shape.width].as_signed()


def offset_word(cfg: EngineConfig) -> data.ArrayLayout:
    """A word of an offset memory: ``group`` offsets (one drain word)."""
    return data.ArrayLayout(cfg.offset_bits, cfg.group)


def weight_bits(cfg: EngineConfig) -> int:
    """A bilinear corner weight, ``0 .. 2**(2F)``."""
    return 2 * cfg.bilinear_frac + 1 if cfg.bilinear_frac else 1
