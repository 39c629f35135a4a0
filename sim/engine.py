"""Run engine programs under Verilator: whole program in, every result word out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accel.engine.config import EngineConfig
from accel.engine.cycles import ProgramTiming, predict
from accel.engine.isa import word_width
from accel.engine.program import Program
from accel.sim.verilator import StreamSim

TOP = "accel_engine"


def engine_sim(cfg: EngineConfig) -> StreamSim:
    """The engine's Verilator model (built once per configuration, then cached)."""
    from accel.rtl.engine.core import to_verilog

    return StreamSim(to_verilog(cfg, TOP), TOP, word_width(cfg), cfg.group * cfg.acc_bits, 1)


@dataclass
class EngineRun:
    outputs: list[np.ndarray]  # one padded C per streamed GEMM
    out_valid: np.ndarray  # measured cycle each output word turned valid
    cycles: int  # last output word's handshake
    model: ProgramTiming
    wall_s: float
    build_s: float

    @property
    def cycles_match(self) -> bool:
        return np.array_equal(self.out_valid, self.model.out_valid)


def run_program(
    program: Program,
    src_valid: np.ndarray | None = None,
    sink_ready: np.ndarray | None = None,
) -> EngineRun:
    sim = engine_sim(program.cfg)
    run = sim.run(program.words(), src_valid, sink_ready, n_out=program.n_out_words())
    return EngineRun(
        outputs=program.split_outputs(run.outputs),
        out_valid=run.valid,
        cycles=int(run.taken[-1]) if len(run.taken) else 0,
        model=predict(program),
        wall_s=run.wall_s,
        build_s=run.build_s,
    )
