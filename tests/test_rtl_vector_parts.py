"""The vector unit's combinational parts against Python, in Amaranth's simulator."""

from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.rtl.engine.vector import bit_length

EDGES = [0, 1, 2, 3, 2**31, 2**32 - 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1]


def _bit_lengths(width: int, values: list[int]) -> list[int]:
    m = Module()
    v = Signal(width)
    n = bit_length(m, v, "n")
    got = []

    async def testbench(ctx):
        for x in values:
            ctx.set(v, x)
            got.append(ctx.get(n))

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()
    return got


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=64))
def test_bit_length_is_int_bit_length(values):
    values = EDGES + values + [1 << i for i in range(64)]
    assert _bit_lengths(64, values) == [x.bit_length() for x in values]


def test_bit_length_of_a_width_not_a_power_of_two():
    values = list(range(2**7))
    assert _bit_lengths(7, values) == [x.bit_length() for x in values]
