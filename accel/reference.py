"""The numpy reference executor: the golden model every engine must match.

Runs a Graph on a batch of raw integers, one vectorised kernel per node (no
Python loop per sample or per MAC). Kernels are registered by op name, so a
new op adds a kernel here and nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from accel import deform, intops, kernels, nm
from accel.errors import AccelError
from accel.fixed import quantize, requantize
from accel.ir.graph import Graph, Node, Tensor
from accel.ir.ops import conv_padding

Kernel = Callable[[Node, list[np.ndarray], list[Tensor]], np.ndarray]
KERNELS: dict[str, Kernel] = {}


def kernel(op: str) -> Callable[[Kernel], Kernel]:
    def deco(fn: Kernel) -> Kernel:
        KERNELS[op] = fn
        return fn

    return deco


def _bias(node: Node) -> np.ndarray | None:
    b = node.params.get("bias")
    return None if b is None else kernels.align_bias(b.data, b.type, node.attrs["acc"])


@kernel("dense")
def _dense(node, xs, ts):
    w, x = node.params["weight"], xs[0]
    y = kernels.dense(
        x.reshape(-1, x.shape[-1]), w.data, _bias(node), ts[0].type, w.type, node.attrs["acc"]
    )
    return y.reshape(*x.shape[:-1], w.data.shape[1])


def _conv_pads(node: Node, x: Tensor) -> tuple[int, int, int, int]:
    kh, kw = node.params["weight"].data.shape[:2]
    s, p = node.attrs["stride"], node.attrs["padding"]
    _, top, bottom = conv_padding(x.shape[0], kh, s, p)
    _, left, right = conv_padding(x.shape[1], kw, s, p)
    return top, bottom, left, right


@kernel("conv2d")
def _conv2d(node, xs, ts):
    w = node.params["weight"]
    return kernels.conv2d(
        xs[0],
        w.data,
        _bias(node),
        _conv_pads(node, ts[0]),
        node.attrs["stride"],
        ts[0].type,
        w.type,
        node.attrs["acc"],
    )


def _compressed(node: Node) -> nm.Compressed:
    """The forward-pattern compressed weight of a dot node, as (K, C)."""
    w = node.params["weight"].data
    return nm.compress(w.reshape(-1, w.shape[-1]), nm.NM.parse(node.attrs["nm"]), 0, node.name)


def _dense_compressed(node, xs, ts):
    return kernels.finish(
        nm.matmul_compressed(xs[0], _compressed(node)), _bias(node), node.attrs["acc"]
    )


def _conv2d_compressed(node, xs, ts):
    kh, kw, _, cout = node.params["weight"].data.shape
    cols, (n, oh, ow) = kernels.im2col(xs[0], kh, kw, _conv_pads(node, ts[0]), node.attrs["stride"])
    acc = nm.matmul_compressed(cols, _compressed(node))
    return kernels.finish(acc, _bias(node), node.attrs["acc"]).reshape(n, oh, ow, cout)


# Kernels that read only the kept weights of an N:M node (``run(..., compressed=True)``).
COMPRESSED_KERNELS: dict[str, Kernel] = {"dense": _dense_compressed, "conv2d": _conv2d_compressed}


def deform_offsets(node: Node, x: np.ndarray, t: Tensor) -> np.ndarray | None:
    """The quantized offsets of a deform_conv2d node, (N, OH, OW, K); None if regular."""
    if node.attrs["mode"] == "regular":
        return None
    ow, ob = node.params["offset_weight"], node.params.get("offset_bias")
    acc = node.attrs["offset_acc"]
    bias = None if ob is None else kernels.align_bias(ob.data, ob.type, acc)
    return deform.offsets(
        x,
        ow.data,
        bias,
        node.attrs["stride"],
        t.type,
        ow.type,
        acc,
        node.attrs["mode"],
        node.attrs["max_offset"],
        node.attrs["offset_frac"],
    )


@kernel("deform_conv2d")
def _deform_conv2d(node, xs, ts):
    off = deform_offsets(node, xs[0], ts[0])
    w = node.params["weight"]
    return deform.deform_dw(
        xs[0],
        off,
        w.data,
        _bias(node),
        node.attrs["stride"],
        node.attrs["acc"],
        node.attrs["mode"],
        node.attrs["offset_frac"],
    )


@kernel("relu")
def _relu(node, xs, ts):
    return np.maximum(xs[0], 0)


@kernel("requantize")
def _requantize(node, xs, ts):
    return requantize(xs[0], ts[0].type.frac, node.attrs["quant"])


@kernel("reshape")
def _reshape(node, xs, ts):
    return xs[0].reshape((len(xs[0]), *node.attrs["shape"]))


@kernel("gather")
def _gather(node, xs, ts):
    x = xs[0].reshape(len(xs[0]), -1)
    index = np.asarray(node.attrs["index"])
    out = np.where(index >= 0, x[:, np.maximum(index, 0)], 0)
    return out.reshape((len(x), *node.attrs["shape"]))


def _check_shape(t: Tensor, x: np.ndarray) -> None:
    if x.ndim != len(t.shape) + 1 or x.shape[1:] != t.shape:
        want = ", ".join(map(str, t.shape))
        raise AccelError(f"input {t.name!r}: expected shape (N, {want}), got {x.shape}")


def check_raw_inputs(graph: Graph, name: str, x: np.ndarray) -> np.ndarray:
    """Validate a batch of already-quantized integers for input ``name``."""
    t = graph.tensors[name]
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise AccelError(f"input {name!r}: expected integers, got dtype {x.dtype}")
    _check_shape(t, x)
    if not t.type.contains(x):
        lo, hi = t.type.min_int, t.type.max_int
        raise AccelError(f"input {name!r}: values outside {t.type} raw range [{lo}, {hi}]")
    return x.astype(np.int64)


def quantize_inputs(graph: Graph, name: str, x: np.ndarray) -> np.ndarray:
    """Quantize real-valued inputs with the graph's declared input rounding/overflow."""
    t = graph.tensors[name]
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise AccelError(f"input {name!r}: expected floating-point values, got dtype {x.dtype}")
    _check_shape(t, x)
    return quantize(x, graph.input_quant[name])


def run(
    graph: Graph, inputs: dict[str, np.ndarray] | np.ndarray, compressed: bool = False
) -> dict[str, np.ndarray]:
    """Execute ``graph`` on raw integer inputs; returns every tensor by name.

    ``compressed=True`` runs N:M nodes from their compressed weights (values and
    indices), the way the sparse engine reads them; the result is identical.
    """
    if not isinstance(inputs, dict):
        if len(graph.inputs) != 1:
            raise AccelError(f"graph {graph.name} has {len(graph.inputs)} inputs; pass a dict")
        inputs = {graph.inputs[0]: inputs}
    values = {n: check_raw_inputs(graph, n, inputs[n]) for n in graph.inputs}
    if any(len(v) == 0 for v in values.values()):  # an empty batch: every tensor empty
        return {name: np.zeros((0, *t.shape), np.int64) for name, t in graph.tensors.items()}
    for node in graph.nodes:
        fn = KERNELS.get(node.op)
        if compressed and node.attrs.get("nm") is not None:
            fn = COMPRESSED_KERNELS[node.op]
        if fn is None:
            raise AccelError(f"node {node.name}: the reference has no kernel for op {node.op!r}")
        ts = [graph.tensors[t] for t in node.inputs]
        out = fn(node, [values[t] for t in node.inputs], ts)
        otype = graph.tensors[node.outputs[0]].type
        if not otype.contains(out):  # an internal invariant, not a user error
            raise AssertionError(f"node {node.name}: result escapes its type {otype}")
        values[node.outputs[0]] = out
    return values


def predict(graph: Graph, x: np.ndarray) -> np.ndarray:
    """Raw integer outputs of a single-input, single-output graph."""
    return run(graph, x)[graph.outputs[0]]


# -- integer ViT blocks: thin wrappers over accel.intops ---------------------------


@kernel("softmax_int")
def _softmax_int(node, xs, ts):
    x, t, out = xs[0], ts[0].type, node.attrs["out"]
    axis = node.attrs["axis"]
    axis = axis + 1 if axis >= 0 else axis  # past the batch axis
    span = intops.softmax_span(t.min_int, t.max_int, t.frac)
    y = intops.shiftmax(np.moveaxis(x, axis, -1), t.frac, out.frac, out.width, span)
    return np.moveaxis(y, -1, axis)


@kernel("gelu_int")
def _gelu_int(node, xs, ts):
    return intops.shiftgelu(xs[0], ts[0].type.frac, node.attrs["sig_bits"])


@kernel("layernorm_int")
def _layernorm_int(node, xs, ts):
    g, b = node.params["gamma"], node.params.get("beta")
    return intops.layernorm(
        xs[0],
        ts[0].type,
        g.data,
        None if b is None else b.data,
        g.type,
        None if b is None else b.type,
        node.attrs["norm_frac"],
        node.attrs["sqrt_guard"],
        node.attrs["mean_frac"],
    )


@kernel("matmul")
def _matmul(node, xs, ts):
    b = np.swapaxes(xs[1], -1, -2) if node.attrs["transpose_b"] else xs[1]
    return intops.matmul(xs[0], b, ts[0].type, ts[1].type, node.attrs["acc"])


@kernel("add")
def _add(node, xs, ts):
    return intops.add(xs[0], xs[1], ts[0].type, ts[1].type)


# -- ViT plumbing -----------------------------------------------------------------


@kernel("patchify")
def _patchify(node, xs, ts):
    x, p = xs[0], node.attrs["patch"]
    n, h, w, c = x.shape
    t = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return t.reshape(n, (h // p) * (w // p), p * p * c)


@kernel("add_const")
def _add_const(node, xs, ts):
    v = node.params["value"]
    return intops.add(xs[0], v.data[np.newaxis], ts[0].type, v.type)


@kernel("concat")
def _concat(node, xs, ts):
    return np.concatenate(xs, axis=-1)
