"""The engine target: one MAC array (N:M sparse mode, deformable sampler, optional vector
unit) running a compiled program, for networks too big to unroll.

Owns :class:`accel.engine.config.EngineConfig` (its knobs), picks the compiler
a graph needs (the layer-chain compiler :mod:`accel.engine.graph`, or the token
compiler :mod:`accel.engine.vit` for ViTs), and reads the cycle model
:mod:`accel.engine.cycles`. The engine's hardware depends only on the config;
the program (instructions and the data its loads take) on the inputs too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from accel.engine import graph as chain
from accel.engine import vit
from accel.engine.config import EngineConfig
from accel.engine.cycles import predict
from accel.engine.program import Program
from accel.errors import AccelError
from accel.ir import Graph
from accel.knobs import check
from accel.targets.base import Design, Simulation, Target

TOP = "accel_engine"


class EngineDesign(Design):
    target = "engine"
    test_samples = 64  # a few chunks of a program; a ViT image is a whole inference

    def __init__(self, graph: Graph, config: EngineConfig) -> None:
        self.graph, self.config = graph, config
        self.tokens = vit.is_token_graph(graph)

    @property
    def top(self) -> str:
        return TOP

    def verilog(self) -> str:
        from accel.sim.engine import engine_verilog

        return engine_verilog(self.config, TOP)

    def component(self) -> Any:
        from accel.rtl.engine.core import Engine

        return Engine(self.config)

    @property
    def multipliers(self) -> int:
        return self.config.macs

    def place_and_route(self) -> dict[str, str]:
        # nextpnr's analytical placer packs the engine (a quarter of the 85F) beside its
        # pins, where router2 stalls at 16k overused wires; spread by the electrostatic
        # placer, the same netlist got to a few hundred (README, issue 15)
        return {"router": "router2", "placer": "static"}

    def features(self, nodsp: bool = False) -> dict[str, float]:
        from accel.dse.designs import engine_features

        return engine_features(self.config)

    def estimate_gap(self) -> str:
        if self.config.vector:
            return "the estimate leaves out the vector unit (no calibration run has one)"
        return ""

    def program(self, x: np.ndarray) -> tuple[Program, Callable[[list[np.ndarray]], np.ndarray]]:
        """The program for raw inputs ``x`` and the function taking
        :meth:`Program.split_values` of its output words to the graph's outputs (N, ...)."""
        shape = self.graph.tensors[self.graph.outputs[0]].shape
        if self.tokens:
            tp = vit.compile_tokens(self.graph, self.config, x)

            def tokens(mats: list[np.ndarray]) -> np.ndarray:
                return np.stack(vit.token_values(tp, mats)).reshape(len(x), *shape)

            return tp.program, tokens
        prog, sizes = chain.compile_graph(self.graph, self.config, x)

        def layers(mats: list[np.ndarray]) -> np.ndarray:
            return chain.output_values(prog, sizes, self.graph, mats).reshape(len(x), *shape)

        return prog, layers

    def timing(self, x: np.ndarray) -> dict[str, Any]:
        """The cycle model for a batch ``x``: its cycles (``latency_cycles`` too: the
        batch is one program), per sample, in GEMMs and their utilisation."""
        from accel.engine.isa import Target as Buffer

        cfg = self.config
        prog, _ = self.program(x)
        t = predict(prog)
        gemm = sum(g.cycles for g in t.gemms)
        useful = sum(g.useful_macs for g in t.gemms)
        b_words = sum(len(s.words) for s in prog.steps if getattr(s, "target", None) == Buffer.B)
        return {
            "macs": cfg.macs,
            "cycles": t.total,
            "latency_cycles": t.total,
            "last_out_cycle": int(t.out_valid[-1]) if len(t.out_valid) else 0,
            "cycles_per_sample": t.total / max(len(x), 1),
            "gemm_cycles": gemm,
            "utilisation": round(useful / (cfg.macs * gemm), 4) if gemm else 0.0,
            "weight_kbits": round(b_words * cfg.cols * (cfg.b_bits + cfg.idx_bits) / 1000, 1),
        }

    def expected_words(self, x: np.ndarray) -> dict[str, Any]:
        """What a testbench needs: the input stream's words, each output word's expected
        lanes (the reference's values; lanes no output comes from are masked off) and the
        cycle the model says it turns valid."""
        from accel import reference
        from accel.hexio import pack_fields_hex

        prog, decode = self.program(x)
        cfg, n_out = self.config, prog.n_out_words()
        where = decode(prog.split_values(np.arange(n_out * cfg.group).reshape(n_out, cfg.group)))
        values = np.zeros(n_out * cfg.group, np.int64)
        values[where.ravel()] = reference.predict(self.graph, x).ravel()
        ones = np.zeros(n_out * cfg.group, np.int64)
        ones[where.ravel()] = (1 << cfg.acc_bits) - 1
        lanes = (n_out, cfg.group)
        return {
            "inputs": prog.words(),
            "expected": pack_fields_hex([(values.reshape(lanes), cfg.acc_bits)]),
            "mask": pack_fields_hex([(ones.reshape(lanes), cfg.acc_bits)]),
            "valid_cycles": predict(prog).out_valid,
            "instructions": len(prog.instructions()),
        }

    def simulate(self, x: np.ndarray, *, backpressure_seed: int | None = None) -> Simulation:
        from accel.sim.engine import run_graph, run_tokens

        if backpressure_seed is not None:
            raise AccelError(
                "--backpressure is for the dataflow design; the engine's tests stall it "
                "through its GEMMs"
            )
        y, run = (run_tokens if self.tokens else run_graph)(self.graph, self.config, x)
        gemms = run.model.gemms
        names = [t.name for t in gemms]
        per_chunk = len(gemms) // max(1, names.count(names[0])) if names else 0
        report = {
            "engine": self.config.to_json(),
            "last_output_cycle": {
                "measured": int(run.out_valid[-1]),
                "model": int(run.model.out_valid[-1]),
            },
            "layers": [
                {"gemm": t.name, "cycles": t.cycles, "utilisation": round(t.utilisation, 3)}
                for t in gemms[:per_chunk]
            ],
        }
        return Simulation(y, run.cycles_match, run.cycles, run.wall_s, run.build_s, report)

    def write_verilog(self, out: Path, x: np.ndarray) -> dict[str, Any]:
        from accel.flows import verilog

        return verilog.write_engine(self, out, x)


class EngineTarget(Target):
    name = "engine"
    description = "one MAC array running a compiled program (N:M, deformable, vector unit)"
    Config = EngineConfig

    def check(self, graph: Graph) -> None:
        if not vit.is_token_graph(graph):
            chain.check(graph)

    def configure(
        self, graph: Graph, given: dict[str, Any], prefs: dict[str, Any], board: str | None = None
    ) -> EngineConfig:
        tokens = vit.is_token_graph(graph)
        if "vec_rows" in given and not tokens:
            raise AccelError(f"--vec-rows is for the vector unit; {graph.name} does not use it")
        needs: dict[str, Any] = dict(vit.TOKEN_NEEDS) if tokens else {}
        bilinear = {
            n.attrs["offset_frac"]
            for n in graph.nodes
            if n.op == "deform_conv2d" and n.attrs["mode"] == "bilinear"
        }
        if bilinear:
            needs["bilinear_frac"] = max(bilinear)
        merged = {**needs, **prefs, **check(EngineConfig, given)}
        if tokens:  # the group is the rows: a transposed tile column is one weight word
            rows = merged.get("rows", EngineConfig.rows)
            if merged.setdefault("cols", rows) != rows:
                raise AccelError(
                    f"the vector engine's array must be square (its group is the rows), got "
                    f"{rows}x{merged['cols']}"
                )
            merged.setdefault("group", rows)
        return EngineConfig(**merged)

    def fit(self, design: Design, board: str, *, build: bool) -> None:
        from accel.dse.devices import check_engine

        check_engine(design.config, board)  # simulated or built, it is elaborated

    def compile(self, graph: Graph, config: EngineConfig) -> EngineDesign:
        self.check(graph)
        return EngineDesign(graph, config)
