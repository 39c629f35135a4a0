"""ONNX layout ops on constants (numpy) and on activations (index views, no accel node)."""

from __future__ import annotations

from typing import Any

import numpy as np

from accel.errors import AccelError
from accel.qonnx.values import Const

# Pure reorderings that commute with an elementwise Quant: the input walk looks through them.
LAYOUT_OPS = ("Identity", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze")
PAD_MODES = {"constant": "constant", "edge": "edge", "reflect": "reflect", "wrap": "wrap"}


def layout(imp: Any, i: int, node: Any) -> None:
    """Apply the op to a constant's values, or to a view's index array (batch axis of 1)."""
    x = imp.get(node.input[0])
    if node.op_type == "Identity":
        imp.env[node.output[0]] = x
        return
    is_view = not isinstance(x, Const)
    arr = x.index[None] if is_view else np.asarray(x.value)
    out = _apply(imp, node, imp.attrs(node), arr, is_view)
    if is_view:
        if out.ndim < 2 or out.shape[0] != 1:
            raise AccelError("the batch axis must stay first and keep its size")
        imp.env[node.output[0]] = x.with_index(out[0], imp.names[i])
    else:
        imp.env[node.output[0]] = Const(out, x.type)


def _ints(imp: Any, node: Any, k: int, attrs: dict, name: str) -> list[int] | None:
    """An int list from input ``k`` (newer opsets) or attribute ``name`` (older ones)."""
    if len(node.input) > k and node.input[k]:
        return [int(v) for v in np.ravel(imp.const(node.input[k], name).value)]
    return None if attrs.get(name) is None else [int(v) for v in attrs[name]]


def _axes(axes: list[int], rank: int, is_view: bool) -> list[int]:
    axes = sorted(a % rank for a in axes)
    if is_view and 0 in axes:
        raise AccelError("cannot act on the batch axis")
    return axes


def _apply(imp: Any, node: Any, a: dict, arr: np.ndarray, is_view: bool) -> np.ndarray:
    op = node.op_type
    if op == "Transpose":
        perm = [int(p) for p in a.get("perm", range(arr.ndim - 1, -1, -1))]
        if is_view and perm[0] != 0:
            raise AccelError(f"perm {perm} moves the batch axis")
        return np.transpose(arr, perm)
    if op == "Flatten":
        axis = int(a.get("axis", 1)) % max(arr.ndim, 1)
        if is_view and axis != 1:
            raise AccelError(f"Flatten axis={axis} would merge the batch axis (only axis=1)")
        return arr.reshape(int(np.prod(arr.shape[:axis])), -1)
    if op == "Squeeze":
        axes = _ints(imp, node, 1, a, "axes")
        if axes is None:
            axes = [k for k in range(1 if is_view else 0, arr.ndim) if arr.shape[k] == 1]
        return np.squeeze(arr, tuple(_axes(axes, arr.ndim, is_view)))
    if op == "Unsqueeze":
        axes = _ints(imp, node, 1, a, "axes") or []
        return np.expand_dims(arr, tuple(_axes(axes, arr.ndim + len(axes), is_view)))
    if op == "Reshape":
        return _reshape(imp, node, a, arr, is_view)
    if op == "Gather":
        idx = np.asarray(imp.const(node.input[1], "indices").value)
        if idx.dtype.kind not in "iu":
            raise AccelError("indices must be integers")
        axis = int(a.get("axis", 0)) % arr.ndim
        if is_view and axis == 0:
            raise AccelError("gathers along the batch axis")
        return np.take(arr, idx.astype(np.int64), axis=axis)
    if op == "Pad":
        return _pad(imp, node, a, arr, is_view)
    raise AssertionError(op)


def _reshape(imp: Any, node: Any, a: dict, arr: np.ndarray, is_view: bool) -> np.ndarray:
    shape = _ints(imp, node, 1, a, "shape")
    if shape is None:
        raise AccelError("Reshape needs a constant shape")
    keep = not int(a.get("allowzero", 0))
    target = [arr.shape[k] if s == 0 and keep and k < arr.ndim else s for k, s in enumerate(shape)]
    if is_view:
        size = arr.size
        if shape[0] not in (0, -1) and shape[0] != imp.batch:
            raise AccelError(f"shape {shape} changes the batch axis")
        feat = target[1:]
        if shape[0] == -1 and (-1 in feat or int(np.prod(feat)) != size):
            raise AccelError(f"shape {shape} changes the batch size")
        target = [1, *feat]
    return arr.reshape(target)


def _pad(imp: Any, node: Any, a: dict, arr: np.ndarray, is_view: bool) -> np.ndarray:
    pads = _ints(imp, node, 1, a, "pads")
    if pads is None or len(pads) != 2 * arr.ndim:
        raise AccelError(f"pads must list a begin and an end for each of {arr.ndim} axes")
    if len(node.input) > 3 and node.input[3]:
        raise AccelError("the axes input of Pad is unsupported")
    if any(p < 0 for p in pads):
        raise AccelError(f"negative pads {pads} (cropping) are unsupported")
    widths = list(zip(pads[: arr.ndim], pads[arr.ndim :], strict=True))
    if is_view and widths[0] != (0, 0):
        raise AccelError("pads the batch axis")
    value = 0.0
    if len(node.input) > 2 and node.input[2]:
        value = float(np.ravel(imp.const(node.input[2], "constant_value").value)[0])
    elif "value" in a:
        value = float(a["value"])
    mode = str(a.get("mode", "constant"))
    if mode not in PAD_MODES:
        raise AccelError(f"pad mode {mode!r} is unsupported")
    if mode != "constant":
        return np.pad(arr, widths, mode=PAD_MODES[mode])
    if is_view and value != 0:
        raise AccelError(f"pads activations with {value:g}; only zero padding is supported")
    return np.pad(arr, widths, constant_values=-1 if is_view else value)
