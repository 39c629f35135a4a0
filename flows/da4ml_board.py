"""da4ml's Verilog of a network on a board, for the side-by-side ``accel report``.

da4ml emits a fixed-latency pipeline with a clock and no handshake. The
adapter here gives it the stream edges our UART bridge expects, so both
designs are implemented behind the same bridge by the same yosys/nextpnr
script and their numbers differ only by the core.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from amaranth.hdl import ClockSignal, Instance, Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from accel.flows import da4ml, fpga
from accel.flows.boards import Board
from accel.ir import Graph


class FixedLatencyCore(wiring.Component):
    """One sample in flight through a clocked, non-stalling Verilog pipeline.

    The input is held in a register for the whole flight, so the pipeline's
    output is stable once ``latency`` cycles have passed, until it is taken.
    """

    def __init__(
        self, top: str, in_port: str, in_width: int, out_port: str, out_width: int, latency: int
    ) -> None:
        self.top, self.latency = top, latency
        self.in_port, self.out_port = in_port, out_port
        super().__init__(
            {
                "i": In(stream.Signature(unsigned(in_width))),
                "o": Out(stream.Signature(unsigned(out_width))),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        held = Signal.like(self.i.payload)
        wait = Signal(range(self.latency + 2))
        busy = Signal()
        m.submodules.core = Instance(
            self.top,
            i_clk=ClockSignal(),
            **{f"i_{self.in_port}": held, f"o_{self.out_port}": self.o.payload},
        )
        m.d.comb += self.i.ready.eq(~busy)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [held.eq(self.i.payload), busy.eq(1), wait.eq(self.latency + 1)]
        with m.Elif(busy & (wait != 0)):
            m.d.sync += wait.eq(wait - 1)
        m.d.comb += self.o.valid.eq(busy & (wait == 0))
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += busy.eq(0)
        return m


def report(
    graph: Graph,
    board: Board,
    *,
    seed: int = 1,
    pnr_minutes: float | None = None,
    progress: Callable[[str], None] = lambda s: None,
) -> dict:
    """Implement da4ml's design of ``graph`` on ``board`` (cached) and report it; a place
    and route that runs out of time still reports the synthesized cells."""
    from accel.sim.verilator import cache_root

    with tempfile.TemporaryDirectory() as tmp:
        progress("generating da4ml's Verilog")
        info = da4ml.generate(graph, Path(tmp) / "da4ml")
        files = {Path(f).name: (Path(tmp) / "da4ml" / f).read_text() for f in info["files"]}
    ports = info["ports"]
    (inp,) = [p for p, d in ports.items() if d["direction"] == "in" and p != "clk"]
    (out,) = [p for p, d in ports.items() if d["direction"] == "out"]

    def core() -> FixedLatencyCore:
        return FixedLatencyCore(
            info["top"], inp, ports[inp]["width"], out, ports[out]["width"], info["latency_cycles"]
        )

    try:
        impl = fpga.implement_cached(
            board,
            fpga.BoardTop(core),
            cache_root() / "fpga",
            seed=seed,
            extra_files=files,
            pnr_minutes=pnr_minutes,
            progress=progress,
        )
        doc = impl.report(info["latency_cycles"], info["ii"])
    except fpga.PlaceRouteTimeout as e:
        doc = e.report(info["latency_cycles"], info["ii"])
    doc["generator"] = f"da4ml {version('da4ml')}"
    return doc
