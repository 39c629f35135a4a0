"""The sliced queue behaves cycle for cycle as one Amaranth FIFO of its width."""

import random

import pytest
from amaranth.hdl import Module
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.sim import Simulator

from accel.rtl.queue import SlicedQueue


@pytest.mark.parametrize(
    ("width", "depth", "buffered", "slice_bits"),
    [
        (150, 3, True, 64),
        (150, 2, True, 64),
        (64, 4, True, 64),
        (150, 3, False, 40),
        (7, 5, True, 2),
    ],
)
def test_sliced_queue_is_one_fifo(width, depth, buffered, slice_bits):
    q = SlicedQueue(width, depth, buffered, slice_bits)
    assert sum(q.slices) == width and max(q.slices) - min(q.slices) <= 1
    ref = (SyncFIFOBuffered if buffered else SyncFIFO)(width=width, depth=depth)
    m = Module()
    m.submodules.q, m.submodules.ref = q, ref
    rng = random.Random(width * depth + buffered)
    # random traffic that never overflows (the writer holds credits, as a layer does),
    # with all-zero, all-one and alternating words among the data
    words = [0, 2**width - 1, int("10" * width, 2) >> width] + [
        rng.getrandbits(width) for _ in range(200)
    ]

    async def bench(ctx):
        inside, n_read = 0, 0
        for cycle, w in enumerate(words * 2):
            write = inside < depth and rng.random() < 0.7
            read = rng.random() < 0.6
            for port in (q, ref):
                ctx.set(port.w_en, write)
                ctx.set(port.w_data, w)
            ctx.set(ref.r_en, read)
            # the reader's one r_en, or a copy of it per slice, in turn
            if cycle % 3:
                ctx.set(q.r_en, read)
                ctx.set(q.r_ens, 0)
            else:
                ctx.set(q.r_en, 0)
                ctx.set(q.r_ens, (2 ** len(q.slices) - 1) * read)
            assert ctx.get(q.r_rdy) == ctx.get(ref.r_rdy), cycle
            # every slice's own copy of the valid says the same
            ones = 2 ** len(q.slices) - 1
            assert ctx.get(q.r_rdys) == ones * ctx.get(ref.r_rdy), cycle
            assert ctx.get(q.w_rdys) == ones * ctx.get(ref.w_rdy), cycle
            assert ctx.get(q.w_rdy) == ctx.get(ref.w_rdy), cycle
            if ctx.get(ref.r_rdy):
                assert ctx.get(q.r_data) == ctx.get(ref.r_data), cycle
            took = read and ctx.get(ref.r_rdy)
            inside += write - took
            n_read += took
            await ctx.tick()
        assert n_read > len(words) // 3  # the traffic moved

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
