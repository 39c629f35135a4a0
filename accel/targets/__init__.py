"""Hardware targets: the one layer between the Graph and every consumer.

``TARGETS`` holds the registered targets by name (``dataflow``, ``engine``).
A consumer asks for a target (``get``, or ``for_graph`` for the default one),
lets it configure itself for a graph (``target.configure``) and compiles
(``target.compile``) into a :class:`~accel.targets.base.Design`, then reads only
the Design. Adding a target is one module here with a Target subclass, its
config dataclass and its Design, registered below.
"""

from __future__ import annotations

from accel.errors import AccelError
from accel.ir import Graph
from accel.targets.base import Design, Simulation, Target
from accel.targets.dataflow import DataflowTarget
from accel.targets.engine import EngineTarget

TARGETS: dict[str, Target] = {t.name: t for t in (DataflowTarget(), EngineTarget())}

__all__ = ["TARGETS", "Design", "Simulation", "Target", "compile_for", "for_graph", "get"]


def get(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise AccelError(f"unknown architecture {name!r} (known: {', '.join(TARGETS)})") from None


def for_graph(graph: Graph, preferred: str | None = None) -> Target:
    """The target ``preferred`` (a zoo model's), else the first that runs ``graph``."""
    if preferred:
        return get(preferred)
    for t in TARGETS.values():
        if t.runs(graph):
            return t
    get("dataflow").check(graph)  # raises the reason the first target gives
    raise AssertionError


def compile_for(
    graph: Graph, arch: str | None = None, given: dict | None = None, prefs: dict | None = None
) -> Design:
    """The design of ``graph`` on target ``arch`` (default: :func:`for_graph`)."""
    target = get(arch) if arch else for_graph(graph)
    target.check(graph)
    return target.compile(graph, target.configure(graph, given or {}, prefs or {}))
