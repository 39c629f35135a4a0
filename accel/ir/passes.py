"""Graph passes every backend shares, so no backend detects a pattern of its own.

:func:`epilogue` is the one place that decides which ReLU and requantize fold
into the node before them (a dot product's accumulator drained through ReLU
and a requantizer, a vector op's exact result requantized): the dataflow
lowering, the engine's layer-chain and token compilers and the hls4ml flow
all ask it. N:M patterns are parsed once, when a node is added to the graph
(``accel.ir.ops``), into a typed :class:`accel.nm.NM` attribute.
"""

from __future__ import annotations

from dataclasses import dataclass

from accel.fixed import Quant
from accel.ir.graph import Graph, Node


@dataclass(frozen=True)
class Epilogue:
    """What follows a node and folds into it: a ReLU, then a requantize."""

    relu: bool
    quant: Quant | None
    nodes: tuple[Node, ...]  # the folded ReLU and requantize nodes, in order
    out: str  # the tensor the node and its epilogue produce

    @property
    def names(self) -> set[str]:
        return {n.name for n in self.nodes}


def _sole_user(graph: Graph, tensor: str) -> Node | None:
    """The one node reading ``tensor``, if it is not also a graph output."""
    if tensor in graph.outputs:
        return None
    users = list(graph.consumers(tensor))
    return users[0] if len(users) == 1 else None


def epilogue(graph: Graph, node: Node, *, relu: bool = True) -> Epilogue:
    """The ReLU (if ``relu``) and the requantize that follow ``node``, each the only reader
    of the tensor before it, which a backend computes as part of ``node``."""
    out, folded, has_relu, quant = node.outputs[0], [], False, None
    nxt = _sole_user(graph, out)
    if relu and nxt is not None and nxt.op == "relu":
        has_relu, out = True, nxt.outputs[0]
        folded.append(nxt)
        nxt = _sole_user(graph, out)
    if nxt is not None and nxt.op == "requantize":
        quant, out = nxt.attrs["quant"], nxt.outputs[0]
        folded.append(nxt)
    return Epilogue(has_relu, quant, tuple(folded), out)
