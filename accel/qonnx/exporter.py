"""Write an accel Graph as a QONNX model that qonnx executes to our exact integers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from accel import kernels
from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding, requantize
from accel.ir.graph import Graph, Node, Param
from accel.ir.ops import conv_padding
from accel.qonnx.common import DOMAIN, FLOAT32_INT, IR_VERSION, OPSET, require_onnx

META_KEY = "accel.meta"  # graph.meta as JSON, so an import restores it


class _Exporter:
    """Lowers nodes one by one; tracks, per accel tensor, its ONNX value and layout."""

    def __init__(self, graph: Graph, batch: int) -> None:
        self.onnx = require_onnx()
        self.g, self.batch = graph, batch
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.shapes: dict[str, tuple[int, ...]] = {}  # ONNX value -> its full shape
        self.names: set[str] = set(graph.inputs)
        self.node_names: set[str] = set()
        self.where: dict[str, tuple[str, bool]] = {}  # accel tensor -> (ONNX value, is NCHW)
        self.relaid: dict[tuple[str, bool], str] = {}  # transposed copies, made once
        # raw-integer range of each accel tensor, from the actual weights: float32 is exact
        # when no fixed-point value in the model passes 2**24 LSBs (see float32_exact)
        self.range: dict[str, tuple[int, int]] = {}
        self.widest = 0

    # -- small builders -------------------------------------------------------------------
    def fresh(self, base: str, used: set[str] | None = None) -> str:
        used = self.names if used is None else used
        name, k = base, 1
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        return name

    def const(self, base: str, array: Any) -> str:
        name = self.fresh(base)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str, shape, node: str | None = None,
           domain: str = "", batched: bool = True, **attrs: Any) -> str:  # fmt: skip
        """Append a node; ``shape`` excludes the batch axis unless ``batched`` is False."""
        out = self.fresh(out)
        name = self.fresh(node or out, self.node_names)
        self.shapes[out] = tuple(int(s) for s in ((self.batch, *shape) if batched else shape))
        make = self.onnx.helper.make_node
        self.nodes.append(make(op_type, inputs, [out], name=name, domain=domain, **attrs))
        return out

    def bound(self, lo: int, hi: int) -> tuple[int, int]:
        """Note a raw range some ONNX value spans (float32 is exact up to 2**24 LSBs)."""
        self.widest = max(self.widest, -int(lo), int(hi))
        return int(lo), int(hi)

    def quant(self, x: str, base: str, t: FixedType, mode: str, shape, batched: bool = True) -> str:
        """A QONNX Quant onto ``t``: scale 2**-frac, zero point 0, narrow 0, saturating."""
        scale = self.const(f"{base}_scale", np.float32(2.0**-t.frac))
        zero = self.const(f"{base}_zeropt", np.float32(0))
        bits = self.const(f"{base}_bitwidth", np.float32(t.width))
        args = {"signed": int(t.signed), "narrow": 0, "rounding_mode": mode}
        quant = [x, scale, zero, bits]
        return self.op("Quant", quant, base, shape, domain=DOMAIN, batched=batched, **args)

    def requant(self, x: str, src: tuple[FixedType, int, int] | None, q: Quant, base: str,
                shape, who: str) -> str:  # fmt: skip
        """Nodes computing ``requantize`` onto ``q`` exactly.

        ``src`` is the source's (type, lowest raw, highest raw); None for real inputs.
        """
        if q.overflow is not Overflow.SAT:
            raise AccelError(f"{who}: {q.overflow} overflow has no QONNX form (Quant saturates)")
        if q.rounding is Rounding.RND_CONV:
            return self.quant(x, base, q.type, "ROUND", shape)
        if q.rounding is Rounding.RND and (src is None or src[0].frac > q.type.frac):
            if src is None:  # floor onto a grid twice as fine first: then the Add is exact
                fine = FixedType(q.type.width + 1, q.type.frac + 1, q.type.signed)
                x = self.quant(x, f"{base}_half", fine, "FLOOR", shape)
                src = (fine, fine.min_int, fine.max_int)
            # QONNX has no ties-toward-+inf mode: add half an LSB, then floor.
            half_lsb = 1 << (src[0].frac - q.type.frac - 1)
            self.bound(src[1] + half_lsb, src[2] + half_lsb)
            half = self.const(f"{base}_half_lsb", np.float32(2.0 ** -(q.type.frac + 1)))
            x = self.op("Add", [x, half], f"{base}_round", shape)
        return self.quant(x, base, q.type, "FLOOR", shape)

    def param(self, p: Param, base: str, perm: tuple[int, ...] | None, who: str) -> str:
        """A float initializer holding the exact fixed-point values, fed through a Quant."""
        if np.abs(p.data).max(initial=0) > FLOAT32_INT:
            raise AccelError(f"{who}: {base} values need more than 24 bits (float32 in QONNX)")
        self.widest = max(self.widest, int(np.abs(p.data).max(initial=0)))
        data = p.data if perm is None else p.data.transpose(perm)
        init = self.const(f"{base}_float", np.ldexp(data, -p.type.frac).astype(np.float32))
        return self.quant(init, base, p.type, "ROUND", data.shape, batched=False)

    # -- layouts --------------------------------------------------------------------------
    def get(self, t: str, nchw: bool) -> str:
        """The ONNX value of accel tensor ``t``, in NCHW order or in accel's (H, W, C) order."""
        value, is_nchw = self.where[t]
        if is_nchw == nchw:
            return value
        if (t, nchw) not in self.relaid:
            h, w, c = self.g.tensors[t].shape
            if nchw:
                perm, shape, tag = [0, 3, 1, 2], (c, h, w), "nchw"
            else:
                perm, shape, tag = [0, 2, 3, 1], (h, w, c), "nhwc"
            self.relaid[t, nchw] = self.op("Transpose", [value], f"{t}_{tag}", shape, perm=perm)
        return self.relaid[t, nchw]

    # -- ops ------------------------------------------------------------------------------
    def lower(self, n: Node) -> None:
        x = self.g.tensors[n.inputs[0]]
        out_t = self.g.tensors[n.outputs[0]]
        lo, hi = self.range[x.name]
        who = f"node {n.name}"
        if n.op in ("relu", "requantize"):
            value, nchw = self.where[x.name]
            vshape = self.shapes[value][1:] if value in self.shapes else x.shape
            if n.op == "relu":
                out = self.op("Relu", [value], n.name, vshape)
                rng = (max(lo, 0), max(hi, 0))
            else:
                q = n.attrs["quant"]
                out = self.requant(value, (x.type, lo, hi), q, n.name, vshape, who)
                rng = tuple(int(v) for v in requantize(np.array([lo, hi]), x.type.frac, q))
            self.where[out_t.name] = (out, nchw)
        elif n.op in ("conv2d", "dense"):
            rng = self.dot(n, x)
        elif n.op == "reshape":
            target = self.const(f"{n.name}_shape", np.array([-1, *out_t.shape], dtype=np.int64))
            out = self.op("Reshape", [self.get(x.name, False), target], n.name, out_t.shape)
            self.where[out_t.name] = (out, False)
            rng = (lo, hi)
        elif n.op == "gather":
            padded = self.gather(n, x.name, out_t.shape)
            rng = (min(lo, 0), max(hi, 0)) if padded else (lo, hi)
        else:
            raise AccelError(f"{who}: op {n.op!r} has no QONNX export")
        self.range[out_t.name] = self.bound(*rng)

    def dot(self, n: Node, x) -> tuple[int, int]:
        """Conv (NCHW, explicit pads) or MatMul + Add; returns the accumulator's raw range."""
        w, b = n.params["weight"], n.params.get("bias")
        acc, who = n.attrs["acc"], f"node {n.name}"
        shape = self.g.tensors[n.outputs[0]].shape
        if n.op == "conv2d":
            kh, kw = w.data.shape[:2]
            s, padding = n.attrs["stride"], n.attrs["padding"]
            _, top, bottom = conv_padding(x.shape[0], kh, s, padding)
            _, left, right = conv_padding(x.shape[1], kw, s, padding)
            weight = self.param(w, f"{n.name}_weight", (3, 2, 0, 1), who)
            inputs = [self.get(x.name, True), weight]
            if b is not None:
                inputs.append(self.param(b, f"{n.name}_bias", None, who))
            oh, ow, oc = shape
            attrs = {"kernel_shape": [kh, kw], "strides": [s, s], "dilations": [1, 1], "group": 1}
            pads = [top, left, bottom, right]
            out = self.op("Conv", inputs, n.name, (oc, oh, ow), pads=pads, **attrs)
        else:
            weight = self.param(w, f"{n.name}_weight", None, who)
            mm_out = f"{n.name}_matmul" if b is not None else n.name
            out = self.op("MatMul", [self.get(x.name, False), weight], mm_out, shape, node=n.name)
            if b is not None:
                bias = self.param(b, f"{n.name}_bias", None, who)
                out = self.op("Add", [out, bias], n.name, shape, node=f"{n.name}_add_bias")
        self.where[n.outputs[0]] = (out, n.op == "conv2d")
        # Every product and partial sum lies in [sum of negative terms, sum of positive ones].
        lo, hi = self.range[x.name]
        lo, hi = min(lo, 0), max(hi, 0)  # padding taps read zeros
        w2 = w.data.reshape(-1, w.data.shape[-1])
        bias = 0 if b is None else kernels.align_bias(b.data, b.type, acc)
        top = np.maximum(w2 * lo, w2 * hi).sum(axis=0) + np.maximum(bias, 0)
        bottom = np.minimum(w2 * lo, w2 * hi).sum(axis=0) + np.minimum(bias, 0)
        return int(bottom.min()), int(top.max())

    def gather(self, n: Node, x: str, shape: tuple[int, ...]) -> bool:
        """Gather on the flattened input; a Pad appends the zero that index -1 reads."""
        index = np.asarray(n.attrs["index"], dtype=np.int64).reshape(shape)
        value, size = self.get(x, False), self.g.tensors[x].size
        if len(self.g.tensors[x].shape) != 1:
            flat = self.const(f"{n.name}_flat_shape", np.array([-1, size], dtype=np.int64))
            value = self.op("Reshape", [value, flat], f"{n.name}_flat", (size,))
        padded = bool((index < 0).any())
        if padded:
            pads = self.const(f"{n.name}_pads", np.array([0, 0, 0, 1], dtype=np.int64))
            zero = self.const(f"{n.name}_pad_value", np.float32(0))
            value = self.op("Pad", [value, pads, zero], f"{n.name}_pad", (size + 1,))
            index = np.where(index < 0, size, index)
        nchw = len(shape) == 3
        if nchw:
            index = index.transpose(2, 0, 1)
        indices = self.const(f"{n.name}_index", index)
        out = self.op("Gather", [value, indices], n.name, index.shape, axis=1)
        self.where[n.outputs[0]] = (out, nchw)
        return padded

    # -- the model ------------------------------------------------------------------------
    def build(self) -> Any:
        g, helper = self.g, self.onnx.helper
        for t in g.inputs:
            q, shape = g.input_quant[t], g.tensors[t].shape
            self.where[t] = (self.requant(t, None, q, f"{t}_quant", shape, f"input {t}"), False)
            self.range[t] = self.bound(q.type.min_int, q.type.max_int)
        for n in g.nodes:
            self.lower(n)
        outs = [self.get(t, False) for t in g.outputs]

        def info(name: str, shape: tuple[int, ...]) -> Any:
            return helper.make_tensor_value_info(name, self.onnx.TensorProto.FLOAT, shape)

        graph = helper.make_graph(
            self.nodes,
            g.name,
            [info(t, (self.batch, *g.tensors[t].shape)) for t in g.inputs],
            [info(v, self.shapes[v]) for v in outs],
            self.inits,
            value_info=[info(v, s) for v, s in self.shapes.items() if v not in outs],
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, 1)],
            producer_name="accel",
            ir_version=IR_VERSION,
        )
        model.doc_string = (
            "Exported by accel: QONNX Quant nodes with power-of-two scales; float tensors hold "
            "exact fixed-point values; NCHW inside, the graph's own shapes at the boundary."
        )
        helper.set_model_props(model, {META_KEY: json.dumps(g.meta)})
        return model


def export(graph: Graph, path: str | Path, batch: int = 1) -> Path:
    """Write ``graph`` as a QONNX model at ``path``; the batch axis is fixed to ``batch``.

    qonnx's executor needs concrete shapes, hence a fixed batch (1, as FINN expects).
    See :mod:`accel.qonnx` for the layout and rounding conventions.
    """
    if batch < 1:
        raise AccelError(f"batch must be at least 1, got {batch}")
    model = _Exporter(graph, batch).build()
    path = Path(path)
    try:
        require_onnx().save(model, path)
    except OSError as e:
        raise AccelError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def float32_exact(graph: Graph) -> bool:
    """Whether qonnx's float32 execution of the export provably gives our exact integers.

    True when every fixed-point value in the model (accumulators, half-LSB sums,
    weights) stays within 2**24 LSBs, where float32 holds every integer: then each
    product and partial sum, in any order, is exact. Types, not trained values, decide.
    """
    ex = _Exporter(graph, 1)
    ex.build()
    return ex.widest <= FLOAT32_INT
