"""Capacities of the ECP5 parts on the boards accel builds for (Lattice ECP5 family data
sheet; the LUT count is nextpnr's TRELLIS_COMB capacity, which a CCU2C uses two of)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from accel.errors import AccelError


@dataclass(frozen=True)
class Device:
    board: str
    part: str
    luts: int  # TRELLIS_COMB: LUT4s, two per CCU2C carry cell
    ffs: int
    dsps: int  # MULT18X18D
    brams: int  # DP16KD (18 kbit EBR)
    clock_mhz: float  # the board's default clock


_PARTS = {
    "LFE5U-12F": (12096, 12096, 28, 32),
    "LFE5U-25F": (24288, 24288, 28, 56),
    "LFE5U-45F": (43848, 43848, 72, 108),
    "LFE5U-85F": (83640, 83640, 156, 208),
    "LFE5UM-45F": (43848, 43848, 72, 108),
    "LFE5UM5G-45F": (43848, 43848, 72, 108),
    "LFE5UM5G-85F": (83640, 83640, 156, 208),
}


@lru_cache(maxsize=16)
def get(board: str) -> Device:
    from accel.flows import boards

    platform = boards.get(board).platform()  # an unknown board is a one-line error
    part = platform.device
    if part not in _PARTS:
        raise AccelError(f"no capacities known for {part} (board {board})")
    luts, ffs, dsps, brams = _PARTS[part]
    return Device(board, part, luts, ffs, dsps, brams, platform.default_clk_frequency / 1e6)


def fits(dev: Device, lut4: float, carry: float, ff: float, dsp: float, bram: float) -> str:
    """'' if the resources fit the device, else what overflows (e.g. 'DSP 256 > 156')."""
    over = []
    for what, used, cap in (
        ("LUT", lut4 + 2 * carry, dev.luts),
        ("FF", ff, dev.ffs),
        ("DSP", dsp, dev.dsps),
        ("BRAM", bram, dev.brams),
    ):
        if round(used) > cap:
            over.append(f"{what} {round(used)} > {cap}")
    return ", ".join(over)


def check_engine(cfg, board: str) -> None:
    """Refuse, with the figures, an engine whose multipliers or buffers exceed the board's
    part (checked before anything is elaborated)."""
    from accel.dse.designs import bram_blocks, engine_memories

    dev = get(board)
    if cfg.macs > dev.dsps:
        raise AccelError(
            f"a {cfg.rows}x{cfg.cols} array has {cfg.macs} multipliers; the {dev.part} on "
            f"{board} has {dev.dsps} DSP blocks"
        )
    blocks = sum(n * bram_blocks(d, w) for n, d, w in engine_memories(cfg).values())
    if blocks > dev.brams:
        raise AccelError(
            f"the engine's buffers (bank depth {cfg.a_depth} words) need {blocks} DP16KD "
            f"blocks; the {dev.part} on {board} has {dev.brams}"
        )
