"""Geometry of one hexagonal HGCAL module at trigger-cell granularity (our own model).

This is a simplified geometric model written for this project, not the official
ECON-T cell numbering or ARRANGE table. A low-density 8-inch silicon module has
sensor cells of about 1.18 cm^2 (hexagons of side ~0.67 cm); the trigger
primitive generator sums 2x2 of them into 48 trigger cells of ~4.7 cm^2. We draw
the module as a regular hexagon of side ``MODULE_SIDE`` cut into three rhombi
that meet at its centre; each rhombus is a 4x4 lattice of rhombic trigger cells
of edge ``CELL_EDGE`` (so cell areas and the ~2.3 cm trigger-cell pitch match the
real module; the cell shapes are idealised).

Cell ``16 * k + 4 * i + j`` is cell ``(i, j)`` of rhombus ``k``: rhombus ``k`` is
spanned from the centre by hexagon corners ``V[2k]`` (lattice index ``i``) and
``V[2k + 2]`` (index ``j``). Rhombus ``k``'s edge ``i == 0`` touches rhombus
``k + 1``'s edge ``j == 0`` (position ``t`` along the seam is ``j`` on one side,
``i`` on the other).

``ARRANGE`` puts rhombus 1 in the top-left 4x4 quadrant of the 8x8 image with
its centre corner at the image centre, rhombus 0 to its right and rhombus 2
below it, so that two of the three seams stay image neighbours (the seam
between rhombi 0 and 2 only meets at the image centre); the bottom-right
quadrant is zero.
"""

from __future__ import annotations

import numpy as np

N_CELLS = 48
SENSOR_CELL_AREA = 1.18  # cm^2, low-density 8-inch sensor
CELL_AREA = 4 * SENSOR_CELL_AREA  # one trigger cell = 2x2 sensor cells
CELL_EDGE = float(np.sqrt(CELL_AREA / np.sin(np.pi / 3)))  # rhombic cell edge, ~2.33 cm
MODULE_SIDE = 4 * CELL_EDGE  # hexagon side = circumradius, ~9.3 cm

# Hexagon corners at 30 + 60 k degrees, as unit vectors.
_ANGLES = np.deg2rad(30.0 + 60.0 * np.arange(6))
V = np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], axis=1)

_K, _I, _J = np.meshgrid(np.arange(3), np.arange(4), np.arange(4), indexing="ij")
CELL_RHOMBUS = _K.ravel()
CELL_I = _I.ravel()
CELL_J = _J.ravel()
_U = V[2 * CELL_RHOMBUS]  # (48, 2) lattice axis of i
_W = V[(2 * CELL_RHOMBUS + 2) % 6]  # (48, 2) lattice axis of j

CELL_XY = CELL_EDGE * ((CELL_I + 0.5)[:, None] * _U + (CELL_J + 0.5)[:, None] * _W)
"""(48, 2) trigger-cell centres in cm, module centre at the origin."""

_SUB = np.array([(-0.25, -0.25), (-0.25, 0.25), (0.25, -0.25), (0.25, 0.25)])
SUBCELL_XY = CELL_XY[:, None, :] + CELL_EDGE * (
    _SUB[None, :, 0, None] * _U[:, None, :] + _SUB[None, :, 1, None] * _W[:, None, :]
)
"""(48, 4, 2) centres of each trigger cell's four sensor cells (quadrature points)."""
SUBCELL_AREA = CELL_AREA / 4


def _cell(k: int, i: int, j: int) -> int:
    return 16 * (k % 3) + 4 * i + j


def _arrange() -> np.ndarray:
    grid = np.full((8, 8), -1, dtype=np.int64)
    for i in range(4):
        for j in range(4):
            grid[3 - i, 3 - j] = _cell(1, i, j)  # top-left, centre corner at (3, 3)
            grid[3 - j, 4 + i] = _cell(0, i, j)  # top-right: its i == 0 edge meets rhombus 1
            grid[4 + j, 3 - i] = _cell(2, i, j)  # bottom-left: its j == 0 edge meets rhombus 1
    return grid.ravel()


ARRANGE = _arrange()
"""(64,) int64: 8x8 image position (row-major) -> cell index, or -1 for a constant zero."""


def _groups(members: list[list[int]]) -> np.ndarray:
    m = np.zeros((N_CELLS, len(members)))
    for g, cells in enumerate(members):
        m[cells, g] = 1.0
    return m


def _windows() -> list[list[int]]:
    """Overlapping 2x2 windows of neighbouring cells: 27 inside rhombi, 9 across seams."""
    inside = [
        [_cell(k, i + di, j + dj) for di in (0, 1) for dj in (0, 1)]
        for k in range(3)
        for i in range(3)
        for j in range(3)
    ]
    seams = [
        [_cell(k, 0, t), _cell(k, 0, t + 1), _cell(k + 1, t, 0), _cell(k + 1, t + 1, 0)]
        for k in range(3)
        for t in range(3)
    ]
    return inside + seams


GROUP_CELLS = np.eye(N_CELLS)
GROUP_WINDOWS = _groups(_windows())  # (48, 36)
GROUP_BLOCKS = _groups(
    [
        [_cell(k, 2 * a + di, 2 * b + dj) for di in (0, 1) for dj in (0, 1)]
        for k in range(3)
        for a in range(2)
        for b in range(2)
    ]
)  # (48, 12): disjoint 2x2 blocks
GROUP_RHOMBI = _groups([list(range(16 * k, 16 * k + 16)) for k in range(3)])  # (48, 3)

SCALES: dict[str, np.ndarray] = {
    "cells": GROUP_CELLS,
    "windows2x2": GROUP_WINDOWS,
    "blocks2x2": GROUP_BLOCKS,
    "rhombi": GROUP_RHOMBI,
}
"""Scale-grouping matrices for the telescope loss: ``x @ m`` sums ``x`` over each group."""
