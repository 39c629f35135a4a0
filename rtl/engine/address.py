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
columns (``cb_loop`` of them, from ``chan``). A deformable one (CoDeNet's
square shape) spreads the 3x3 taps of row ``r``'s pixel by that sample's offset
``d[r]``: tap ``(ky, kx)`` reads ``(cy + (ky-1) d, cx + (kx-1) d)``. The rows
then read different pixels, so each bank gets its own address and padding
flag; ``d * W * CB`` and ``d * CB`` are a few shifted adds of ``d``'s bits.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from accel.engine.config import EngineConfig
from accel.engine.isa import instruction_layout


def times(d: Value, v: Value) -> Value:
    """``d * v`` for a few-bit ``d``, as shifted adds (no DSP block for a tiny product)."""
    return sum(Mux(d[i], v << i, 0) for i in range(len(d)))


def tap(k: Value, step: Value) -> Value:
    """``(k - 1) * step`` for a 3x3 tap index ``k``."""
    return Mux(k == 0, -step, Mux(k == 1, 0, step))


class AddressGenerator(wiring.Component):
    def __init__(self, cfg: EngineConfig) -> None:
        self.cfg = cfg
        layout = instruction_layout(cfg)
        a_bits = max(1, (cfg.a_depth - 1).bit_length())
        super().__init__(
            {
                "instr": In(layout),
                "init": In(1),  # load the loop state from ``instr``
                "advance": In(1),  # issue the current step, move to the next
                "d": In(data.ArrayLayout(cfg.offset_bits, cfg.rows)),  # each row's offset
                "pixel": Out(range(max(cfg.offset_depth, 2))),  # row block: sample block, pixel
                "a_addr": Out(data.ArrayLayout(a_bits, cfg.rows)),  # one per bank
                "a_zero": Out(cfg.rows),  # the row's pixel lies in the padding
                "b_addr": Out(layout["b_base"].shape),
                "c_addr": Out(layout["bias_base"].shape),
                "j": Out(layout["n"].shape),
                "first": Out(1),  # first step of a tile
                "last": Out(1),  # last step of a tile
                "done": Out(1),  # last step of the GEMM
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.instr
        wide = signed(len(self.a_addr) + 8)
        # loop counters
        j = Signal.like(p.n)
        cb = Signal.like(p.cblocks)
        kx, ky = Signal.like(p.kw), Signal.like(p.kh)
        ox, oy = Signal.like(p.out_w), Signal.like(p.out_h)
        sb = Signal.like(p.sample_blocks)
        ct = Signal.like(p.col_tiles)
        chan = Signal.like(p.cblocks)  # depthwise: the column tile's first channel block
        pixel = Signal.like(self.pixel)
        # running offsets
        sb_base = Signal(wide)
        ix0, iy0 = Signal(wide), Signal(wide)  # input x, y of the kernel's corner
        pix, pix_row = Signal(wide), Signal(wide)  # (iy0 * W + ix0) * CB; at ox == 0
        koff, krow = Signal(wide), Signal(wide)  # (ky * W + kx) * CB; at kx == 0
        b_ptr, b_tile = Signal.like(p.b_base), Signal.like(p.b_base)
        c_ptr = Signal.like(p.bias_base)

        iy, ix = iy0 + ky, ix0 + kx
        end_j = j == p.n - 1
        end_cb = end_j & (cb == p.cb_loop - 1)
        end_kx = end_cb & (kx == p.kw - 1)
        end_tile = end_kx & (ky == p.kh - 1)
        end_ox = end_tile & (ox == p.out_w - 1)
        end_oy = end_ox & (oy == p.out_h - 1)
        end_sb = end_oy & (sb == p.sample_blocks - 1)
        base = sb_base + pix + chan + cb
        centre = p.row_words + p.cblocks
        for r in range(self.cfg.rows):
            d = self.d[r]
            ry = Mux(p.deform, iy0 + 1 + tap(ky, d), iy)
            rx = Mux(p.deform, ix0 + 1 + tap(kx, d), ix)
            spread = centre + tap(ky, times(d, p.row_words)) + tap(kx, times(d, p.cblocks))
            m.d.comb += [
                self.a_addr[r].eq(base + Mux(p.deform, spread, koff)),
                self.a_zero[r].eq((ry < 0) | (ry >= p.in_h) | (rx < 0) | (rx >= p.in_w)),
            ]
        m.d.comb += [
            self.pixel.eq(pixel),
            self.b_addr.eq(b_ptr),
            self.c_addr.eq(c_ptr),
            self.j.eq(j),
            self.first.eq((j == 0) & (cb == 0) & (kx == 0) & (ky == 0)),
            self.last.eq(end_tile),
            self.done.eq(end_sb & (ct == p.col_tiles - 1)),
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
                pixel.eq(0),
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
                m.d.sync += [b_ptr.eq(b_tile), pixel.eq(pixel + 1)]
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
                    pixel.eq(0),
                    b_tile.eq(b_ptr + 1),
                    b_ptr.eq(b_ptr + 1),
                    c_ptr.eq(c_ptr + 1),
                ]
        return m
