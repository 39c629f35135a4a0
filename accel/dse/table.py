"""The results table: one CSV row per point, keyed by the point's id, appended as points
finish (so an interrupted sweep keeps what it did) and compacted at the end."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from accel.errors import AccelError

RESULTS = "results.csv"


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


class Table:
    """``DIR/results.csv`` with a fixed header; rows by ``point_id`` (the last one wins)."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path, self.columns = Path(path), columns
        self.rows: dict[str, dict[str, str]] = {}
        if self.path.is_file():
            self._read()

    def _read(self) -> None:
        text = self.path.read_text()
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines = lines[:-1]  # a row cut short by an interruption
        reader = csv.DictReader(lines)
        if reader.fieldnames is None:
            return
        if list(reader.fieldnames) != self.columns:
            raise AccelError(
                f"{self.path} holds another kind of sweep (its columns differ); "
                "use another -o DIR or --force to start over"
            )
        for r in reader:
            if r.get("point_id") and None not in r.values():
                self.rows[r["point_id"]] = r

    def append(self, row: dict[str, Any]) -> None:
        new = not self.path.is_file() or self.path.stat().st_size == 0
        if not new and not self.path.read_bytes().endswith(b"\n"):
            self.compact()  # drop a torn last line before appending after it
            new = False
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(self.columns)
            w.writerow([_cell(row.get(c)) for c in self.columns])
            f.flush()
            os.fsync(f.fileno())
        self.rows[str(row["point_id"])] = {c: _cell(row.get(c)) for c in self.columns}

    def compact(self, order: list[str] | None = None) -> None:
        """Rewrite with one row per point (atomically), those in ``order`` first, in order."""
        rank = {pid: i for i, pid in enumerate(order or [])}
        rows = sorted(self.rows.values(), key=lambda r: rank.get(r["point_id"], len(rank)))
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(self.columns)
            for r in rows:
                w.writerow([r.get(c, "") for c in self.columns])
        tmp.replace(self.path)
