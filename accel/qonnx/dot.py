"""Conv, MatMul and Gemm (with a bias, given or in a following Add) as conv2d and dense."""

from __future__ import annotations

from typing import Any

import numpy as np

from accel.errors import AccelError
from accel.ir.graph import Param
from accel.ir.ops import conv_padding
from accel.qonnx import handlers
from accel.qonnx.values import Const, View


def conv(imp: Any, i: int, node: Any) -> None:
    """NCHW Conv -> NHWC conv2d; pads other than TF 'same'/'valid' become a zero-pad gather."""
    x, w = imp.view(node.input[0]), imp.const(node.input[1], "weight")
    a = imp.attrs(node)
    wv = np.asarray(w.value)
    if x.index.ndim != 3 or wv.ndim != 4:
        raise AccelError(f"only 2-D convolutions of NCHW activations (got input {x.shape})")
    cout, cin, kh, kw = wv.shape
    c, h, wd = x.shape
    if int(a.get("group", 1)) != 1:
        raise AccelError(f"group={a['group']} is unsupported (only group=1)")
    if any(int(d) != 1 for d in a.get("dilations", [1, 1])):
        raise AccelError(f"dilations {list(a['dilations'])} are unsupported")
    if cin != c or list(a.get("kernel_shape", [kh, kw])) != [kh, kw]:
        raise AccelError(f"weight shape {wv.shape} does not fit input channels {c}")
    sh, sw = (int(s) for s in a.get("strides", [1, 1]))
    if sh != sw:
        raise AccelError(f"strides {sh}x{sw} are unsupported (only square strides)")
    top, left, bottom, right = _pads(a, h, wd, kh, kw, sh)
    _, same_t, same_b = conv_padding(h, kh, sh, "same")
    _, same_l, same_r = conv_padding(wd, kw, sh, "same")
    hwc, origin = x.index.transpose(1, 2, 0), x.origin
    if top == left == bottom == right == 0:
        padding = "valid"
    elif (top, bottom, left, right) == (same_t, same_b, same_l, same_r):
        padding = "same"
    else:  # explicit zero padding (PyTorch style), then a 'valid' convolution
        padding = "valid"
        hwc = np.pad(hwc, ((top, bottom), (left, right), (0, 0)), constant_values=-1)
        origin = f"{imp.names[i]}_pad"
    bias = imp.const(node.input[2], "bias") if len(node.input) > 2 and node.input[2] else None
    outs = [node.output[0]]
    if bias is None:
        bias, outs = _take_bias(imp, node.output[0], cout, (cout, 1, 1), outs)
    wp = _weight(w, x)
    params = {"weight": Param(wp.data.transpose(2, 3, 1, 0), wp.type)}
    if bias is not None:
        params["bias"] = _bias(bias, cout)
    xin = imp.materialize(x.with_index(hwc, origin))
    out = imp.g.add("conv2d", xin, name=imp.aname(i), stride=sh, padding=padding, params=params)
    oh, ow, oc = imp.g.tensors[out].shape
    index = np.arange(oh * ow * oc).reshape(oh, ow, oc).transpose(2, 0, 1)
    for o in outs:
        imp.env[o] = View(out, index, out)


def matmul(imp: Any, i: int, node: Any) -> None:
    x, w = imp.view(node.input[0]), imp.const(node.input[1], "weight")
    _dense(imp, i, node, x, w, None)


def gemm(imp: Any, i: int, node: Any) -> None:
    """Y = alpha * A @ op(B) + beta * C with alpha = beta = 1, transA = 0."""
    a = imp.attrs(node)
    if int(a.get("transA", 0)) or float(a.get("alpha", 1.0)) != 1.0:
        raise AccelError("only transA=0 and alpha=1 are supported")
    x, w = imp.view(node.input[0]), imp.const(node.input[1], "weight")
    if int(a.get("transB", 0)):
        w = Const(np.transpose(w.value), w.type)
    bias = imp.const(node.input[2], "bias") if len(node.input) > 2 and node.input[2] else None
    if bias is not None and float(a.get("beta", 1.0)) != 1.0:
        raise AccelError("only beta=1 is supported")
    _dense(imp, i, node, x, w, bias)


def _dense(imp: Any, i: int, node: Any, x: View, w: Const, bias: Const | None) -> None:
    wv = np.asarray(w.value)
    if x.index.ndim != 1 or wv.ndim != 2 or wv.shape[0] != x.index.size:
        raise AccelError(f"expects (N, K) @ (K, O), got input {x.shape} and weight {wv.shape}")
    n_out = wv.shape[1]
    outs = [node.output[0]]
    if bias is None:
        bias, outs = _take_bias(imp, node.output[0], n_out, (n_out,), outs)
    params = {"weight": _weight(w, x)}
    if bias is not None:
        params["bias"] = _bias(bias, n_out)
    out = imp.g.add("dense", imp.materialize(x), name=imp.aname(i), params=params)
    for o in outs:
        imp.env[o] = View.of(out, (n_out,), out)


def _weight(w: Const, x: View) -> Param:
    """The weight; an activation scaled by 2**exp (a Mul) moves that scale in here, so the
    accumulator holds the exact ONNX values again."""
    return w.param("weight", frac_offset=-x.exp)


def _bias(bias: Const, n_out: int) -> Param:
    """A bias of shape (), (O,) or (1, O), as the (O,) Param accel wants."""
    value = np.broadcast_to(np.asarray(bias.value), (1, n_out)).reshape(n_out)
    return Const(value, bias.type).param("bias")


def _take_bias(
    imp: Any, value: str, n_out: int, shape: tuple[int, ...], outs: list[str]
) -> tuple[Const | None, list[str]]:
    """A constant Add right after the product is its bias: absorb it (Add is then skipped)."""
    j = imp.sole_consumer(value, "Add")
    c = None if j is None else imp.other_const(j, value)
    if c is None or handlers.half_lsb_quant(imp, j, c) is not None:
        return None, outs  # no Add, or it is the rounding of the next Quant
    cshape = tuple(np.shape(c.value))
    if np.size(c.value) != 1 and cshape not in (shape, (1, *shape)):
        return None, outs
    imp.skip.add(j)
    value = np.broadcast_to(np.ravel(c.value), (n_out,)).copy()
    return Const(value, c.type), [*outs, imp.nodes[j].output[0]]


def _pads(a: dict, h: int, w: int, kh: int, kw: int, s: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from ``pads`` or ``auto_pad``."""
    auto = str(a.get("auto_pad", "NOTSET"))
    if auto in ("NOTSET", ""):
        pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
        if len(pads) != 4 or min(pads) < 0:
            raise AccelError(f"pads {pads} are not 4 non-negative numbers")
        return pads[0], pads[1], pads[2], pads[3]
    if auto == "VALID":
        return 0, 0, 0, 0
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise AccelError(f"auto_pad {auto!r} is unknown")
    (_, t, b), (_, le, r) = conv_padding(h, kh, s, "same"), conv_padding(w, kw, s, "same")
    return (t, le, b, r) if auto == "SAME_UPPER" else (b, r, t, le)
