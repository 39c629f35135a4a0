"""Run a dataflow design in Amaranth's own Python simulator.

Slow (thousands of cycles per second) but needs no C++ toolchain, and it is a
second, independent simulation of the same Amaranth description.
"""

from __future__ import annotations

import time

import numpy as np
from amaranth.sim import Simulator

from accel.compiler.dataflow import DataflowPlan
from accel.rtl.dataflow import DataflowAccelerator
from accel.sim.harness import pack_hex, unpack_hex


def run(plan: DataflowPlan, x: np.ndarray) -> tuple[np.ndarray, dict]:
    """Stream raw input rows through the design; returns raw outputs and stats."""
    dut = DataflowAccelerator(plan)
    words = [int(h, 16) for h in pack_hex(x.reshape(len(x), plan.n_in), plan.in_type.width)]
    got: list[int] = []
    stats = {"cycles": 0}

    async def testbench(ctx) -> None:
        ctx.set(dut.o.ready, 1)
        sent = 0
        while len(got) < len(words):
            ctx.set(dut.i.valid, sent < len(words))
            if sent < len(words):
                ctx.set(dut.i.payload.as_value(), words[sent])
            *_, i_ready, o_valid, o_payload = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.payload.as_value()
            )
            stats["cycles"] += 1
            if sent < len(words) and i_ready:
                sent += 1
            if o_valid:
                got.append(o_payload)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    t0 = time.perf_counter()
    sim.run()
    stats["wall_s"] = time.perf_counter() - t0
    out_t = plan.out_type
    y = unpack_hex([f"{v:x}" for v in got], out_t.width, plan.n_out, out_t.signed)
    return y.reshape(len(x), *plan.out_shape), stats
