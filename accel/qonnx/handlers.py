"""Import handlers for Quant, BipolarQuant, Constant and elementwise arithmetic.

Each takes the importer, the node's position and the node. Constants are computed
exactly (weights quantized the way qonnx does it); activations become accel nodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.qonnx.common import activation_rounding, pow2_frac
from accel.qonnx.values import Const, View, quantize_const


def _fmt(a: np.ndarray) -> str:
    a = np.asarray(a).ravel()
    text = ", ".join(f"{v:g}" for v in a[:4]) + (", ..." if a.size > 4 else "")
    return text if a.size == 1 else f"[{text}]"


def quant_args(imp: Any, i: int) -> tuple[np.ndarray, int, bool, bool, str]:
    """(scale, bits, signed, narrow, rounding_mode) of Quant ``i``, zero point checked."""
    node, a = imp.nodes[i], imp.attrs(imp.nodes[i])
    if len(node.input) != 4:
        raise AccelError("Quant takes 4 inputs (x, scale, zero point, bit width)")
    scale = np.asarray(imp.const(node.input[1], "scale").value, dtype=np.float64)
    zero = np.asarray(imp.const(node.input[2], "zero point").value, dtype=np.float64)
    bits = np.asarray(imp.const(node.input[3], "bit width").value, dtype=np.float64)
    if np.any(zero != 0):
        raise AccelError(f"zero point {_fmt(zero)} is not 0 (accel has no zero points)")
    if bits.size != 1 or bits.flat[0] != int(bits.flat[0]) or not 1 <= bits.flat[0] <= 62:
        raise AccelError(f"bit width {_fmt(bits)} is not one integer in 1..62")
    mode = str(a.get("rounding_mode", "ROUND")).upper()
    return scale, int(bits.flat[0]), bool(a.get("signed", 1)), bool(a.get("narrow", 0)), mode


def act_quant(imp: Any, i: int) -> tuple[FixedType, Rounding]:
    """Type and rounding of a Quant of activations (SAT: Quant always clamps)."""
    scale, bits, signed, narrow, mode = quant_args(imp, i)
    frac = pow2_frac(scale)
    if frac is None:
        why = "per-channel scales {} are" if np.unique(scale).size > 1 else "scale {} is"
        raise AccelError(f"{why.format(_fmt(scale))} not one power of two (accel is fixed-point)")
    if narrow:
        raise AccelError("narrow=1 ranges on activations are unsupported")
    if bits == 1 and signed:
        raise AccelError("a signed 1-bit Quant is bipolar; unsupported on activations")
    rounding = activation_rounding(mode, signed)
    if rounding is None:
        kind = "signed" if signed else "unsigned"
        raise AccelError(
            f"rounding_mode {mode} on a {kind} Quant has no exact accel rounding "
            "(FLOOR, ROUND, HALF_EVEN; HALF_UP and DOWN when unsigned)"
        )
    return FixedType(bits, frac, signed), rounding


def quant(imp: Any, i: int, node: Any) -> None:
    x = imp.get(node.input[0])
    if isinstance(x, Const):
        imp.env[node.output[0]] = const_quant(imp, i, x)
        return
    t, rounding = act_quant(imp, i)
    q = Quant(FixedType(t.width, t.frac + x.exp, t.signed), rounding, Overflow.SAT)
    out = imp.g.add("requantize", x.tensor, name=imp.aname(i), quant=q)
    imp.env[node.output[0]] = View(out, x.index, out, x.exp)


def const_quant(imp: Any, i: int, x: Const) -> Const:
    """Weights and biases: any rounding mode, narrow ranges, per-channel 2**k scales."""
    scale, bits, signed, narrow, mode = quant_args(imp, i)
    scale = np.broadcast_to(scale, np.broadcast_shapes(scale.shape, np.shape(x.value)))
    mant, exp = np.frexp(scale)
    if np.any(mant != 0.5):
        raise AccelError(f"scale {_fmt(scale)} is not a power of two (accel is fixed-point)")
    raw = quantize_const(x.value, scale, bits, signed, narrow, mode)
    fracs = 1 - exp.astype(np.int64)
    if fracs.size == 0:
        raise AccelError("quantizes an empty constant")
    frac = int(fracs.max())
    raw = raw << (frac - fracs)  # per-channel scales onto the finest grid
    if bits == 1 and signed:
        bits = 2  # bipolar +-1
    lo = -(1 << (bits - 1)) if signed else 0
    hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    shift = frac - int(fracs.min())
    t = FixedType.covering(lo << shift, hi << shift, frac) if shift else None
    t = t or FixedType(bits, frac, signed)
    return Const(np.ldexp(raw.astype(np.float64), -frac), t)


def bipolar_quant(imp: Any, i: int, node: Any) -> None:
    x = imp.get(node.input[0])
    if isinstance(x, View):
        raise AccelError("bipolar activations are unsupported (only bipolar weights)")
    frac = pow2_frac(imp.const(node.input[1], "scale").value)
    if frac is None:
        raise AccelError("scale is not one power of two (accel is fixed-point)")
    y = np.asarray(x.value, np.float32) / np.float32(2.0**-frac)
    raw = np.where(y >= 0, 1.0, -1.0)
    imp.env[node.output[0]] = Const(np.ldexp(raw, -frac), FixedType(2, frac, True))


def constant(imp: Any, i: int, node: Any) -> None:
    a = imp.attrs(node)
    if "value" in a:
        value = imp.onnx.numpy_helper.to_array(a["value"])
    elif len(a) == 1 and next(iter(a)) in (
        "value_float",
        "value_floats",
        "value_int",
        "value_ints",
    ):
        value = np.asarray(next(iter(a.values())))
    else:
        raise AccelError(f"unsupported Constant attributes {sorted(a)}")
    imp.env[node.output[0]] = Const(value)


def relu(imp: Any, i: int, node: Any) -> None:
    x = imp.get(node.input[0])
    if isinstance(x, Const):
        imp.env[node.output[0]] = Const(np.maximum(x.value, 0), x.type)
        return
    out = imp.g.add("relu", x.tensor, name=imp.aname(i))
    imp.env[node.output[0]] = View(out, x.index, out, x.exp)


def half_lsb_quant(imp: Any, i: int, c: Const) -> tuple[int, FixedType] | None:
    """(index, type) of the FLOOR Quant that Add ``i`` of ``c`` feeds, if ``c`` is half its
    LSB: floor(x + LSB/2) is round-half-up, the way the export writes RND."""
    j = imp.sole_consumer(imp.nodes[i].output[0], "Quant") if np.size(c.value) == 1 else None
    if j is None:
        return None
    mode = str(imp.attrs(imp.nodes[j]).get("rounding_mode", "ROUND")).upper()
    with imp.at(j):
        t, _ = act_quant(imp, j)
    return (j, t) if mode == "FLOOR" and float(np.ravel(c.value)[0]) == t.lsb / 2 else None


def add(imp: Any, i: int, node: Any) -> None:
    a, b = (imp.get(v) for v in node.input)
    if isinstance(a, Const) and isinstance(b, Const):
        imp.env[node.output[0]] = Const(np.add(a.value, b.value, dtype=np.float64))
        return
    v, c = (a, b) if isinstance(a, View) else (b, a)
    found = half_lsb_quant(imp, i, c) if isinstance(c, Const) else None
    if found is None:
        raise AccelError(
            "unsupported Add: accel takes an Add only as the bias of MatMul/Gemm/Conv or as "
            "half an LSB before a FLOOR Quant"
        )
    j, t = found
    q = Quant(FixedType(t.width, t.frac + v.exp, t.signed), Rounding.RND, Overflow.SAT)
    out = imp.g.add("requantize", v.tensor, name=imp.aname(j), quant=q)
    imp.skip.add(j)
    imp.env[imp.nodes[j].output[0]] = View(out, v.index, out, v.exp)


def mul(imp: Any, i: int, node: Any) -> None:
    """Mul/Div by a power of two rescales a view; constants fold."""
    a, b = (imp.get(v) for v in node.input)
    div = node.op_type == "Div"
    if isinstance(a, Const) and isinstance(b, Const):
        value = np.divide(a.value, b.value) if div else np.multiply(a.value, b.value)
        imp.env[node.output[0]] = Const(np.asarray(value, dtype=np.float64))
        return
    v, c = (a, b) if isinstance(a, View) else (b, a)
    frac = pow2_frac(c.value) if isinstance(c, Const) and np.size(c.value) == 1 else None
    if (isinstance(b, View) and div) or frac is None:
        raise AccelError("only multiplying or dividing an activation by a power of two")
    imp.env[node.output[0]] = View(v.tensor, v.index, v.origin, v.exp + (frac if div else -frac))
