"""The ECP5 boards accel builds bitstreams for (from amaranth-boards), by short name."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from accel.errors import AccelError


@dataclass(frozen=True)
class Board:
    name: str
    module: str
    platform_class: str
    description: str

    def platform(self):
        return getattr(importlib.import_module(self.module), self.platform_class)()


BOARDS: dict[str, Board] = {
    b.name: b
    for b in [
        Board(
            "ulx3s-85f", "amaranth_boards.ulx3s", "ULX3S_85F_Platform", "Radiona ULX3S, LFE5U-85F"
        ),
        Board(
            "ulx3s-45f", "amaranth_boards.ulx3s", "ULX3S_45F_Platform", "Radiona ULX3S, LFE5U-45F"
        ),
        Board(
            "ulx3s-25f", "amaranth_boards.ulx3s", "ULX3S_25F_Platform", "Radiona ULX3S, LFE5U-25F"
        ),
        Board(
            "ulx3s-12f", "amaranth_boards.ulx3s", "ULX3S_12F_Platform", "Radiona ULX3S, LFE5U-12F"
        ),
        Board(
            "ecpix5-85f",
            "amaranth_boards.ecpix5",
            "ECPIX585Platform",
            "LambdaConcept ECPIX-5, LFE5UM5G-85F",
        ),
        Board(
            "ecpix5-45f",
            "amaranth_boards.ecpix5",
            "ECPIX545Platform",
            "LambdaConcept ECPIX-5, LFE5UM5G-45F",
        ),
        Board(
            "versa-ecp5",
            "amaranth_boards.versa_ecp5",
            "VersaECP5Platform",
            "Lattice ECP5 Versa, LFE5UM-45F",
        ),
    ]
}


def get(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise AccelError(f"unknown board {name!r} (known: {', '.join(BOARDS)})") from None
