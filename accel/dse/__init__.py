"""Design-space exploration: sweeps over engine and dataflow parameters (``accel dse``).

``load(path)`` / ``parse(doc)`` read a sweep, ``run(sweep, out)`` evaluates its
points on Dask and writes ``out/results.csv``, plots and ``summary.json``;
``frame(out / "results.csv")`` reads the table back as a DataFrame.
"""

from __future__ import annotations

import importlib

_API = {
    "Sweep": "accel.dse.sweep",
    "load": "accel.dse.sweep",
    "parse": "accel.dse.sweep",
    "run": "accel.dse.runner",
    "frame": "accel.dse.runner",
}
__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'accel.dse' has no attribute {name!r}")
