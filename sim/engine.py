"""Run engine programs under Verilator: whole program in, every result word out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accel.engine.config import EngineConfig
from accel.engine.cycles import ProgramTiming, predict
from accel.engine.isa import word_width
from accel.engine.program import Program
from accel.ir.graph import Graph
from accel.sim.verilator import StreamSim

TOP = "accel_engine"


def _what(cfg: EngineConfig) -> str:
    return f"the {cfg.rows}x{cfg.cols} engine{' with the vector unit' if cfg.vector else ''}"


def _design(cfg: EngineConfig, top: str) -> dict:
    def make():
        from accel.rtl.engine.core import Engine

        return Engine(cfg)

    return {
        "key": ("engine", cfg, top),
        "make": make,
        "sources": ["accel.rtl.engine.core"],
        "what": _what(cfg),
    }


def engine_rtlil(cfg: EngineConfig, top: str = TOP) -> str:
    """The engine's RTLIL for ``cfg`` (Amaranth's elaboration), cached on disk by the
    configuration and the generator's source (:mod:`accel.cache`)."""
    from accel.cache import cached_rtlil

    return cached_rtlil(**_design(cfg, top))


def engine_verilog(cfg: EngineConfig, top: str = TOP) -> str:
    """The engine's Verilog for ``cfg`` (Amaranth's, from :func:`engine_rtlil`), cached
    the same way: only the first run elaborates and converts it."""
    from accel.cache import cached_verilog

    return cached_verilog(**_design(cfg, top))


# Before Verilator: accel.sim.verilator's passes with opt_expr's fine-grained rewrites
# (-fine, -mux_bool, -mux_undef): 1.07x the 8x8 engine's cycles/s (one run each); on the
# autoencoder they halved its speed (0.073 against 0.153 M cycles/s), so they are the
# engine's alone. The vector engine takes none (see README, Simulation speed).
SIM_PASSES = "proc; flatten; opt -mux_undef -mux_bool -fine; wreduce; opt_clean"


def engine_sim(cfg: EngineConfig, words: int = 1) -> StreamSim:
    """The engine's Verilator model (built once per configuration and capacity, then cached).

    The harness holds 65,536 words each way; a longer run gets a larger one.
    """
    return StreamSim(
        engine_verilog(cfg),
        TOP,
        word_width(cfg),
        cfg.group * cfg.acc_bits,
        words,
        passes="" if cfg.vector else SIM_PASSES,
        rtlil=None if cfg.vector else engine_rtlil(cfg),
    )


@dataclass
class EngineRun:
    outputs: list[np.ndarray]  # one padded C per streamed GEMM
    out_valid: np.ndarray  # measured cycle each output word turned valid
    cycles: int  # last output word's handshake
    model: ProgramTiming
    wall_s: float
    build_s: float
    config: EngineConfig | None = None

    @property
    def cycles_match(self) -> bool:
        return np.array_equal(self.out_valid, self.model.out_valid)


def _simulate(
    program: Program, src_valid: np.ndarray | None = None, sink_ready: np.ndarray | None = None
) -> tuple[list[str], EngineRun]:
    words = program.words()
    n_out = program.n_out_words()
    run = engine_sim(program.cfg, max(len(words), n_out)).run(
        words, src_valid, sink_ready, n_out=n_out
    )
    return run.outputs, EngineRun(
        outputs=[],
        out_valid=run.valid,
        cycles=int(run.taken[-1]) if len(run.taken) else 0,
        model=predict(program),
        wall_s=run.wall_s,
        build_s=run.build_s,
        config=program.cfg,
    )


def run_program(
    program: Program,
    src_valid: np.ndarray | None = None,
    sink_ready: np.ndarray | None = None,
) -> EngineRun:
    """Run a compiled program; ``outputs`` holds one padded C per streamed GEMM."""
    lines, run = _simulate(program, src_valid, sink_ready)
    run.outputs = program.split_outputs(lines)
    return run


def run_graph(graph: Graph, cfg: EngineConfig, x: np.ndarray) -> tuple[np.ndarray, EngineRun]:
    """Raw integer outputs of ``graph`` on the engine, with the run's measurements."""
    from accel.engine.graph import compile_graph, outputs

    program, sizes = compile_graph(graph, cfg, x)
    lines, run = _simulate(program)
    y = outputs(program, sizes, graph, lines).reshape(
        len(x), *graph.tensors[graph.outputs[0]].shape
    )
    run.outputs = [y]
    return y, run


def run_tokens(graph: Graph, cfg: EngineConfig, x: np.ndarray) -> tuple[np.ndarray, EngineRun]:
    """Raw integer outputs (N, T, C) of a token graph (a ViT) on images ``x``, one by one."""
    from accel.engine.vit import compile_tokens, token_outputs

    tp = compile_tokens(graph, cfg, x)
    lines, run = _simulate(tp.program)
    y = np.stack(token_outputs(tp, lines))
    run.outputs = [y]
    return y, run


def run_inferences(tp) -> tuple[list[np.ndarray], EngineRun]:
    """A compiled sequence of inferences (``accel.engine.vit.compile_inferences``)."""
    from accel.engine.vit import token_outputs

    lines, run = _simulate(tp.program)
    run.outputs = token_outputs(tp, lines)
    return run.outputs, run
