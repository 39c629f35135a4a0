"""Timing without place and route: every block's logic depth stays within its budget.

Each block is synthesized alone between registers (yosys ``synth_ecp5``, the
board flow's mapping; ``accel.flows.blocks``) and its worst register-to-register
path counted in LUT levels. A block over its budget fails here, in seconds,
instead of in a 20-minute place and route. The blocks are the ones the board
builds, at sizes that synthesize quickly (the depth of these blocks does not
grow with the array: rows and columns are copies side by side). Results are
cached under ``$ACCEL_CACHE/blocks`` by each block's Verilog.
"""

import json
import re

import pytest

from accel import zoo
from accel.flows import blocks

TABLE = blocks.blocks(small=True, graph=zoo.get("autoencoder").build())
# the vector unit takes about a minute to synthesize even at 2 x 2
SLOW = {"vector"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else []) for n in TABLE]
)
def test_logic_depth_within_budget(name):
    doc = blocks.synthesize(TABLE[name])
    assert doc["levels"] <= doc["budget"], (
        f"{name}: {doc['levels']} LUT levels between registers, budget {doc['budget']}: "
        + " -> ".join(doc["deepest_path"])
    )
    assert doc["luts"] > 0 and doc["flip_flops"] > 0  # the block was not optimised away


def _netlist(cells: dict, bits: dict) -> dict:
    return {"modules": {"block": {"cells": cells, "netnames": bits}}}


def _cell(kind: str, ins: dict, outs: dict) -> dict:
    return {
        "type": kind,
        "port_directions": {**{p: "input" for p in ins}, **{p: "output" for p in outs}},
        "connections": {**{p: [b] for p, b in ins.items()}, **{p: [b] for p, b in outs.items()}},
    }


def test_logic_depth_counts_luts_not_carries_or_wide_muxes():
    """FF -> LUT -> carry chain (3 cells) -> PFUMX -> LUT -> FF is 3 levels."""
    cells = {
        "ff_a": _cell("TRELLIS_FF", {"DI": 1}, {"Q": 2}),
        "lut1": _cell("LUT4", {"A": 2, "B": 2}, {"Z": 3}),
        "c0": _cell("CCU2C", {"A0": 3, "CIN": 0}, {"COUT": 4, "S0": 5}),
        "c1": _cell("CCU2C", {"A0": 2, "CIN": 4}, {"COUT": 6, "S0": 7}),
        "c2": _cell("CCU2C", {"A0": 2, "CIN": 6}, {"COUT": 8, "S0": 9}),
        "mux": _cell("PFUMX", {"ALUT": 9, "BLUT": 2, "C0": 2}, {"Z": 10}),
        "lut2": _cell("LUT4", {"A": 10}, {"Z": 11}),
        "ff_b": _cell("TRELLIS_FF", {"DI": 11}, {"Q": 12}),
        "dsp": _cell("MULT18X18D", {"A0": 12}, {"P0": 13}),
        "ff_c": _cell("TRELLIS_FF", {"DI": 13}, {"Q": 14}),
    }
    names = {
        "a": {"bits": [2], "hide_name": 0},
        "b": {"bits": [12], "hide_name": 0},
        "c": {"bits": [14], "hide_name": 0},
    }
    depth = blocks.logic_depth(json.loads(json.dumps(_netlist(cells, names))))
    assert depth.levels == max(3, blocks.DSP_LEVELS)
    del cells["dsp"], cells["ff_c"]
    depth = blocks.logic_depth(_netlist(cells, names))
    assert depth.levels == 3 and depth.path == ["a", "b"]


def test_a_dsp_block_with_its_output_register_ends_paths():
    """FF -> LUT -> MULT18X18D with REG_OUTPUT_CLK -> LUT -> FF: two paths of 1 level."""
    cells = {
        "ff_a": _cell("TRELLIS_FF", {"DI": 1}, {"Q": 2}),
        "lut1": _cell("LUT4", {"A": 2}, {"Z": 3}),
        "dsp": _cell("MULT18X18D", {"A0": 3}, {"P0": 4}),
        "lut2": _cell("LUT4", {"A": 4}, {"Z": 5}),
        "ff_b": _cell("TRELLIS_FF", {"DI": 5}, {"Q": 6}),
    }
    names = {"a": {"bits": [2], "hide_name": 0}, "b": {"bits": [6], "hide_name": 0}}
    assert blocks.logic_depth(_netlist(cells, names)).levels == 2 + blocks.DSP_LEVELS
    cells["dsp"]["parameters"] = {"REG_INPUTA_CLK": "CLK0", "REG_OUTPUT_CLK": "CLK0"}
    depth = blocks.logic_depth(_netlist(cells, names))
    assert depth.levels == 1 and not depth.hard_blocks


def test_dataflow_products_take_the_dsp_blocks_registers_on_ecp5():
    """Elaborated for the board, every multiplier of a layer with reuse is one MULT18X18D
    with its operand and product registers; for simulation, plain ``*`` between fabric
    registers (the same cycles: the cycle model does not know which)."""
    from amaranth.back import verilog

    from accel.compiler.dataflow import lower
    from accel.flows.boards import get as get_board
    from accel.rtl.dotlayer import DotLayer

    stage = lower(zoo.get("autoencoder").build(), 16).stages[0]  # the conv layer: 34 lanes
    board = verilog.convert(DotLayer(stage), platform=get_board("ulx3s-85f").platform())
    assert board.count("MULT18X18D #(") == stage.n_mult == 34
    for reg in ("REG_INPUTA_CLK", "REG_INPUTB_CLK", "REG_OUTPUT_CLK"):
        assert board.count(f'.{reg}("CLK0")') == 34
    assert "MULT18X18D" not in verilog.convert(DotLayer(stage))


def test_the_engine_array_takes_its_planned_dsp_sites_on_the_85k_die():
    """On the ULX3S 85F the MAC array's 64 multipliers go to 64 distinct sites spread
    over all three DSP rows (nextpnr's ``BEL``), with the DSP blocks' registers; a part
    whose sites are unknown, or an array too big for the plan, is left to the placer."""
    from amaranth.back import verilog

    from accel.engine.config import EngineConfig
    from accel.flows.boards import get as get_board
    from accel.rtl.dsp import dsp_sites
    from accel.rtl.engine.mac_array import MacArray, floorplan

    cfg = blocks.engine_config()
    platform = get_board("ulx3s-85f").platform()
    sites = dsp_sites(platform)
    assert [len(r) for r in sites] == [52, 52, 52]
    plan = floorplan(cfg, sites)
    assert len(set(plan.values())) == 64
    assert {s.split("/")[1] for s in plan.values()} == {"Y10", "Y34", "Y58"}
    # a PE row keeps to one DSP row
    assert all(len({plan[p, q].split("/")[1] for q in range(8)}) == 1 for p in range(8))
    text = verilog.convert(MacArray(cfg), platform=platform)
    assert text.count("MULT18X18D #(") == 64
    assert sorted(set(re.findall(r'\(\* BEL = "([^"]+)" \*\)', text))) == sorted(plan.values())
    assert floorplan(EngineConfig(rows=16, cols=16, group=8), sites) is None
    assert dsp_sites(get_board("ulx3s-45f").platform()) is None


def test_each_drain_lane_keeps_its_own_copy_of_the_instruction_on_ecp5():
    """yosys merges identical inferred registers; on the board each requantizer lane's
    copy of the drain fields is made of TRELLIS_FF cells of its own (one per bit), and
    in simulation plain registers (no vendor cells)."""
    from amaranth.back import verilog
    from amaranth.hdl import Signal, Value

    from accel.engine.isa import instruction_layout
    from accel.flows.boards import get as get_board
    from accel.rtl.engine.requant import DRAIN_FIELDS, Requantizer

    cfg = blocks.engine_config()
    instr = Signal(instruction_layout(cfg))
    bits = sum(len(Value.cast(getattr(instr, f))) for f in DRAIN_FIELDS)
    board = verilog.convert(Requantizer(cfg), platform=get_board("ulx3s-85f").platform())
    assert board.count("TRELLIS_FF #(") == bits
    assert "TRELLIS_FF" not in verilog.convert(Requantizer(cfg))
