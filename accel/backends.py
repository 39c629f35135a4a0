"""The execution backends of ``accel predict --engine``, all returning the same raw integers.

``reference`` is numpy; ``rtl`` is the generated Verilog under Verilator
(through cocotb); ``amaranth`` is the same design in Amaranth's simulator;
``hls4ml`` is hls4ml's compiled C simulation of the project accel writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accel import reference
from accel.compiler.dataflow import DataflowPlan, lower
from accel.errors import AccelError
from accel.ir import Graph
from accel.perf import DataflowTiming

ENGINES = ("reference", "rtl", "amaranth", "hls4ml")


def _design(plan: DataflowPlan) -> dict:
    def make():
        from accel.rtl.dataflow import DataflowAccelerator

        return DataflowAccelerator(plan)

    top = f"accel_{plan.name}"
    return {
        "key": ("dataflow", plan, top),
        "make": make,
        "sources": ["accel.rtl.dataflow"],
        "what": f"the dataflow design {top}",
    }


def dataflow_rtlil(plan: DataflowPlan) -> tuple[str, str]:
    """(top module name, RTLIL) of the dataflow design for ``plan`` (Amaranth's
    elaboration), cached on disk by the plan and the generator's source."""
    from accel.cache import cached_rtlil

    design = _design(plan)
    return design["key"][-1], cached_rtlil(**design)


def dataflow_verilog(plan: DataflowPlan) -> tuple[str, str]:
    """(top module name, Verilog) of the dataflow design for ``plan``.

    Amaranth's Verilog of :func:`dataflow_rtlil`, cached on disk by the plan and the
    generator's source (:mod:`accel.cache`): only the first run elaborates and converts it.
    """
    from accel.cache import cached_verilog

    design = _design(plan)
    return design["key"][-1], cached_verilog(**design)


def stream_sim(plan: DataflowPlan, n_max: int):
    from accel.sim.verilator import StreamSim

    top, verilog = dataflow_verilog(plan)
    return StreamSim(
        verilog,
        top,
        plan.n_in * plan.in_type.width,
        plan.n_out * plan.out_type.width,
        n_max,
        rtlil=dataflow_rtlil(plan)[1],
    )


@dataclass
class RtlRun:
    """Outputs and measured cycles of an RTL run, next to the cycle model's."""

    outputs: np.ndarray
    measured: dict[str, np.ndarray]
    predicted: dict[str, np.ndarray]
    timing: DataflowTiming
    cycles: int
    wall_s: float
    build_s: float

    @property
    def cycles_match(self) -> bool:
        return all(np.array_equal(self.measured[k], self.predicted[k]) for k in self.predicted)


def run_rtl(
    graph: Graph,
    x: np.ndarray,
    reuse: int | dict[str, int] = 1,
    src_valid: np.ndarray | None = None,
    sink_ready: np.ndarray | None = None,
    plan: DataflowPlan | None = None,
) -> RtlRun:
    """Simulate the dataflow RTL on raw inputs ``x`` under Verilator (the design of
    ``plan``, or of ``graph`` lowered at ``reuse``)."""
    from accel.hexio import pack_hex, unpack_hex

    x = reference.check_raw_inputs(graph, graph.inputs[0], x)
    plan = plan or lower(graph, reuse)
    sim = stream_sim(plan, len(x))
    run = sim.run(pack_hex(x.reshape(len(x), plan.n_in), plan.in_type.width), src_valid, sink_ready)
    t = plan.out_type
    y = unpack_hex(run.outputs, t.width, plan.n_out, t.signed).reshape(len(x), *plan.out_shape)
    timing = plan.timing()
    measured = {k: getattr(run, k) for k in ("present", "accept", "valid", "taken")}
    return RtlRun(
        y,
        measured,
        timing.schedule(len(x), src_valid, sink_ready),
        timing,
        run.cycles,
        run.wall_s,
        run.build_s,
    )


def predict(graph: Graph, x: np.ndarray, engine: str = "reference", reuse: int = 1) -> np.ndarray:
    """Raw integer outputs of ``graph`` on raw integer inputs ``x``."""
    if engine == "reference":
        return reference.predict(graph, x)
    if engine == "rtl":
        return run_rtl(graph, x, reuse).outputs
    if engine == "amaranth":
        from accel.sim import pysim

        x = reference.check_raw_inputs(graph, graph.inputs[0], x)
        return pysim.run(lower(graph, reuse), x)[0]
    if engine == "hls4ml":
        from accel.flows import hls4ml

        x = reference.check_raw_inputs(graph, graph.inputs[0], x)
        return hls4ml.predict(graph, x, reuse=reuse)
    raise AccelError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
