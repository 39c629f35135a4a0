"""A sweep point's hardware: its Verilog and the structural features the estimate uses.

Two kinds of design, as in ARCHITECTURE.md: the N:M MAC-array ``engine`` (its
hardware depends only on :class:`EngineConfig`; the N:M pattern is run-time)
and the ``dataflow`` pipeline (one stage per layer, its multipliers and
multiplexers set by the network's pruned taps and the reuse factor).

Features are counts a designer would reach for (multipliers, multiplexer
input bits, accumulator bits, buffer bits), computed the same way for the
calibration runs and for every sweep point.
"""

from __future__ import annotations

from accel.compiler.dataflow import DataflowPlan
from accel.engine.config import EngineConfig
from accel.ir import Graph

ENGINE_TOP = "accel_engine"

# ECP5 DP16KD shapes (depth, width): 18 kbit of which 16 kbit addressable at x1/x2/x4
_BRAM_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))


# yosys put a 32-deep buffer in distributed RAM and 64-deep ones in DP16KD blocks
LUTRAM_MAX_DEPTH = 32


def bram_blocks(depth: int, width: int) -> int:
    """Fewest DP16KD blocks for a depth x width memory over the block's shapes (0 for a
    memory shallow enough for distributed RAM)."""
    if depth <= LUTRAM_MAX_DEPTH:
        return 0
    return min(-(-depth // d) * -(-width // w) for d, w in _BRAM_SHAPES)


def engine_memories(cfg: EngineConfig) -> dict[str, tuple[int, int, int]]:
    """name -> (count, depth, width) of the engine's buffers."""
    from accel.engine.isa import instruction_layout

    return {
        "a": (cfg.rows, cfg.a_depth, cfg.group * cfg.a_bits),
        "b": (1, cfg.b_depth, cfg.cols * (cfg.b_bits + cfg.idx_bits)),
        "bias": (1, cfg.bias_depth, cfg.cols * cfg.acc_bits),
        "imem": (1, cfg.imem_depth, instruction_layout(cfg).size),
        # without a bilinear sampler only lane 0 (the square offset) is ever read, and
        # yosys drops the other lanes' bits
        "offsets": (
            cfg.rows,
            cfg.offset_depth,
            (cfg.group if cfg.bilinear_frac else 1) * cfg.offset_bits,
        ),
    }


def engine_features(cfg: EngineConfig) -> dict[str, float]:
    mem = engine_memories(cfg)
    macs = cfg.macs
    return {
        "one": 1.0,
        "macs": macs,
        "rows": cfg.rows,  # each row's sampler: its own bank address, bounds and offset
        "mux_bits": macs * cfg.group * cfg.a_bits,  # every PE's group-to-1 activation mux
        "acc_bits": macs * cfg.acc_bits,  # accumulators (and the drain's copies)
        "prod_bits": macs * (cfg.a_bits + cfg.b_bits),  # registered products
        "mult_area": macs * cfg.a_bits * cfg.b_bits,
        "drain_bits": cfg.group * cfg.acc_bits,  # the drain's lanes (run-time requantize)
        "a_word_bits": cfg.rows * cfg.group * cfg.a_bits,  # activation words read per step
        "b_word_bits": cfg.cols * (cfg.b_bits + cfg.idx_bits),  # weight words read per step
        "buffer_bits": sum(n * d * w for n, d, w in mem.values()),
        "bram_blocks": sum(n * bram_blocks(d, w) for n, d, w in mem.values()),
        "word_bits": mem["imem"][2],  # the instruction (and input stream) word
    }


def engine_verilog(cfg: EngineConfig) -> tuple[str, str]:
    """(top, Verilog) of the engine for ``cfg``, cached like every design's."""
    from accel.sim.engine import engine_verilog as verilog

    return ENGINE_TOP, verilog(cfg, ENGINE_TOP)


def dataflow_features(graph: Graph, plan: DataflowPlan, nodsp: bool = False) -> dict[str, float]:
    """Per stage: multipliers, taps beyond one per multiplier (the weight muxes, and the
    operand muxes: per lane, or per block of lanes sharing their inputs),
    adders, accumulators, output registers and the lanes' registers past the multipliers,
    weighted by their bit widths. ``nodsp``: the
    multipliers are built from LUTs (``lut_mult_area``) instead of DSP blocks (``dsp_mults``)."""
    nodes = {n.name: n for n in graph.nodes}
    keys = ("mults", "taps", "mult_bits", "mult_area", "mux_bits", "tap_in_bits", "tap_acc_bits")
    f = dict.fromkeys((*keys, "acc_bits", "out_bits", "lane_reg_bits"), 0.0)
    for st in plan.stages:
        a, w = st.in_type.width, nodes[st.name].params["weight"].type.width
        f["mults"] += st.n_mult
        f["taps"] += st.n_taps
        f["mult_bits"] += st.n_mult * (a + w)
        f["mult_area"] += st.n_mult * a * w
        # every lane's weight multiplexer; an input multiplexer per lane, or per block of
        # lanes that share their inputs
        picks = st.n_taps - st.n_mult
        if st.shared_inputs:
            picks = len({tuple(i for _, i, _ in lane) for lane in st.lanes()}) * (st.reuse - 1)
        f["mux_bits"] += (st.n_taps - st.n_mult) * w + picks * a
        # registers of the lanes past the multiplier: each output's copy of a product
        # (reuse > 1) and each lane's pick, or copy of its block's pick (shared inputs)
        if st.reuse > 1:
            pairs = sum(len({o for o, _, _ in lane} - {-1}) for lane in st.lanes())
            f["lane_reg_bits"] += pairs * (a + w) + st.n_mult * a
        f["tap_in_bits"] += st.n_taps * a
        f["tap_acc_bits"] += st.n_taps * st.acc.width  # an accumulating adder per tap
        f["acc_bits"] += st.n_out * st.acc.width
        f["out_bits"] += st.n_out * st.out_type.width
    f["in_bits"] = plan.n_in * plan.in_type.width
    f["dsp_mults"] = 0.0 if nodsp else f["mults"]
    f["lut_mult_area"] = f["mult_area"] if nodsp else 0.0
    return {"one": 1.0, **f}


def dataflow_verilog(plan: DataflowPlan) -> tuple[str, str]:
    from accel.backends import dataflow_verilog as verilog

    return verilog(plan)
