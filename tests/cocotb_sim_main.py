"""cocotb tests for tests/test_sim_main.py: cocotb's timers and triggers on accel's C++ main.

The harness's clock has a 10 ns period; cocotb's own scheduling must still see
every timed callback at its time while the main loop takes quiet steps.
"""

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge, Timer


@cocotb.test()
async def timers_land_on_their_cycles(dut) -> None:
    await Timer(200, "ns")
    first = int(dut.cycle.value)
    await Timer(100, "ns")
    assert int(dut.cycle.value) - first == 10  # ten clock periods, exactly
    await Timer(1000, "ns")
    await ReadOnly()
    assert int(dut.cycle.value) - first == 110
    await RisingEdge(dut.done)
    assert not int(dut.timeout.value)
    await Timer(50, "ns")  # after done the clock stops; timers still run
    assert int(dut.done.value) == 1
