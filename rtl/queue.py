"""A wide first-in first-out queue as narrow queues in lockstep.

A queue a layer wide (a thousand bits and more) has one head register, loaded
whenever the queue moves, so one net of its control drives every bit's clock
enable: at 1,152 bits that net alone took 11 of 12 ns routing on the ECP5
(the autoencoder's conv layer, out of context). nextpnr does not replicate a
net, and yosys merges registers whose inputs are the same net, so a copy of
the control must be a state machine of its own: here, one queue per slice of
at most ``slice_bits`` bits, each counting its own level. All take the same
writes and reads, so they hold the same samples; the first one's ``r_rdy``
and ``w_rdy`` stand for all. Each slice's ``r_rdy`` and ``w_rdy`` are also out
on their own (``r_rdys``, ``w_rdys``): copies from registers of their own, for
a reader or writer that fans them out over the part; and each slice may be
read by a copy of the reader's ``r_en`` of its own (``r_ens``), so no one
register of the reader drives every slice.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

# a slice's head drives this many clock enables (a LUT's fanout, not a die's)
SLICE_BITS = 64


def slice_count(width: int, slice_bits: int = SLICE_BITS) -> int:
    """The slices of a :class:`SlicedQueue` ``width`` bits wide (its ``r_rdys``)."""
    return -(-width // slice_bits)


class SlicedQueue(wiring.Component):
    """``width`` bits, ``depth`` entries, the ports of Amaranth's FIFOs (``w_en``,
    ``w_data``, ``w_rdy``, ``r_en``, ``r_data``, ``r_rdy``; a writer that holds credits
    may leave ``w_rdy`` alone). ``buffered``: each slice is a
    :class:`~amaranth.lib.fifo.SyncFIFOBuffered` (its head a register, readable the
    cycle after the write at the earliest), else a :class:`~amaranth.lib.fifo.SyncFIFO`
    (readable straight from its memory the cycle after the write). ``r_rdys``,
    ``w_rdys``: each slice's ``r_rdy`` and ``w_rdy`` (equal to ``r_rdy`` and ``w_rdy``,
    each its own register when buffered). Slice ``k`` is read on ``r_en | r_ens[k]``:
    a reader drives ``r_en``, or ``r_ens`` with copies of it (all equal)."""

    def __init__(
        self, width: int, depth: int, buffered: bool = True, slice_bits: int = SLICE_BITS
    ) -> None:
        if width < 1 or depth < 1 or slice_bits < 1:
            raise ValueError("a queue needs a width, a depth and a slice width of at least 1")
        self.width, self.depth, self.buffered = width, depth, buffered
        n = slice_count(width, slice_bits)
        # slices as even as they come, so no slice is a sliver
        self.slices = [width // n + (k < width % n) for k in range(n)]
        super().__init__(
            {
                "w_en": In(1),
                "w_data": In(width),
                "w_rdy": Out(1),
                "r_en": In(1),
                "r_ens": In(n),
                "r_data": Out(width),
                "r_rdy": Out(1),
                "r_rdys": Out(n),
                "w_rdys": Out(n),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        kind = SyncFIFOBuffered if self.buffered else SyncFIFO
        lo, outs = 0, []
        for k, bits in enumerate(self.slices):
            q = kind(width=bits, depth=self.depth)
            m.submodules[f"slice{k}"] = q
            m.d.comb += [
                q.w_en.eq(self.w_en),
                q.w_data.eq(self.w_data[lo : lo + bits]),
                q.r_en.eq(self.r_en | self.r_ens[k]),
            ]
            if k == 0:
                m.d.comb += [self.r_rdy.eq(q.r_rdy), self.w_rdy.eq(q.w_rdy)]
            m.d.comb += [self.r_rdys[k].eq(q.r_rdy), self.w_rdys[k].eq(q.w_rdy)]
            outs.append(q.r_data)
            lo += bits
        m.d.comb += self.r_data.eq(Cat(*outs))
        return m
