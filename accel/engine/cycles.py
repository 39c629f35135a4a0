"""The engine's cycle model: exact cycles of a program on a free-flowing stream.

Derived from the controller (``accel.rtl.engine.core``), with the input always
valid and the output always ready:

- boot: the count word, one cycle per instruction, one to finish;
- every instruction: a fetch and a decode cycle (a LOOP is only that);
- LOAD of ``w`` words: ``w`` cycles plus one;
- VEC: the start cycle, the unit's busy cycles and one to see it done;
- GEMM: tiles issue back to back, ``T = groups * n`` steps each, unless the
  drain (``D = rows * cols / group`` words per tile) is slower: then each tile
  waits for the previous one's drain, so tiles start ``max(T, D)`` apart. A
  step passes the sampler and the buffer read before its product is
  registered, so the last tile's sums reach the drain ``ISSUE_TO_DRAIN`` cycles
  after its last step; a word the drain picks leaves its pipeline (bias,
  requantizer) ``DRAIN_LATENCY`` cycles later; the controller moves on when the
  drain has emptied and the pipeline is idle. A reducing GEMM (an offset conv
  whose reduction is split across the columns) sums each word in the drain's
  adder tree first: ``reduce_latency`` registers more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accel.engine.program import Gemm, Load, Program
from accel.engine.vector import Vec

# Pipeline registers (``accel.rtl.engine``): from a step's issue to its tile's
# sums in the drain registers: the step register, the sampler's 3, the buffer
# read, the array's 5 (input, crossbar, PE, the DSP block's product and the fabric's;
# ``MacArray.LATENCY``)...
ISSUE_TO_DRAIN = 1 + 3 + 1 + 5
# ... and from the drain picking a word to the word on the stream or in a bank:
# the array's read-out register, the biased word's, then the requantizer's
# (``Requantizer.LATENCY``)
DRAIN_LATENCY = 1 + 1 + 5


def reduce_latency(cfg) -> int:
    """Registers a reducing GEMM's words (``Gemm.reduce``) take beyond ``DRAIN_LATENCY``:
    the drain's adder tree over a word's ``group`` sums, one register per level."""
    return (cfg.group - 1).bit_length()


@dataclass
class GemmTiming:
    name: str
    start: int  # cycle of the first issued step
    cycles: int  # fetch to the next instruction's fetch
    useful_macs: int
    macs: int  # MAC units of the array
    tiles: int = 0
    steps: int = 0  # issue steps per tile
    period: int = 0  # cycles between tiles: max(steps, the drain's words per tile)

    @property
    def ideal(self) -> float:
        """Cycles a perfect array would need: useful MACs / MAC units."""
        return self.useful_macs / self.macs

    @property
    def utilisation(self) -> float:
        return self.ideal / self.cycles

    def losses(self) -> dict[str, float]:
        """Where the cycles beyond the ideal go; the three sum to ``cycles - ideal``:
        ``padding``, issued steps whose MACs are not useful (padded rows, columns,
        reduction lanes, zero weights kept to fill an N:M group);
        ``drain_wait``, tiles waiting for the previous tile's drain (``period -
        steps`` each); ``fill``, the fetch, pipeline fill and the last tile's drain."""
        issued = self.tiles * self.steps
        return {
            "padding": issued - self.ideal,
            "drain_wait": self.tiles * (self.period - self.steps),
            "fill": self.cycles - self.tiles * self.period,
        }


@dataclass
class ProgramTiming:
    total: int  # cycles from reset to the HALT instruction's decode
    out_valid: np.ndarray  # cycle each output word first turns valid
    gemms: list[GemmTiming]
    ends: list[int]  # per program step: the cycle the next instruction is fetched


def predict(program: Program) -> ProgramTiming:
    cfg = program.cfg
    n_ins = len(program.instructions())
    t = 1 + n_ins + 1  # count word, instructions, the check that ends the boot
    words_per_tile = cfg.rows * cfg.cols // cfg.group
    out_valid: list[np.ndarray] = []
    gemms = []
    r = program.repeat
    # a LOOP instruction runs after each copy of a repeated body
    loops = set()
    if r is not None and r.times > 1:
        loops = {r.start + k * r.length for k in range(1, r.times + 1)}
    ends = []
    for i, s in enumerate(program.steps):
        if i in loops:
            t += 2
        if i:
            ends.append(t)
        fetch = t
        t += 2
        if isinstance(s, Load):
            t += len(s.words) + 1
            continue
        if isinstance(s, Vec):
            t += 2 + s.cycles(cfg)  # the start pulse, the unit's busy cycles, the check
            continue
        assert isinstance(s, Gemm)
        steps, drain = s.steps_per_tile(cfg), words_per_tile
        period = max(steps, drain)
        tiles = s.tiles(cfg)
        last = [t + steps - 1 + i * period for i in range(tiles)]  # each tile's last step
        extra = reduce_latency(cfg) if s.reduce else 0
        if s.to_stream:
            w = np.arange(drain)
            out_valid += [e + ISSUE_TO_DRAIN + 1 + DRAIN_LATENCY + extra + w for e in last]
        t = last[-1] + ISSUE_TO_DRAIN + 2 + DRAIN_LATENCY + drain + extra
        gemms.append(
            GemmTiming(s.name, fetch + 2, t - fetch, s.useful_macs, cfg.macs, tiles, steps, period)
        )
    if len(program.steps) in loops:
        t += 2  # the body ends the program: its last LOOP
    if program.steps:
        ends.append(t)
    t += 2  # the HALT's fetch and decode
    valid = np.concatenate(out_valid) if out_valid else np.zeros(0, np.int64)
    return ProgramTiming(t, valid.astype(np.int64), gemms, ends)
