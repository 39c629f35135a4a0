"""The Graph IR: integer tensors with a fixed-point type on every edge.

A graph is a list of nodes in topological order. Each node names an op from
:mod:`accel.ir.ops`; its output tensors' shapes and types are inferred from
the op when the node is added, so every graph in memory is fully typed and
explicit (accumulator widths included). Shapes exclude the batch dimension.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from accel.errors import AccelError
from accel.fixed import FixedType, Quant


@dataclass(frozen=True)
class Tensor:
    """An edge: a named, typed integer tensor (shape without the batch axis)."""

    name: str
    shape: tuple[int, ...]
    type: FixedType

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class Param:
    """A constant integer operand (weights, biases) with its fixed-point type."""

    data: np.ndarray
    type: FixedType

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        if data.dtype.kind not in "iu":
            raise AccelError(f"parameter data must be integers, got {data.dtype}")
        self.data = data.astype(np.int64)
        if not self.type.contains(self.data):
            raise AccelError(f"parameter values do not fit {self.type}")


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Param] = field(default_factory=dict)


class Graph:
    """A typed dataflow graph of integer tensors."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tensors: dict[str, Tensor] = {}
        self.nodes: list[Node] = []
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        # How real-valued inputs are quantized onto each graph input.
        self.input_quant: dict[str, Quant] = {}
        self.meta: dict[str, Any] = {}

    # -- building -------------------------------------------------------------
    def add_input(self, name: str, shape: tuple[int, ...], quant: Quant) -> str:
        self._new_tensor(name, tuple(int(s) for s in shape), quant.type)
        self.inputs.append(name)
        self.input_quant[name] = quant
        return name

    def add(
        self,
        op: str,
        inputs: list[str] | str,
        *,
        name: str | None = None,
        params: dict[str, Param] | None = None,
        **attrs: Any,
    ) -> str:
        """Append a node, infer its output, and return the output tensor's name."""
        from accel.ir.ops import get_op

        spec = get_op(op)
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        for t in inputs:
            if t not in self.tensors:
                raise AccelError(f"node {name or op}: unknown input tensor {t!r}")
        name = name or self._fresh_name(op)
        if any(n.name == name for n in self.nodes):
            raise AccelError(f"duplicate node name {name!r}")
        node = Node(name, op, inputs, [], dict(attrs), dict(params or {}))
        shape, ftype = spec.infer(node, [self.tensors[t] for t in inputs])
        out = self._new_tensor(name, shape, ftype)
        node.outputs = [out]
        self.nodes.append(node)
        return out

    def mark_output(self, *names: str) -> None:
        for n in names:
            if n not in self.tensors:
                raise AccelError(f"unknown output tensor {n!r}")
            self.outputs.append(n)

    def _new_tensor(self, name: str, shape: tuple[int, ...], ftype: FixedType) -> str:
        if name in self.tensors:
            raise AccelError(f"duplicate tensor name {name!r}")
        self.tensors[name] = Tensor(name, shape, ftype)
        return name

    def _fresh_name(self, op: str) -> str:
        i = sum(1 for n in self.nodes if n.op == op)
        while f"{op}{i}" in self.tensors:
            i += 1
        return f"{op}{i}"

    # -- queries --------------------------------------------------------------
    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise AccelError(f"no node named {name!r}")

    def producer(self, tensor: str) -> Node | None:
        for n in self.nodes:
            if tensor in n.outputs:
                return n
        return None

    def consumers(self, tensor: str) -> Iterator[Node]:
        return (n for n in self.nodes if tensor in n.inputs)

    def n_params(self) -> int:
        return sum(p.data.size for n in self.nodes for p in n.params.values())

    def summary(self) -> str:
        lines = [f"graph {self.name}"]
        for t in self.inputs:
            lines.append(f"  input  {t}: {self.tensors[t].shape} {self.input_quant[t]}")
        for n in self.nodes:
            out = self.tensors[n.outputs[0]]
            lines.append(f"  {n.name:<10} {n.op:<11} -> {out.shape} {out.type}")
        return "\n".join(lines)
