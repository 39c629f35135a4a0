"""cocotb test for :mod:`accel.sim.harness`: wake once, when the harness is done.

Everything per cycle happens inside the simulator; this only measures the wall
time of the run and records it for the benchmark figures.
"""

import json
import os
import time

import cocotb
from cocotb.triggers import RisingEdge


@cocotb.test()
async def run_to_done(dut) -> None:
    start = time.perf_counter()
    await RisingEdge(dut.done)
    elapsed = time.perf_counter() - start
    stats = {"wall_s": elapsed, "cycles": int(dut.cycle.value)}
    path = os.environ.get("ACCEL_SIM_STATS")
    if path:
        with open(path, "w") as f:
            json.dump(stats, f)
    assert not int(dut.timeout.value), f"timed out after {stats['cycles']} cycles"
