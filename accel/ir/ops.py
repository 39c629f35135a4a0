"""Op definitions: attributes, validation and shape/type inference.

Each op is a small class registered by name. What an op *computes* lives with
each consumer (the numpy reference, the RTL lowering, the hls4ml writer), so a
new model family adds ops here and kernels there, without touching the Graph.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from accel import intops, nm
from accel.errors import AccelError
from accel.fixed import MAX_WIDTH, FixedType, Quant
from accel.ir.graph import Node, Param, Tensor

_OPS: dict[str, type[Op]] = {}


def register(cls: type[Op]) -> type[Op]:
    _OPS[cls.name] = cls
    return cls


def get_op(name: str) -> type[Op]:
    try:
        return _OPS[name]
    except KeyError:
        raise AccelError(f"unsupported op {name!r} (known: {', '.join(sorted(_OPS))})") from None


class Op:
    name: ClassVar[str]
    n_inputs: ClassVar[int] = 1

    @classmethod
    def infer(cls, node: Node, inputs: list[Tensor]) -> tuple[tuple[int, ...], FixedType]:
        if len(inputs) != cls.n_inputs:
            raise AccelError(f"node {node.name}: {cls.name} takes {cls.n_inputs} input(s)")
        return cls._infer(node, inputs)

    @classmethod
    def _infer(cls, node: Node, inputs: list[Tensor]) -> tuple[tuple[int, ...], FixedType]:
        raise NotImplementedError


def accumulator_type(
    x: FixedType, w: np.ndarray, w_type: FixedType, fan_in: int, bias: Param | None
) -> FixedType:
    """Derive an accumulator that no input of the declared types can overflow.

    The bound uses the operand *types* (fan-in x extreme products + bias range),
    not the trained weight values, so retraining never invalidates the width.
    """
    corners = [a * b for a in (x.min_int, x.max_int) for b in (w_type.min_int, w_type.max_int)]
    lo, hi = fan_in * min(corners), fan_in * max(corners)
    frac = x.frac + w_type.frac
    if bias is not None:
        shift = frac - bias.type.frac
        lo += bias.type.min_int << shift
        hi += bias.type.max_int << shift
    acc = FixedType.covering(lo, hi, frac)
    if acc.width > MAX_WIDTH:
        raise AccelError(f"accumulator needs {acc.width} bits, more than {MAX_WIDTH}")
    return acc


def derive_acc(
    node: Node, key: str, x: FixedType, w: Param, bias: Param | None, fan_in: int
) -> FixedType:
    """The accumulator ``node.attrs[key]``: derived from the types, or checked if given."""
    frac = x.frac + w.type.frac
    if bias is not None and bias.type.frac > frac:
        raise AccelError(
            f"node {node.name}: bias has {bias.type.frac} fraction bits, more than the "
            f"accumulator's {frac}"
        )
    given = node.attrs.get(key)
    if given is None:
        return accumulator_type(x, w.data, w.type, fan_in, bias)
    acc = given if isinstance(given, FixedType) else FixedType.from_json(given)
    if acc.frac != frac:
        raise AccelError(f"node {node.name}: {key} must have {frac} fraction bits, got {acc.frac}")
    return acc


class _DotOp(Op):
    """Shared typing of ops that multiply-accumulate against a weight Param."""

    @classmethod
    def _typed_acc(cls, node: Node, x: Tensor, fan_in: int) -> FixedType:
        w = node.params.get("weight")
        if w is None:
            raise AccelError(f"node {node.name}: {cls.name} needs a 'weight' parameter")
        acc = derive_acc(node, "acc", x.type, w, node.params.get("bias"), fan_in)
        node.attrs["acc"] = acc
        cls._check_sparsity(node, w.data.reshape(-1, w.data.shape[-1]))
        return acc

    @staticmethod
    def _check_sparsity(node: Node, w2: np.ndarray) -> None:
        """Declared N:M patterns: ``nm`` groups the reduction axis (the forward pass's
        mask on W), ``nm_t`` the output axis (the backward pass's mask on W^T)."""
        for key, axis in (("nm", 0), ("nm_t", 1)):
            if node.attrs.get(key) is None:
                continue
            pattern = nm.NM.parse(node.attrs[key])  # parsed once, kept typed
            nm.check(w2, pattern, axis, f"node {node.name} ({key} {pattern})")
            node.attrs[key] = pattern


@register
class Dense(_DotOp):
    """y[..., o] = sum_k x[..., k] * W[k, o] + b[o], accumulated exactly in ``acc``.

    The input is a vector (K,) or has leading axes (..., K), e.g. the (T, C)
    tokens of a ViT: the same weights apply to every leading position.
    """

    name = "dense"

    @classmethod
    def _infer(cls, node, inputs):
        (x,) = inputs
        w = node.params.get("weight")
        if w is None or w.data.ndim != 2:
            raise AccelError(f"node {node.name}: dense weight must be 2-D (in, out)")
        k = w.data.shape[0]
        if not x.shape or x.shape[-1] != k:
            raise AccelError(
                f"node {node.name}: dense expects input shape ({k},) or (..., {k}), got {x.shape}"
            )
        n_out = w.data.shape[1]
        b = node.params.get("bias")
        if b is not None and b.data.shape != (n_out,):
            raise AccelError(f"node {node.name}: bias shape {b.data.shape} != ({n_out},)")
        return (*x.shape[:-1], n_out), cls._typed_acc(node, x, k)


def conv_padding(size: int, k: int, stride: int, padding: str) -> tuple[int, int, int]:
    """(output size, pad before, pad after) with TensorFlow's 'same'/'valid' rules."""
    if padding == "valid":
        return (size - k) // stride + 1, 0, 0
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        return out, total // 2, total - total // 2
    raise AccelError(f"padding must be 'same' or 'valid', got {padding!r}")


@register
class Conv2D(_DotOp):
    """NHWC 2-D convolution, weights (KH, KW, Cin, Cout), exact accumulation."""

    name = "conv2d"

    @classmethod
    def _infer(cls, node, inputs):
        (x,) = inputs
        w = node.params.get("weight")
        if w is None or w.data.ndim != 4:
            raise AccelError(f"node {node.name}: conv2d weight must be 4-D (KH, KW, Cin, Cout)")
        if len(x.shape) != 3:
            raise AccelError(f"node {node.name}: conv2d expects an (H, W, C) input, got {x.shape}")
        kh, kw, cin, cout = w.data.shape
        if x.shape[2] != cin:
            raise AccelError(f"node {node.name}: input has {x.shape[2]} channels, weight {cin}")
        stride = node.attrs.setdefault("stride", 1)
        padding = node.attrs.setdefault("padding", "valid")
        oh, _, _ = conv_padding(x.shape[0], kh, stride, padding)
        ow, _, _ = conv_padding(x.shape[1], kw, stride, padding)
        if oh < 1 or ow < 1:
            raise AccelError(f"node {node.name}: kernel larger than the input")
        b = node.params.get("bias")
        if b is not None and b.data.shape != (cout,):
            raise AccelError(f"node {node.name}: bias shape {b.data.shape} != ({cout},)")
        return (oh, ow, cout), cls._typed_acc(node, x, kh * kw * cin)


@register
class ReLU(Op):
    name = "relu"

    @classmethod
    def _infer(cls, node, inputs):
        (x,) = inputs
        return x.shape, x.type


@register
class Requantize(Op):
    """Convert to ``quant`` with its named rounding and overflow modes."""

    name = "requantize"

    @classmethod
    def _infer(cls, node, inputs):
        (x,) = inputs
        q = node.attrs.get("quant")
        if q is None:
            raise AccelError(f"node {node.name}: requantize needs a 'quant' attribute")
        q = q if isinstance(q, Quant) else Quant.from_json(q)
        node.attrs["quant"] = q
        return x.shape, q.type


@register
class Reshape(Op):
    """Reinterpret the (C-order) element sequence with a new shape."""

    name = "reshape"

    @classmethod
    def _infer(cls, node, inputs):
        (x,) = inputs
        shape = tuple(int(s) for s in node.attrs.get("shape", (x.size,)))
        if int(np.prod(shape)) != x.size:
            raise AccelError(f"node {node.name}: cannot reshape {x.shape} to {shape}")
        node.attrs["shape"] = list(shape)
        return shape, x.type


@register
class Gather(Op):
    """out.flat[i] = x.flat[index[i]], or 0 where index[i] == -1 (masked positions)."""

    name = "gather"

    @classmethod
    def _infer(cls, node, inputs):
        (x,) = inputs
        index = np.asarray(node.attrs.get("index"), dtype=np.int64)
        shape = tuple(int(s) for s in node.attrs.get("shape", index.shape))
        if index.size != int(np.prod(shape)):
            raise AccelError(f"node {node.name}: index has {index.size} entries for {shape}")
        if index.size and (index.min() < -1 or index.max() >= x.size):
            raise AccelError(f"node {node.name}: gather index out of range for {x.size} elements")
        node.attrs["index"] = index.ravel().tolist()
        node.attrs["shape"] = list(shape)
        return shape, x.type


@register
class DeformConv2D(Op):
    """Depthwise deformable 3x3 convolution (``accel.deform``), exact accumulation.

    Params ``weight`` (3, 3, C), optional ``bias`` (C,); with offsets also
    ``offset_weight`` (k, k, C, K) and optional ``offset_bias`` (K,), K being 1
    (square) or 18 (bilinear), k 3 or 1 (a 1x1 offset conv costs a ninth).
    Attrs ``mode``, ``stride``, ``max_offset`` (R) and ``offset_frac`` (F); the
    IR derives ``acc`` and ``offset_acc``.
    """

    name = "deform_conv2d"
    OFFSETS: ClassVar[dict[str, int]] = {"regular": 0, "square": 1, "bilinear": 18}

    @classmethod
    def _infer(cls, node, inputs):
        from accel.deform import sample_type

        (x,) = inputs
        where = f"node {node.name}"
        mode = node.attrs.setdefault("mode", "regular")
        if mode not in cls.OFFSETS:
            raise AccelError(f"{where}: mode must be one of {', '.join(cls.OFFSETS)}, not {mode!r}")
        stride = node.attrs.setdefault("stride", 1)
        if stride not in (1, 2):
            raise AccelError(f"{where}: stride must be 1 or 2, got {stride}")
        r = node.attrs.setdefault("max_offset", 0 if mode == "regular" else 1)
        frac = node.attrs.setdefault("offset_frac", 0)
        if not isinstance(r, int) or r < 0 or r > 15:
            raise AccelError(f"{where}: max_offset must be an integer in 0..15, got {r!r}")
        if not isinstance(frac, int) or frac < 0 or frac > 8 or (mode == "square" and frac):
            raise AccelError(f"{where}: offset_frac must be 0..8 (0 for square), got {frac!r}")
        if len(x.shape) != 3:
            raise AccelError(f"{where}: deform_conv2d expects an (H, W, C) input, got {x.shape}")
        c = x.shape[2]
        w = node.params.get("weight")
        if w is None or w.data.shape != (3, 3, c):
            raise AccelError(f"{where}: weight must be (3, 3, {c}) (depthwise 3x3)")
        b = node.params.get("bias")
        if b is not None and b.data.shape != (c,):
            raise AccelError(f"{where}: bias shape {b.data.shape} != ({c},)")
        k = cls.OFFSETS[mode]
        ow, ob = node.params.get("offset_weight"), node.params.get("offset_bias")
        if k == 0 and (ow is not None or ob is not None):
            raise AccelError(f"{where}: a regular depthwise conv takes no offset parameters")
        if k:
            ks = None if ow is None else ow.data.shape[0]
            if ow is None or ks not in (1, 3) or ow.data.shape != (ks, ks, c, k):
                shapes = f"(3, 3, {c}, {k}) or (1, 1, {c}, {k})"
                raise AccelError(f"{where}: {mode} offsets need offset_weight {shapes}")
            if ob is not None and ob.data.shape != (k,):
                raise AccelError(f"{where}: offset_bias shape {ob.data.shape} != ({k},)")
            node.attrs["offset_acc"] = derive_acc(node, "offset_acc", x.type, ow, ob, ks * ks * c)
        s = sample_type(x.type, mode, frac)
        node.attrs["acc"] = derive_acc(node, "acc", s, w, b, 9)
        oh, _, _ = conv_padding(x.shape[0], 3, stride, "same")
        ow_, _, _ = conv_padding(x.shape[1], 3, stride, "same")
        return (oh, ow_, c), node.attrs["acc"]


# -- integer ViT blocks (accel/intops.py holds the arithmetic) --------------------


def _int_attr(node: Node, key: str, default: int, lo: int, hi: int) -> int:
    v = node.attrs.setdefault(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise AccelError(f"node {node.name}: {key} must be an integer in {lo}..{hi}, got {v!r}")
    return v


def _type_attr(node: Node, key: str, default: FixedType) -> FixedType:
    v = node.attrs.get(key, default)
    try:
        t = v if isinstance(v, FixedType) else FixedType.from_json(v)
    except (KeyError, TypeError, ValueError):
        raise AccelError(f"node {node.name}: {key} must be a fixed-point type, got {v!r}") from None
    node.attrs[key] = t
    return t


def _frac_in(node: Node, x: Tensor, hi: int = 24) -> None:
    if not 0 <= x.type.frac <= hi:
        raise AccelError(
            f"node {node.name}: {node.op} needs an input with 0..{hi} fraction bits, got {x.type}"
        )


@register
class SoftmaxInt(Op):
    """I-ViT Shiftmax along ``axis`` (``accel.intops.shiftmax``); output type ``out``.

    ``out`` is unsigned with 1..30 fraction bits and at most one integer bit
    (default ``ap_ufixed<8,0>``: probabilities of 1.0 saturate to 255/256).
    """

    name = "softmax_int"

    @classmethod
    def _infer(cls, node, inputs):
        (x,) = inputs
        where = f"node {node.name}"
        _frac_in(node, x)
        if not x.shape:
            raise AccelError(f"{where}: softmax_int needs an input with at least one axis")
        axis = node.attrs.setdefault("axis", -1)
        if (
            isinstance(axis, bool)
            or not isinstance(axis, int)
            or not -len(x.shape) <= axis < len(x.shape)
        ):
            raise AccelError(f"{where}: axis {axis!r} is out of range for shape {x.shape}")
        out = _type_attr(node, "out", FixedType(8, 8, signed=False))
        if out.signed or not 1 <= out.frac <= 30 or out.width > out.frac + 1:
            raise AccelError(
                f"{where}: out must be unsigned with 1..30 fraction bits and at most one "
                f"integer bit, got {out}"
            )
        n = x.shape[axis]
        span = intops.softmax_span(x.type.min_int, x.type.max_int, x.type.frac)
        w = intops.softmax_widths(n, x.type.frac, span, out.frac)
        if max(w.values()) > MAX_WIDTH:
            raise AccelError(
                f"{where}: softmax_int over {n} values of {x.type} needs a {max(w.values())}-bit "
                f"sum (exponent span {span}); requantize the input to fewer integer bits"
            )
        return x.shape, out


@register
class GeluInt(Op):
    """I-ViT ShiftGELU ``x * sigmoid(1.702 x)`` (``accel.intops.shiftgelu``), exact product.

    Attr ``sig_bits`` (default 8): the sigmoid's fraction bits; the output has
    ``x.frac + sig_bits`` fraction bits.
    """

    name = "gelu_int"

    @classmethod
    def _infer(cls, node, inputs):
        (x,) = inputs
        _frac_in(node, x)
        g = _int_attr(node, "sig_bits", 8, 1, 24)
        out = intops.gelu_out_type(x.type, g)
        if out.width > MAX_WIDTH:
            raise AccelError(f"node {node.name}: gelu_int output needs {out.width} bits")
        return x.shape, out


@register
class LayerNormInt(Op):
    """I-ViT I-LayerNorm over the last axis (``accel.intops.layernorm``), exact affine.

    Params ``gamma`` (C,) and optional ``beta`` (C,); attrs ``norm_frac`` (the
    normalized value's fraction bits, default 8), ``sqrt_guard`` (guard bits
    of the square root, default 4) and ``mean_frac`` (extra fraction bits of
    the mean, default 4). Output: ``norm_frac + gamma.frac`` fraction bits.
    """

    name = "layernorm_int"

    @classmethod
    def _infer(cls, node, inputs):
        (x,) = inputs
        where = f"node {node.name}"
        if not x.shape:
            raise AccelError(f"{where}: layernorm_int needs an input with at least one axis")
        c = x.shape[-1]
        p = _int_attr(node, "norm_frac", 8, 0, 24)
        g = _int_attr(node, "sqrt_guard", 4, 0, 16)
        m = _int_attr(node, "mean_frac", 4, 0, 16)
        gamma, beta = node.params.get("gamma"), node.params.get("beta")
        if gamma is None or gamma.data.shape != (c,):
            raise AccelError(f"{where}: layernorm_int needs a 'gamma' parameter of shape ({c},)")
        if beta is not None and beta.data.shape != (c,):
            raise AccelError(f"{where}: beta shape {beta.data.shape} != ({c},)")
        if beta is not None and beta.type.frac > p + gamma.type.frac:
            raise AccelError(
                f"{where}: beta has {beta.type.frac} fraction bits, more than the output's "
                f"{p + gamma.type.frac}"
            )
        w = intops.layernorm_widths(x.type, c, p, g, m)
        if max(w.values()) > MAX_WIDTH:
            raise AccelError(
                f"{where}: layernorm_int over {c} values of {x.type} needs {max(w.values())}-bit "
                "registers; lower mean_frac, sqrt_guard or norm_frac, or narrow the input"
            )
        out = intops.layernorm_out_type(c, p, gamma.type, None if beta is None else beta.type)
        if out.width > MAX_WIDTH:
            raise AccelError(f"{where}: layernorm_int output needs {out.width} bits")
        return x.shape, out


@register
class MatMul(Op):
    """Activation x activation product ``a @ b`` (or ``a @ b^T`` with ``transpose_b``).

    ``a`` is (..., M, K), ``b`` (..., K, N) or (..., N, K), the same leading
    axes (attention heads); exact accumulation in ``acc``, derived from the
    types as for dense layers (or checked if given).
    """

    name = "matmul"
    n_inputs = 2

    @classmethod
    def _infer(cls, node, inputs):
        a, b = inputs
        where = f"node {node.name}"
        tb = node.attrs.setdefault("transpose_b", False)
        if not isinstance(tb, bool):
            raise AccelError(f"{where}: transpose_b must be true or false, got {tb!r}")
        if len(a.shape) < 2 or len(b.shape) != len(a.shape) or a.shape[:-2] != b.shape[:-2]:
            raise AccelError(
                f"{where}: matmul needs (..., M, K) and (..., K, N) inputs with the same leading "
                f"axes, got {a.shape} and {b.shape}"
            )
        k_b, n = (b.shape[-1], b.shape[-2]) if tb else b.shape[-2:]
        if a.shape[-1] != k_b:
            raise AccelError(
                f"{where}: inner sizes differ: {a.shape[-1]} (a {a.shape}) and {k_b} "
                f"(b {b.shape}{', transposed' if tb else ''})"
            )
        frac = a.type.frac + b.type.frac
        given = node.attrs.get("acc")
        if given is None:
            acc = accumulator_type(a.type, None, b.type, a.shape[-1], None)
        else:
            acc = _type_attr(node, "acc", None)
            if acc.frac != frac:
                raise AccelError(f"{where}: acc must have {frac} fraction bits, got {acc.frac}")
        node.attrs["acc"] = acc
        return (*a.shape[:-1], n), acc


@register
class Add(Op):
    """Residual add of two tensors of one shape, exact (aligned to the finer scale)."""

    name = "add"
    n_inputs = 2

    @classmethod
    def _infer(cls, node, inputs):
        a, b = inputs
        if a.shape != b.shape:
            raise AccelError(
                f"node {node.name}: add needs equal shapes, got {a.shape} and {b.shape}"
            )
        out = intops.add_type(a.type, b.type)
        if out.width > MAX_WIDTH:
            raise AccelError(f"node {node.name}: add output needs {out.width} bits")
        return a.shape, out


# -- ViT plumbing: patches, constants, concatenation -------------------------------


@register
class Patchify(Op):
    """Split an (H, W, C) image into non-overlapping P x P patches: (H/P * W/P, P*P*C).

    Tokens are row-major over the patch grid; within a patch the values are in
    (py, px, c) order. A pure rearrangement (attr ``patch`` = P), type unchanged.
    """

    name = "patchify"

    @classmethod
    def _infer(cls, node, inputs):
        (x,) = inputs
        where = f"node {node.name}"
        if len(x.shape) != 3:
            raise AccelError(f"{where}: patchify expects an (H, W, C) input, got {x.shape}")
        p = _int_attr(node, "patch", 4, 1, 1 << 16)
        h, w, c = x.shape
        if h % p or w % p:
            raise AccelError(f"{where}: image {h}x{w} is not a whole number of {p}x{p} patches")
        return ((h // p) * (w // p), p * p * c), x.type


@register
class AddConst(Op):
    """``x + value`` with the constant Param ``value`` of x's shape (e.g. a positional
    embedding); exact, aligned to the finer scale like ``add``."""

    name = "add_const"

    @classmethod
    def _infer(cls, node, inputs):
        (x,) = inputs
        v = node.params.get("value")
        if v is None or v.data.shape != x.shape:
            got = None if v is None else v.data.shape
            raise AccelError(
                f"node {node.name}: add_const needs a 'value' parameter of shape {x.shape}, "
                f"got {got}"
            )
        out = intops.add_type(x.type, v.type)
        if out.width > MAX_WIDTH:
            raise AccelError(f"node {node.name}: add_const output needs {out.width} bits")
        return x.shape, out


@register
class Concat(Op):
    """Concatenate any number of inputs of one type along the last axis."""

    name = "concat"
    n_inputs = -1  # any number, at least one

    @classmethod
    def infer(cls, node, inputs):
        where = f"node {node.name}"
        if not inputs:
            raise AccelError(f"{where}: concat needs at least one input")
        first = inputs[0]
        if not first.shape:
            raise AccelError(f"{where}: concat needs inputs with at least one axis")
        for t in inputs[1:]:
            if t.type != first.type:
                raise AccelError(
                    f"{where}: concat needs inputs of one type, got {first.type} ({first.name}) "
                    f"and {t.type} ({t.name})"
                )
            if t.shape[:-1] != first.shape[:-1] or len(t.shape) != len(first.shape):
                raise AccelError(
                    f"{where}: concat needs equal leading axes, got {first.shape} and {t.shape}"
                )
        return (*first.shape[:-1], sum(t.shape[-1] for t in inputs)), first.type
