"""accel's C++ main for cocotb (accel.sim.harness.COCOTB_MAIN): cocotb's timers, ReadOnly
and edge triggers keep their meaning while the loop clocks the harness."""

import numpy as np
from test_uart import tiny_graph

from accel.backends import stream_sim
from accel.compiler.dataflow import lower
from accel.hexio import pack_hex
from accel.sim import verilator


def test_cocotb_timers_and_triggers_on_the_clocked_main(tmp_path):
    plan = lower(tiny_graph(), 1)
    sim = stream_sim(plan, 400)
    sim.build()
    x = np.random.default_rng(0).integers(-128, 128, (400, 3))
    words = pack_hex(x, plan.in_type.width)
    # every other cycle stalls the source: 400 samples take ~800 cycles, past the timers
    plusargs = sim._write_inputs(tmp_path, words, np.array([1, 0]), None, None, len(words))
    results = tmp_path / "results.xml"
    verilator._runner().test(
        test_module="cocotb_sim_main",
        hdl_toplevel=verilator.TOP,
        hdl_toplevel_lang="verilog",
        build_dir=sim.build_dir / "obj",
        test_dir=tmp_path,
        plusargs=plusargs,
        results_xml=str(results),
        log_file=tmp_path / "sim.log",
    )
    text = results.read_text()
    assert "timers_land_on_their_cycles" in text and "<failure" not in text, text
