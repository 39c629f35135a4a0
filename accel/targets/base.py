"""What a hardware target is, and the Design every consumer reads.

A target (``dataflow``, ``engine``) owns a config dataclass whose knobs are its
CLI flags and sweep parameters (:mod:`accel.targets.options`), decides which
graphs it runs and how it configures itself for one (defaults, what the
graph's ops need, the zoo model's preferences, then the user's knobs), and
compiles a graph into a :class:`Design`. Consumers (the CLI, the flows, the
sweeps, the benchmarks) only read the Design: its cycle model, its Verilog and
Amaranth component, its simulation, its resource-estimate features.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from accel import knobs as options
from accel.errors import AccelError
from accel.ir import Graph


@dataclass
class Simulation:
    """A run of the design's RTL under Verilator, against its cycle model.

    ``report`` holds the target's own measured-vs-model figures for the CLI.
    """

    outputs: np.ndarray
    cycles_match: bool
    cycles: int
    wall_s: float
    build_s: float
    report: dict[str, Any] = field(default_factory=dict)


class Design(ABC):
    """A graph compiled for one target configuration."""

    target: ClassVar[str]
    # samples the Verilog target's testbench streams unless the user says
    test_samples: ClassVar[int] = 1000
    graph: Graph
    config: Any

    @property
    @abstractmethod
    def top(self) -> str:
        """The Verilog top module's name."""

    @abstractmethod
    def verilog(self) -> str:
        """The design's Verilog (cached by what determines it)."""

    @abstractmethod
    def component(self) -> Any:
        """A fresh Amaranth ``lib.wiring`` component with ``i``/``o`` streams."""

    @property
    @abstractmethod
    def multipliers(self) -> int:
        """Multipliers the design instantiates (DSP blocks, or LUTs past the part's)."""

    @abstractmethod
    def features(self) -> dict[str, float]:
        """The structural features the resource estimate of this target reads."""

    def estimate_gap(self) -> str:
        """What of this design the fitted resource estimate does not cover ('' if all)."""
        return ""

    @abstractmethod
    def timing(self, x: np.ndarray) -> dict[str, Any]:
        """The cycle model for raw inputs ``x``: cycles, cycles per sample, latency, II."""

    @abstractmethod
    def simulate(self, x: np.ndarray, *, backpressure_seed: int | None = None) -> Simulation:
        """Run raw inputs ``x`` through the RTL under Verilator."""

    @abstractmethod
    def write_verilog(self, out: Path, x: np.ndarray) -> dict[str, Any]:
        """Write the Verilog target (design, vectors, self-checking testbench, manifest)
        into the empty directory ``out``; returns a summary."""

    def place_and_route(self) -> dict[str, str]:
        """nextpnr's router and placer this design routes best with (``router``, ``placer``;
        what is not named stays nextpnr's default); a user's choice overrides them."""
        return {}

    def describe(self) -> dict[str, Any]:
        """The configuration as JSON values."""
        return {"target": self.target, **dataclasses.asdict(self.config)}


class Target(ABC):
    """A registered kind of hardware: see the module docstring."""

    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type]

    @abstractmethod
    def check(self, graph: Graph) -> None:
        """Raise a one-line :class:`AccelError` if this target cannot run ``graph``."""

    def runs(self, graph: Graph) -> bool:
        try:
            self.check(graph)
        except AccelError:
            return False
        return True

    @abstractmethod
    def configure(
        self, graph: Graph, given: dict[str, Any], prefs: dict[str, Any], board: str | None = None
    ) -> Any:
        """The config for ``graph``: defaults, what its ops need, the model's ``prefs``,
        then the user's ``given`` knobs (checked against their bounds). With ``board``,
        knobs left open are chosen so the design fits the board's part."""

    @abstractmethod
    def fit(self, design: Design, board: str, *, build: bool) -> None:
        """Refuse, in one line with the figures, a design the tools could not take: too
        big for ``board``'s part to ``build`` it, or too big to elaborate at all."""

    @abstractmethod
    def compile(self, graph: Graph, config: Any) -> Design:
        """The design for ``graph`` on this target."""

    def knob_names(self) -> list[str]:
        return [f.name for f in options.knobs(self.Config)]
