"""Import a QONNX model as an accel Graph whose reference matches qonnx's execution."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.ir.graph import Graph
from accel.qonnx import dot, handlers
from accel.qonnx.common import require_onnx
from accel.qonnx.exporter import META_KEY
from accel.qonnx.layout import LAYOUT_OPS, layout
from accel.qonnx.values import Const, View


def load(path: str | Path) -> Graph:
    """Read a QONNX model (Quant, Conv, MatMul/Gemm, Relu, layout ops) as a Graph.

    Accumulators are derived by the IR; the input's quantization comes from the
    Quant that first reads it. Anything without an exact accel equivalent is
    refused with a one-line AccelError naming the node.
    """
    onnx = require_onnx()
    path = Path(path)
    if not path.is_file():
        raise AccelError(f"model file {path} not found")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf raises its own DecodeError, among others
        raise AccelError(f"cannot read ONNX model {path}: {_one_line(e)}") from None
    if not model.graph.node or not model.graph.output:
        raise AccelError(f"{path} is not an ONNX model (no nodes or no outputs)")
    return _Importer(model, path).run()


def _one_line(e: object) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _ident(name: str) -> str:
    """A name that is safe in generated HDL: letters, digits, underscores."""
    name = re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_")
    return name if name and not name[0].isdigit() else f"n_{name}"


class _Importer:
    """Walks the ONNX nodes in order, building the Graph; state shared with the handlers."""

    def __init__(self, model: Any, path: Path) -> None:
        self.onnx = require_onnx()
        graph = model.graph
        self.nodes = list(graph.node)
        self.names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(self.nodes)]
        self.outputs = [o.name for o in graph.output]
        self.inits = {t.name for t in graph.initializer}
        self.graph_inputs = [i for i in graph.input if i.name not in self.inits]
        self.env: dict[str, Const | View] = {}
        for t in graph.initializer:
            try:
                self.env[t.name] = Const(self.onnx.numpy_helper.to_array(t))
            except Exception as e:
                raise AccelError(f"initializer {t.name}: unreadable ({_one_line(e)})") from None
        self.consumers: dict[str, list[int]] = defaultdict(list)
        for i, n in enumerate(self.nodes):
            for v in n.input:
                if v:
                    self.consumers[v].append(i)
        self.skip: set[int] = set()
        self.alias: dict[str, str] = {}
        self.cache: dict[tuple, str] = {}
        self.batch: int | None = None
        self.g = Graph(_ident(graph.name or path.stem))
        props = {p.key: p.value for p in model.metadata_props}
        try:
            self.g.meta = json.loads(props[META_KEY])
        except (KeyError, ValueError):
            self.g.meta = {"source": path.name, "producer": model.producer_name or "unknown"}

    # -- driving --------------------------------------------------------------------------
    def run(self) -> Graph:
        if not self.graph_inputs:
            raise AccelError("the model has no inputs")
        # Constant subgraphs (Quant'ed weights, folded shapes) first, so that a bias is
        # known when its MatMul or Conv is reached.
        for i, node in enumerate(self.nodes):
            ins = [v for v in node.input if v]
            if node.op_type in _CONST_OPS and all(isinstance(self.env.get(v), Const) for v in ins):
                with self.at(i):
                    _HANDLERS[node.op_type](self, i, node)
                self.skip.add(i)
        for vi in self.graph_inputs:
            self.add_input(vi)
        for i, node in enumerate(self.nodes):
            if i in self.skip:
                continue
            handler = _HANDLERS.get(node.op_type)
            with self.at(i):
                if handler is None:
                    raise AccelError(
                        f"unsupported op (accel imports {', '.join(sorted(_HANDLERS))})"
                    )
                handler(self, i, node)
        for name in self.outputs:
            if name not in self.env and name not in self.alias:
                raise AccelError(f"output {name} is not produced by any node")
            v = self.get(name)
            if isinstance(v, Const):
                raise AccelError(f"output {name} is a constant, not computed from the input")
            if v.exp:
                raise AccelError(
                    f"output {name} is scaled by 2**{v.exp} (a Mul/Div no MatMul/Conv absorbs)"
                )
            self.g.mark_output(self.materialize(v))
        self.prune()
        return self.g

    @contextmanager
    def at(self, i: int) -> Iterator[None]:
        """Make every error raised while handling node ``i`` one line that names it."""
        head = f"node {self.names[i]} ({self.nodes[i].op_type}): "
        try:
            yield
        except AccelError as e:
            msg = _one_line(e)
            if not re.match(r"node \S+ \(\w+\): ", msg):
                msg = head + re.sub(r"^node [^:(]+: ", "", msg)
            raise AccelError(msg) from None
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
            raise AccelError(f"{head}malformed node ({type(e).__name__}: {_one_line(e)})") from e

    def prune(self) -> None:
        """Drop nodes no output depends on (dangling branches of the ONNX graph)."""
        live = set(self.g.outputs)
        for n in reversed(self.g.nodes):
            if n.outputs[0] in live:
                live.update(n.inputs)
        for n in [n for n in self.g.nodes if n.outputs[0] not in live]:
            self.g.nodes.remove(n)
            del self.g.tensors[n.outputs[0]]

    # -- values ---------------------------------------------------------------------------
    def get(self, name: str) -> Const | View:
        while name in self.alias:
            name = self.alias[name]
        if name not in self.env:
            raise AccelError(f"input {name!r} is not produced by any earlier node")
        return self.env[name]

    def view(self, name: str) -> View:
        v = self.get(name)
        if isinstance(v, Const):
            raise AccelError(f"expects an activation for {name!r}, got a constant")
        return v

    def const(self, name: str, what: str) -> Const:
        v = self.get(name)
        if isinstance(v, View):
            raise AccelError(f"{what} {name!r} must be a constant (an initializer)")
        return v

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.g.tensors:
            name, k = f"{base}_{k}", k + 1
        return name

    def aname(self, i: int) -> str:
        return self.fresh(_ident(self.names[i]))

    def materialize(self, v: View) -> str:
        """An accel tensor holding the view's elements in its index order and shape."""
        t, idx = self.g.tensors[v.tensor], v.index
        if idx.size == t.size and np.array_equal(idx.ravel(), np.arange(t.size)):
            if idx.shape == t.shape:
                return v.tensor
            op, attrs = "reshape", {"shape": list(idx.shape)}
        else:
            op, attrs = "gather", {"index": idx.ravel(), "shape": list(idx.shape)}
        key = (v.tensor, op, idx.shape, idx.tobytes())
        if key not in self.cache:
            base = _ident(v.origin)
            name = base if base not in self.g.tensors else self.fresh(f"{base}_layout")
            self.cache[key] = self.g.add(op, v.tensor, name=name, **attrs)
        return self.cache[key]

    def attrs(self, node: Any) -> dict[str, Any]:
        out = {}
        for a in node.attribute:
            v = self.onnx.helper.get_attribute_value(a)
            out[a.name] = v.decode() if isinstance(v, bytes) else v
        return out

    # -- inputs ---------------------------------------------------------------------------
    def add_input(self, vi: Any) -> None:
        """Create the graph input, quantized as the Quant that first reads it says."""
        name, dims = vi.name, vi.type.tensor_type.shape.dim
        if len(dims) < 2 or any(not d.HasField("dim_value") or d.dim_value < 1 for d in dims[1:]):
            raise AccelError(f"input {name}: needs a batch axis and fixed sizes after it")
        if dims[0].HasField("dim_value"):
            self.batch = dims[0].dim_value
        shape = tuple(d.dim_value for d in dims[1:])
        cur = name
        while True:  # layout ops commute with an elementwise Quant: look through them
            cons = self.consumers.get(cur, [])
            if len(cons) != 1 or cur in self.outputs:
                raise AccelError(f"input {name}: must feed exactly one Quant node")
            i = cons[0]
            if self.nodes[i].op_type in LAYOUT_OPS and self.nodes[i].input[0] == cur:
                cur = self.nodes[i].output[0]
                continue
            if self.nodes[i].op_type != "Quant" or self.nodes[i].input[0] != cur:
                op = self.nodes[i].op_type
                raise AccelError(f"input {name}: node {self.names[i]} ({op}) reads it unquantized")
            break
        with self.at(i):
            t, rounding = handlers.act_quant(self, i)
        quant, last = Quant(t, rounding, Overflow.SAT), i
        folded = self.fold_input_rnd(i, t, rounding)
        if folded is not None:
            quant, last = folded
        tensor = self.g.add_input(self.fresh(_ident(name)), shape, quant)
        self.env[name] = View.of(tensor, shape, tensor)
        self.alias[self.nodes[last].output[0]] = self.nodes[i].input[0]

    def fold_input_rnd(self, i: int, t: FixedType, rounding: Rounding) -> tuple[Quant, int] | None:
        """FLOOR onto a twice-finer grid, + half an LSB, FLOOR: export's exact RND input."""
        if rounding is not Rounding.TRN:
            return None
        add = self.sole_consumer(self.nodes[i].output[0], "Add")
        if add is None:
            return None
        c = self.other_const(add, self.nodes[i].output[0])
        q2 = self.sole_consumer(self.nodes[add].output[0], "Quant")
        if c is None or q2 is None or c.value.size != 1 or float(c.value.flat[0]) != t.lsb:
            return None
        with self.at(q2):
            t2, r2 = handlers.act_quant(self, q2)
        if r2 is not Rounding.TRN or t2 != FixedType(t.width - 1, t.frac - 1, t.signed):
            return None
        self.skip |= {i, add, q2}
        return Quant(t2, Rounding.RND, Overflow.SAT), q2

    def sole_consumer(self, value: str, op_type: str) -> int | None:
        cons = self.consumers.get(value, [])
        if len(cons) != 1 or value in self.outputs or cons[0] in self.skip:
            return None
        return cons[0] if self.nodes[cons[0]].op_type == op_type else None

    def other_const(self, i: int, value: str) -> Const | None:
        ins = [v for v in self.nodes[i].input if v != value]
        c = self.env.get(ins[0]) if len(ins) == 1 else None
        return c if isinstance(c, Const) else None


_CONST_OPS = {"Quant", "BipolarQuant", "Relu", "Add", "Mul", "Div", "Constant", "Gather", "Pad"}
_CONST_OPS.update(LAYOUT_OPS)
_HANDLERS = {
    "Quant": handlers.quant,
    "BipolarQuant": handlers.bipolar_quant,
    "Relu": handlers.relu,
    "Add": handlers.add,
    "Mul": handlers.mul,
    "Div": handlers.mul,
    "Constant": handlers.constant,
    "Conv": dot.conv,
    "MatMul": dot.matmul,
    "Gemm": dot.gemm,
    **{op: layout for op in (*LAYOUT_OPS, "Gather", "Pad")},
}
