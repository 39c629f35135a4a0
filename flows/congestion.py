"""Where a design's routing is congested: router2's heatmaps, summarized.

nextpnr-ecp5's router2 writes, per iteration, how many of its wires each net
and each tile overuse (``--router2-heatmap PREFIX``). A design that does not
route is explained by the last iteration's maps: the overuse summed by block
(the first components of a net's hierarchical name), the worst nets, and the
die region that holds most of it. The maps are large (a file per iteration),
so only the last iteration's two are kept.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

PREFIX = "congestion"  # nextpnr writes PREFIX_congestion_by_net_N.csv and others
KEPT = ("by_net", "by_coordinate")


def _iteration(path: Path) -> int:
    m = re.search(r"_(\d+)\.csv$", path.name)
    return int(m[1]) if m else -1


def _block(net: str, depth: int) -> str:
    """The net's module, at most ``depth`` levels down (a net is in its parent module)."""
    parts = net.split(".")
    return ".".join(parts[: max(1, min(depth, len(parts) - 1))])


def summarize(work: Path, depth: int = 3, top: int = 8) -> dict | None:
    """The last iteration's congestion in ``work`` (None when router2 wrote none)."""
    nets = sorted(work.glob(f"{PREFIX}_congestion_by_net_*.csv"), key=_iteration)
    if not nets:
        return None
    last = nets[-1]
    n = _iteration(last)
    by_net: Counter[str] = Counter()
    with open(last, newline="") as f:
        for row in csv.reader(f):
            if len(row) == 2 and row[1].isdigit():
                by_net[row[0]] += int(row[1])
    blocks: Counter[str] = Counter()
    for net, count in by_net.items():
        blocks[_block(net, depth)] += count
    doc: dict = {
        "iteration": n,
        "overuse": sum(by_net.values()),
        "by_block": dict(blocks.most_common(top)),
        "worst_nets": dict(by_net.most_common(5)),
    }
    grid = work / f"{PREFIX}_congestion_by_coordinate_{n}.csv"
    if grid.is_file():
        doc["region"] = _region(grid)
    return doc


def _region(grid: Path, share: float = 0.9) -> dict[str, list[int]]:
    """The tile ranges (x, y) holding ``share`` of the overuse, trimmed evenly at both ends."""
    cells = []
    with open(grid, newline="") as f:
        for x, row in enumerate(csv.reader(f)):
            cells += [(x, y, int(v)) for y, v in enumerate(row) if v.strip() not in ("", "0")]
    total = sum(c for _, _, c in cells)
    out = {}
    for axis in (0, 1):
        ordered = sorted(cells, key=lambda c: c[axis])
        cut, acc, lo, hi = total * (1 - share) / 2, 0, None, None
        for c in ordered:
            acc += c[2]
            if lo is None and acc > cut:
                lo = c[axis]
            if acc >= total - cut:
                hi = c[axis]
                break
        out["xy"[axis]] = [lo or 0, hi if hi is not None else lo or 0]
    return out


def prune(work: Path) -> None:
    """Keep only the last iteration's maps by net and by coordinate."""
    files = list(work.glob(f"{PREFIX}_*.csv"))
    if not files:
        return
    n = max(_iteration(p) for p in files)
    for p in files:
        if _iteration(p) != n or not any(k in p.name for k in KEPT):
            p.unlink()


def describe(doc: dict | None) -> str:
    """One line: where the overuse is."""
    if not doc:
        return ""
    blocks = ", ".join(f"{k} {v:,}" for k, v in list(doc["by_block"].items())[:3])
    region = doc.get("region")
    where = f"; 90 % within x {region['x']}, y {region['y']}" if region else ""
    return f"overused at iteration {doc['iteration']}: {blocks}{where}"
