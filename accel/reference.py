"""The numpy reference executor: the golden model every engine must match.

Runs a Graph on a batch of raw integers, one vectorised kernel per node (no
Python loop per sample or per MAC). Kernels are registered by op name, so a
new op adds a kernel here and nothing else changes.

The fast path: the integers of a tensor whose type fits 24 bits of magnitude
are exact in float32, up to 53 bits in float64, so the dot-product chains
(gather, conv2d, dense, relu, requantize, reshape) run on such floats with
float BLAS where each node's types and constant weights prove every partial
sum stays within the float's exact range (:data:`FLOAT_KERNELS`; each checks
its own bound and otherwise defers to the int64 kernel). Every other op gets
int64 arrays. ``run(..., exact_ints=True)`` runs the int64 kernels throughout,
and the tests compare both with ``==``. Each node's result is checked against
its type only in test or debug runs (``ACCEL_CHECK_TYPES=1``, or under
pytest).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from accel import deform, intops, kernels, nm
from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Rounding, quantize, requantize
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
    """Validate a batch of already-quantized integers for input ``name``; as int64."""
    return _validate_raw(graph, name, x).astype(np.int64)


def _validate_raw(graph: Graph, name: str, x: np.ndarray) -> np.ndarray:
    t = graph.tensors[name]
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise AccelError(f"input {name!r}: expected integers, got dtype {x.dtype}")
    _check_shape(t, x)
    if not t.type.contains(x):
        lo, hi = t.type.min_int, t.type.max_int
        raise AccelError(f"input {name!r}: values outside {t.type} raw range [{lo}, {hi}]")
    return x


def quantize_inputs(graph: Graph, name: str, x: np.ndarray) -> np.ndarray:
    """Quantize real-valued inputs with the graph's declared input rounding/overflow."""
    t = graph.tensors[name]
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise AccelError(f"input {name!r}: expected floating-point values, got dtype {x.dtype}")
    _check_shape(t, x)
    return quantize(x, graph.input_quant[name])


def run(
    graph: Graph,
    inputs: dict[str, np.ndarray] | np.ndarray,
    compressed: bool = False,
    exact_ints: bool = False,
) -> dict[str, np.ndarray]:
    """Execute ``graph`` on raw integer inputs; returns every tensor by name (int64).

    ``compressed=True`` runs N:M nodes from their compressed weights (values and
    indices), the way the sparse engine reads them; the result is identical.
    ``exact_ints=True`` keeps every tensor in int64 (no float fast path); the
    result is identical too.
    """
    values = _execute(graph, inputs, compressed, exact_ints)
    return {k: _as_int(v) for k, v in values.items()}


def predict(graph: Graph, x: np.ndarray) -> np.ndarray:
    """Raw integer outputs (int64) of a single-input, single-output graph."""
    return _as_int(_execute(graph, x, False, False)[graph.outputs[0]])


def _checking() -> bool:
    """Check every node's result against its type (tests and ``ACCEL_CHECK_TYPES=1``)."""
    return os.environ.get("ACCEL_CHECK_TYPES") == "1" or "PYTEST_CURRENT_TEST" in os.environ


def _execute(graph: Graph, inputs, compressed: bool, exact_ints: bool) -> dict[str, np.ndarray]:
    """Every tensor, as int64 or (on the fast path) as exact floats."""
    if not isinstance(inputs, dict):
        if len(graph.inputs) != 1:
            raise AccelError(f"graph {graph.name} has {len(graph.inputs)} inputs; pass a dict")
        inputs = {graph.inputs[0]: inputs}
    check = _checking()
    values = {}
    for n in graph.inputs:
        x = _validate_raw(graph, n, inputs[n])
        t = graph.tensors[n].type
        ftype = None if exact_ints else _float_for(t)
        values[n] = x.astype(ftype or np.int64)
    if any(len(v) == 0 for v in values.values()):  # an empty batch: every tensor empty
        return {name: np.zeros((0, *t.shape), np.int64) for name, t in graph.tensors.items()}
    ints: dict[str, np.ndarray] = {}  # int64 copies of float tensors, made once
    bounds: dict[str, int] = {}  # proven magnitude bounds tighter than the types'

    def as_int(name: str) -> np.ndarray:
        v = values[name]
        if v.dtype.kind != "f":
            return v
        if name not in ints:
            ints[name] = v.astype(np.int64)
        return ints[name]

    for node in graph.nodes:
        ts = [graph.tensors[t] for t in node.inputs]
        otype = graph.tensors[node.outputs[0]].type
        nm_node = compressed and node.attrs.get("nm") is not None
        out = None
        fast = None if exact_ints or nm_node else FLOAT_KERNELS.get(node.op)
        if fast is not None:
            b = [bounds.get(t, _magnitude(graph.tensors[t].type)) for t in node.inputs]
            r = fast(node, [values[t] for t in node.inputs], ts, b)
            if r is not None:
                out, bounds[node.outputs[0]] = r
        if out is None:
            fn = COMPRESSED_KERNELS[node.op] if nm_node else KERNELS.get(node.op)
            if fn is None:
                raise AccelError(
                    f"node {node.name}: the reference has no kernel for op {node.op!r}"
                )
            out = fn(node, [as_int(t) for t in node.inputs], ts)
        if check:
            if not otype.contains(out):  # an internal invariant, not a user error
                raise AssertionError(f"node {node.name}: result escapes its type {otype}")
            bound = bounds.get(node.outputs[0])
            if bound is not None and out.size and np.abs(out).max() > bound:
                raise AssertionError(f"node {node.name}: result escapes its bound {bound}")
            if out.dtype.kind == "f" and not np.array_equal(out, np.floor(out)):
                raise AssertionError(f"node {node.name}: a float result is not integral")
        values[node.outputs[0]] = out
    return values


def _as_int(v: np.ndarray) -> np.ndarray:
    return v.astype(np.int64) if v.dtype.kind == "f" else v


# -- the float fast path -------------------------------------------------------------
F32_EXACT = 2**24  # every integer of magnitude <= 2**24 is a float32, <= 2**53 a float64
F64_EXACT = 2**53


def _magnitude(t: FixedType) -> int:
    return max(-t.min_int, t.max_int)


def _float_for(t: FixedType):
    """The narrowest float dtype holding every raw value of ``t`` exactly, or None."""
    m = _magnitude(t)
    return np.float32 if m <= F32_EXACT else np.float64 if m <= F64_EXACT else None


# A float kernel gets the node, its inputs, their tensors and a proven bound on each
# input's magnitude (its type's, or tighter from the node that made it) and returns
# (output, its bound), or None when its input is not float or a bound does not hold:
# the int64 kernel runs instead.
FloatResult = tuple[np.ndarray, int] | None


def _dot_float(node: Node, x: np.ndarray, x_bound: int, w2: np.ndarray, cols_fn):
    """``cols_fn(x) @ w2 + bias`` in float when the bound proves it exact.

    Every partial sum, in whatever order BLAS adds, is at most ``max|x| * max over
    outputs of sum|w|`` (+ ``max|bias|``) in magnitude: below 2**24 the float32
    sums are exact, below 2**53 the float64 ones. The sums must also fit the
    accumulator, so its wrap-around is the identity.
    """
    if x.dtype.kind != "f":
        return None
    b = node.params.get("bias")
    bias = None if b is None else kernels.align_bias(b.data, b.type, node.attrs["acc"])
    l1 = int(np.abs(w2).sum(axis=0).max(initial=0))
    bound = x_bound * l1 + (0 if bias is None else int(np.abs(bias).max(initial=0)))
    acc: FixedType = node.attrs["acc"]
    if bound > acc.max_int or -bound < acc.min_int or bound > F64_EXACT:
        return None
    ftype = np.float32 if bound <= F32_EXACT and x.dtype == np.float32 else np.float64
    y = cols_fn(x.astype(ftype, copy=False)) @ w2.astype(ftype)
    if bias is not None:
        y += bias.astype(ftype)
    return y, bound


def _dense_f(node, xs, ts, bounds) -> FloatResult:
    x, w = xs[0], node.params["weight"].data
    r = _dot_float(node, x, bounds[0], w, lambda a: a.reshape(-1, a.shape[-1]))
    return None if r is None else (r[0].reshape(*x.shape[:-1], w.shape[1]), r[1])


def _conv2d_f(node, xs, ts, bounds) -> FloatResult:
    w = node.params["weight"].data
    kh, kw, cin, cout = w.shape
    shape = []

    def cols(a):
        c, nohw = kernels.im2col(a, kh, kw, _conv_pads(node, ts[0]), node.attrs["stride"])
        shape.extend(nohw)
        return c

    r = _dot_float(node, xs[0], bounds[0], w.reshape(kh * kw * cin, cout), cols)
    return None if r is None else (r[0].reshape(*shape, cout), r[1])


def _requantize_f(node, xs, ts, bounds) -> FloatResult:
    """Requantize exact float integers: scale by 2**-shift (exact), round, clamp.

    ``floor(v * 2**-s + 0.5)`` is AP_RND and ``rint`` (ties to even) AP_RND_CONV;
    the sum is exact while ``max|v| + 2**(s-1)`` fits the float's exact range.
    """
    x, src = xs[0], ts[0].type
    q = node.attrs["quant"]
    s = src.frac - q.type.frac
    if x.dtype.kind != "f" or s < 0:
        return None
    need = bounds[0] + (1 << (s - 1) if s > 0 else 0)
    out_mag = _magnitude(q.type)
    if need > F64_EXACT or out_mag > F64_EXACT:
        return None
    f32 = x.dtype == np.float32 and need <= F32_EXACT and out_mag <= F32_EXACT
    ftype = np.float32 if f32 else np.float64
    if s > 0:
        y = np.multiply(x, ftype(2.0**-s), dtype=ftype)
        if q.rounding is Rounding.RND:
            y += ftype(0.5)
            np.floor(y, out=y)
        elif q.rounding is Rounding.RND_CONV:
            np.rint(y, out=y)
        else:
            np.floor(y, out=y)
    else:
        y = x.astype(ftype)  # a copy: the input tensor keeps its own values
    lo, hi = q.type.min_int, q.type.max_int
    if q.overflow is Overflow.SAT:
        np.clip(y, lo, hi, out=y)
    elif y.size and (y.min() < lo or y.max() > hi):
        return None  # it wraps: the int64 kernel does that
    # rounding moves a value by at most one step of the new scale
    return y, min(out_mag, (bounds[0] >> s) + 1)


def _relu_f(node, xs, ts, bounds) -> FloatResult:
    return (np.maximum(xs[0], 0), bounds[0]) if xs[0].dtype.kind == "f" else None


FLOAT_KERNELS: dict[str, Callable[..., FloatResult]] = {
    "dense": _dense_f,
    "conv2d": _conv2d_f,
    "requantize": _requantize_f,
    "relu": _relu_f,
    "gather": lambda node, xs, ts, bounds: (_gather(node, xs, ts), bounds[0]),
    "reshape": lambda node, xs, ts, bounds: (_reshape(node, xs, ts), bounds[0]),
}


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
