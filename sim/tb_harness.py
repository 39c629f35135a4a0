"""cocotb test for :mod:`accel.sim.harness`: wake once, when the harness is done.

Everything per cycle happens inside the simulator; this only measures the wall
and CPU time of the run and records them for the benchmark figures.
"""

import json
import os
import time

import cocotb
from cocotb.triggers import RisingEdge


@cocotb.test()
async def run_to_done(dut) -> None:
    start, cpu = time.perf_counter(), time.process_time()
    await RisingEdge(dut.done)
    elapsed = time.perf_counter() - start
    stats = {
        "wall_s": elapsed,
        "cpu_s": time.process_time() - cpu,
        "cycles": int(dut.cycle.value),
    }
    path = os.environ.get("ACCEL_SIM_STATS")
    if path:
        with open(path, "w") as f:
            json.dump(stats, f)
    assert not int(dut.timeout.value), f"timed out after {stats['cycles']} cycles"
