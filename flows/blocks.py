"""Timing of the RTL's blocks alone: synthesis, logic depth, place and route, in minutes.

Each block (the engine's requantizer, drain, address generator, sampler, MAC
array and vector unit; the dataflow's dot layer) is built out of context
between registers: :class:`Boundary` feeds every input bit from a shift
register (one serial pin) and captures every output bit in a register that a
second shift register reads out, so every timing path starts and ends at a
flip-flop, nothing is optimised away, and the chip needs five pins.

- :func:`synthesize`: yosys ``synth_ecp5`` (the board flow's mapping), cells
  and the **logic depth**: LUT levels on the worst register-to-register path
  of the mapped netlist (:func:`logic_depth`), with the path's signal names.
  Seconds per block; results are cached by the block's Verilog.
- :func:`place_and_route`: nextpnr-ecp5 on the synthesized block (the board's
  device, package and speed grade; I/O unconstrained), Fmax and the critical
  path nextpnr names. About a minute per block.

Both run the tools through :func:`accel.flows.fpga.run_tool`, the board flow's
runner.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import (
    Cat,
    ClockDomain,
    ClockSignal,
    DomainRenamer,
    Module,
    ResetSignal,
    Shape,
    Signal,
    Value,
)
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from accel.errors import AccelError
from accel.flows import fpga
from accel.flows.boards import Board
from accel.flows.boards import get as get_board
from accel.flows.fpga import _derived, _tidy, critical_path

# Levels a hard block adds on a path when it has no register of its own:
# MULT18X18D is about 3.4 ns combinational at speed grade 6, four LUTs and their routing.
DSP_LEVELS = 4
# LUT input -> output (a PFUMX or L6MUX21 widening a LUT adds no level; a carry
# chain is entered through a LUT input and rippled through for free)
_COMB = {"LUT4", "PFUMX", "L6MUX21", "CCU2C", "MULT18X18D", "TRELLIS_DPR16X4"}


class Boundary(wiring.Component):
    """``make()``'s component between registers: inputs from a shift chain, outputs captured.

    ``sin`` shifts into a chain of flip-flops whose copy (a register per bit)
    drives every input bit of the block; every output bit is registered and
    folded (exclusive or) into a second chain shifted out on ``sout``, whose
    first flip-flop takes ``load``.
    """

    def __init__(self, make: Callable[[], wiring.Component]) -> None:
        self.make = make
        super().__init__({"sin": In(1), "load": In(1), "sout": Out(1)})

    def elaborate(self, platform) -> Module:
        m = Module()
        block = self.make()
        # the block's reset comes from a register (the reset pin's path is not the block's)
        m.domains.core = core = ClockDomain("core")
        rst = Signal(reset_less=True)
        m.d.sync += rst.eq(ResetSignal("sync"))
        m.d.comb += [core.clk.eq(ClockSignal("sync")), core.rst.eq(rst)]
        m.submodules.block = DomainRenamer("core")(block)
        ins, outs = [], []
        self.ports = {"in": [], "out": []}  # (port path, width) in bit order
        for path, member, value in block.signature.flatten(block):
            flow = "in" if member.flow is In else "out"
            (ins if flow == "in" else outs).append(Value.cast(value))
            self.ports[flow] += _fields(".".join(map(str, path)), value)
        n_in = max(1, sum(len(v) for v in ins))
        chain = Signal(n_in + 1, name="block_chain", reset_less=True)
        sin, load = Signal(reset_less=True), Signal(reset_less=True)  # the pins, registered
        m.d.sync += [sin.eq(self.sin), load.eq(self.load)]
        m.d.sync += chain.eq(Cat(chain[1:], sin))
        # the inputs: a copy of the chain, so a block's own input register is not the
        # chain's next flip-flop (yosys merges flip-flops with one input: a pipeline
        # of the block's input would become the chain, placed far from its loads);
        # the other initial value keeps the copy from being merged with the chain
        copy = Signal(n_in + 1, name="block_in", reset_less=True, init=(1 << (n_in + 1)) - 1)
        m.d.sync += copy.eq(chain)
        at = 0
        for v in ins:
            m.d.comb += v.eq(copy[at : at + len(v)])
            at += len(v)
        captured = Signal(max(1, sum(len(v) for v in outs)), name="block_out", reset_less=True)
        shift = Signal.like(captured, reset_less=True)
        m.d.sync += captured.eq(Cat(*outs))
        # the outputs fold into a chain read out on ``sout``: every bit reaches the pin,
        # and no control signal fans out to every bit (a ``load`` multiplexer per bit was
        # the critical path of blocks with wide outputs: one net to thousands of LUTs)
        m.d.sync += shift.eq(Cat(shift[1:], load) ^ captured)
        m.d.comb += self.sout.eq(shift[0])
        return m


def _fields(name: str, value) -> list[tuple[str, int]]:
    """(name, width) of a port's bits in order, a struct or array port by its fields."""
    layout = value.shape() if isinstance(value, data.View) else None
    if not isinstance(layout, data.Layout):
        return [(name, len(Value.cast(value)))]
    out, at = [], 0
    for key, field in sorted(layout, key=lambda kv: kv[1].offset):
        if field.offset > at:
            out.append((f"{name}.pad{at}", field.offset - at))
        out += _fields(f"{name}.{key}", value[key])
        at = field.offset + Shape.cast(field.shape).width
    if layout.size > at:
        out.append((f"{name}.pad{at}", layout.size - at))
    return out


@dataclass(frozen=True)
class Block:
    """A block to time alone; ``budget``: the LUT levels it may have between registers."""

    name: str
    make: Callable[[], wiring.Component]
    budget: int
    what: str

    def verilog(self, platform=None) -> tuple[str, dict]:
        """The block between its registers, and its ports (path, width) in bit order;
        elaborated for ``platform`` (a board's: its vendor primitives, as the board
        flow builds them)."""
        top = Boundary(self.make)
        return verilog.convert(top, name="block", emit_src=False, platform=platform), top.ports


def engine_config(rows: int = 8):
    """The 8x8 engine of the timing goal: group 8, square sampler, 512-word banks."""
    from accel.engine.config import EngineConfig

    return EngineConfig(rows=rows, cols=8, group=8, a_depth=512, b_depth=2048)


def vector_config(vec_rows: int = 1, array: str = "8x8"):
    from accel.engine.vit import engine_config as vit_config

    return vit_config(array, 512, vec_rows)


def blocks(
    vec_rows: int = 1, reuse: int = 16, small: bool = False, graph=None, mult: str = "dsp"
) -> dict[str, Block]:
    """The blocks of the 8x8 engine, the vector unit and ``graph``'s dataflow layers (at
    ``reuse``, products placed by ``mult``), if a graph is given.

    ``small``: the same blocks at sizes that synthesize in seconds (a 2 x 8
    array, a 2 x 2 vector unit, two outputs of the graph's last layer), for the
    logic-depth test; the depth of a block does not grow with its copies.
    """
    from accel.rtl.engine.address import AddressGenerator, Sampler
    from accel.rtl.engine.drain import Drain
    from accel.rtl.engine.mac_array import MacArray
    from accel.rtl.engine.requant import Requantizer
    from accel.rtl.engine.vector import VectorUnit

    cfg = engine_config(2 if small else 8)
    vcfg = vector_config(1, "2x2") if small else vector_config(vec_rows)
    out = [
        Block("requant", lambda: Requantizer(cfg), 5, "one lane of the drain's requantizer"),
        Block("drain", lambda: Drain(cfg), 6, "bias, wrap, ReLU, requantize; one word a cycle"),
        Block("agen", lambda: AddressGenerator(cfg), 6, "the issue stage's address generator"),
        Block("sampler", lambda: Sampler(cfg), 5, "the square sampler: offsets -> bank address"),
        Block("mac_array", lambda: MacArray(cfg), 6, "8x8 PEs, group-8 muxes, drain select"),
        Block("vector", lambda: VectorUnit(vcfg), 48, f"the vector unit, vec_rows {vec_rows}"),
    ]
    stages = [] if graph is None else _stages(graph, reuse, mult)
    if small and stages:  # the last layer's first two outputs: its adder trees
        last = stages[-1]
        cut = replace(last, idx=last.idx[:2], w=last.w[:2], bias=last.bias[:2])
        if cut.fabric:
            from accel.compiler import cmvm

            cut = replace(cut, adders=cmvm.solve(cut.matrix(), cut.in_type))
        stages = [cut]
    for stage in stages:
        out.append(
            Block(
                f"dot_{stage.name}",
                lambda stage=stage: _dot_layer(stage),
                6,  # a phase's 16-to-1 operand multiplexer (11 before the layer's pipeline)
                f"{graph.name}'s {stage.name} layer at reuse {reuse}",
            )
        )
    return {b.name: b for b in out}


def _stages(graph, reuse: int, mult: str):
    from accel.compiler.dataflow import lower

    return lower(graph, reuse, mult).stages


def _dot_layer(stage):
    from accel.rtl.dotlayer import DotLayer
    from accel.rtl.fabric import FabricLayer

    return FabricLayer(stage) if stage.fabric else DotLayer(stage)


# -- logic depth ---------------------------------------------------------------------


@dataclass
class Depth:
    levels: int  # LUT levels on the worst register-to-register path
    path: list[str]  # signal names along it, start to end
    hard_blocks: list[str]  # unregistered DSP blocks on it


def port_namer(ports: dict) -> Callable[[str], str]:
    """``block_in[i]`` / ``block_out[i]`` -> the block's port bit they stand for."""
    table = {}
    for flow in ("in", "out"):
        at = 0
        for path, width in ports[flow]:
            for i in range(width):
                table[f"block_{flow}[{at + i}]"] = f"{path}[{i}]" if width > 1 else path
            at += width
    return lambda name: table.get(name, name)


def _param(cell: dict, name: str) -> str:
    """A string parameter of a yosys JSON cell (its default, ``NONE``, when unset)."""
    return str(cell.get("parameters", {}).get(name, "NONE")).strip()


def logic_depth(netlist: dict, top: str = "block", rename=lambda s: s) -> Depth:
    """LUT levels between registers of a ``synth_ecp5`` netlist (yosys ``write_json``).

    A LUT4 is one level, and so is entering a carry chain (CCU2C) through a LUT
    input; the carry ripples for free, as do the PFUMX/L6MUX21 that widen a LUT.
    An unregistered MULT18X18D counts :data:`DSP_LEVELS`; one with its output register
    (``REG_OUTPUT_CLK``, :mod:`accel.rtl.dsp`) ends and starts paths. Flip-flops, block RAMs
    (their read is clocked) and the ports start and end paths.
    """
    mod = netlist["modules"][top]
    names: dict[int, str] = {}
    order = sorted(mod["netnames"].items(), key=lambda kv: (_derived(kv[0], kv[1]), len(kv[0])))
    for name, net in order:
        for i, b in enumerate(net["bits"]):
            if isinstance(b, int) and b not in names:
                names[b] = f"{name}[{i}]" if len(net["bits"]) > 1 else name
    # a register's input is named after the register (its output)
    reg_of: dict[int, str] = {}
    for cell in mod["cells"].values():
        if cell["type"] == "TRELLIS_FF":
            d, q = cell["connections"]["DI"][0], cell["connections"]["Q"][0]
            if isinstance(d, int) and isinstance(q, int) and q in names:
                reg_of[d] = names[q]
    # edges: input bit -> (output bit, weight, cell)
    fanout: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
    indeg: dict[int, int] = defaultdict(int)
    for cell in mod["cells"].values():
        kind = cell["type"]
        if kind not in _COMB:
            continue
        dirs, conns = cell["port_directions"], cell["connections"]
        outs = [b for p, bs in conns.items() if dirs.get(p) == "output" for b in bs]
        for port, bits in conns.items():
            if dirs.get(port) != "input":
                continue
            if kind == "LUT4":
                w = 1
            elif kind in ("PFUMX", "L6MUX21"):
                w = 0
            elif kind == "CCU2C":
                w = 0 if port == "CIN" else 1
            elif kind == "MULT18X18D":
                if _param(cell, "REG_OUTPUT_CLK") != "NONE":
                    continue  # its product is registered inside: paths end at its inputs
                w = DSP_LEVELS
            else:  # distributed RAM: only the read address is combinational
                if not port.startswith("RAD"):
                    continue
                w = 1
            for b in bits:
                if not isinstance(b, int):
                    continue
                for o in outs:
                    if isinstance(o, int):
                        fanout[b].append((o, w, kind))
                        indeg[o] += 1
    level: dict[int, int] = defaultdict(int)
    prev: dict[int, tuple[int, str]] = {}
    ready = [b for b in fanout if indeg[b] == 0]
    while ready:
        b = ready.pop()
        for o, w, kind in fanout[b]:
            if o not in prev or level[b] + w > level[o]:
                level[o], prev[o] = level[b] + w, (b, kind)
            indeg[o] -= 1
            if indeg[o] == 0:
                ready.append(o)
    if any(v > 0 for v in indeg.values()):
        raise AccelError("logic depth: the netlist has a combinational loop")
    if not level:
        return Depth(0, [], [])
    worst = max(level.values())
    ends = [b for b, v in level.items() if v == worst]
    end = next((b for b in ends if b in reg_of), ends[0])
    path, dsps, b = [reg_of.get(end) or names.get(end)], [], end
    while b in prev:
        b, kind = prev[b]
        if kind == "MULT18X18D":
            dsps.append(names.get(b, "?"))
        path.append(names.get(b))
    return Depth(level[end], _tidy([rename(p) for p in path[::-1] if p]), dsps)


# -- synthesis and place and route ----------------------------------------------------


def cache_dir() -> Path:
    import os

    return Path(os.environ.get("ACCEL_CACHE", Path.home() / ".cache" / "accel")) / "blocks"


def _key(text: str, *extra) -> str:
    what = [fpga.design_text(text), fpga.tool_versions(), *extra]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:20]


SYNTH = "synth_ecp5 -top block"
# the board flow's fallback when abc9 fails (accel.flows.fpga): classic abc maps the LUTs
SYNTH_ABC = (
    "synth_ecp5 -top block -run begin:map_luts; techmap -map +/lattice/latches_map.v; "
    "abc -lut 4:7; clean; synth_ecp5 -top block -run map_cells:"
)


def _yosys(block: Block, after: str, work: Path, progress) -> tuple[str, float]:
    """Synthesize ``work/block.v`` with abc9, or with abc if abc9 fails; the mapper used."""
    for mapper, synth in (("abc9", SYNTH), ("abc", SYNTH_ABC)):
        script = f"read_verilog block.v; {synth}; {after}"
        cmd = ["yosys", "-q", "-l", "yosys.log", "-p", script]
        r, seconds = fpga.run_tool(cmd, work, work / "yosys.console", None, progress)
        if r.returncode == 0:
            return mapper, seconds
        progress(f"yosys with {mapper} failed")
    raise AccelError(f"synthesis of {block.name} failed (log: {work / 'yosys.log'})")


def synthesize(block: Block, cache: Path | None = None, progress=lambda s: None) -> dict:
    """yosys ``synth_ecp5`` of the block alone, as the ULX3S 85F's flow elaborates it:
    cells, logic depth and its path, seconds."""
    text, ports = block.verilog(get_board("ulx3s-85f").platform())
    work = (cache or cache_dir()) / f"{block.name}-{_key(text)}"
    done = work / "synth.json"
    if done.is_file():
        return json.loads(done.read_text())
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "block.v").write_text(text)
    after = "tee -q -o stat.json stat -json; write_json net.json"
    mapper, seconds = _yosys(block, after, work, progress)
    cells = json.loads((work / "stat.json").read_text())["design"]["num_cells_by_type"]
    depth = logic_depth(json.loads((work / "net.json").read_text()), rename=port_namer(ports))
    doc = {
        "block": block.name,
        "what": block.what,
        "cells": cells,
        **fpga.resources(cells),
        "levels": depth.levels,
        "budget": block.budget,
        "deepest_path": depth.path,
        "unregistered_dsps_on_path": len(depth.hard_blocks),
        "lut_mapper": mapper,
        "synth_seconds": seconds,
    }
    done.write_text(json.dumps(doc, indent=1))
    (work / "net.json").unlink()  # large; the cells and depth are kept
    return doc


def place_and_route(
    block: Block,
    board: Board | None = None,
    *,
    seed: int = 1,
    freq_mhz: float = 150,
    minutes: float = 10,
    router: str = "router2",
    cache: Path | None = None,
    progress=lambda s: None,
) -> dict:
    """nextpnr-ecp5 of the block alone on ``board``'s part: Fmax and the critical path."""
    board = board or get_board("ulx3s-85f")
    platform = board.platform()
    text, ports = block.verilog(platform)
    # the clock on the board's clock pin: left to the placer, it may land on a pin that
    # reaches no global buffer ("Failed to route arc 0.0 of net 'clk'")
    clk = platform.lookup(platform.default_clk)
    lpf = f'LOCATE COMP "clk" SITE "{clk.ios[0].names[0]}";\n'
    work = (
        cache or cache_dir()
    ) / f"{block.name}-pnr-{_key(text, board.name, seed, freq_mhz, router, lpf)}"
    done = work / "pnr.json"
    if done.is_file():
        return json.loads(done.read_text())
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "block.v").write_text(text)
    (work / "block.lpf").write_text(lpf)
    after = "write_json net.json; tee -q -o stat.json stat -json"
    mapper, synth_s = _yosys(block, after, work, progress)
    cmd = [
        "nextpnr-ecp5",
        platform._nextpnr_device_options[platform.device],
        "--package",
        platform._nextpnr_package_options[platform.package].upper(),
        "--speed",
        str(platform.speed),
        "--json",
        "net.json",
        "--lpf",
        "block.lpf",
        "--lpf-allow-unconstrained",
        "--freq",
        str(freq_mhz),
        "--seed",
        str(seed),
        "--report",
        "report.json",
        "--detailed-timing-report",
        "--timing-allow-fail",
        "--router",
        router,
        "--log",
        "nextpnr.log",
    ]
    try:
        r, pnr_s = fpga.run_tool(
            cmd, work, work / "nextpnr.console", minutes * 60, progress, work / "nextpnr.log"
        )
    except subprocess.TimeoutExpired:
        raise AccelError(
            f"place and route of {block.name} did not finish in {minutes:g} min"
        ) from None
    if r.returncode != 0:
        raise AccelError(f"place and route of {block.name} failed (log: {work / 'nextpnr.log'})")
    cells = json.loads((work / "stat.json").read_text())["design"]["num_cells_by_type"]
    report = json.loads((work / "report.json").read_text())
    fmax = [v["achieved"] for v in report.get("fmax", {}).values()]
    doc = {
        "block": block.name,
        "what": block.what,
        "device": platform.device,
        "seed": seed,
        "router": router,
        **fpga.resources(cells),
        "fmax_mhz": round(min(fmax), 2) if fmax else None,
        "lut_mapper": mapper,
        "critical_path": critical_path(report, port_namer(ports)),
        "seconds": {"synthesis": synth_s, "place and route": pnr_s},
    }
    done.write_text(json.dumps(doc, indent=1))
    (work / "net.json").unlink(missing_ok=True)
    return doc
