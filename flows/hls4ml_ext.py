"""accel's integer ops as hls4ml layers, through hls4ml's extension API (hls4ml is not patched).

hls4ml 1.3 has no bit-exact form of the integer ViT non-linearities (its
``Softmax`` and ``LayerNormalization`` read lookup tables, it has no GELU), no
activation x activation product that is not an Einsum, and no deformable
convolution. Each becomes an hls4ml layer class registered with
``hls4ml.model.layers.register_layer``, one config and one function-call template
registered with the Vivado backend (the Vitis backend applies Vivado's templates
too), and HLS C++ registered with ``backend.register_source`` for both backends,
so hls4ml's own ``write()`` copies it into ``firmware/nnet_utils/`` of every
project it writes:

============================  =====================  ===========================
accel op                      hls4ml layer class     C++ (``flows/hls4ml_cpp/``)
============================  =====================  ===========================
``softmax_int`` (last axis)   ``AccelShiftmax``      ``nnet_accel_vit.h``
``gelu_int``                  ``AccelShiftGelu``     ``nnet_accel_vit.h``
``layernorm_int``             ``AccelLayerNorm``     ``nnet_accel_vit.h``
``matmul`` (2-D)              ``AccelMatMul``        ``nnet_accel_vit.h``
``deform_conv2d`` square and  ``AccelDeformDW``      ``nnet_accel_deform.h``
bilinear (the depthwise part)
============================  =====================  ===========================

The C++ mirrors ``accel/intops.py`` and ``accel/deform.py`` operation for
operation on raw integers (ap_int of declared widths); the widths come from
the same formulas the reference and the IR use (``intops.softmax_widths``,
``intops.layernorm_widths``), computed here and written into each layer's config
struct. Each layer computes the accel op's exact output type (``exact_t``) and
assigns it to its result type, which is where a fused requantize (``AP_RND``,
``AP_SAT``) takes effect.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from accel import deform, intops
from accel.errors import AccelError
from accel.fixed import MAX_WIDTH, FixedType
from accel.ir.graph import Graph, Node
from accel.ir.ops import conv_padding

CPP_DIR = Path(__file__).resolve().parent / "hls4ml_cpp"
SOURCES = ("nnet_accel_common.h", "nnet_accel_vit.h", "nnet_accel_deform.h")
HEADERS = {"vit": "nnet_utils/nnet_accel_vit.h", "deform": "nnet_utils/nnet_accel_deform.h"}

# accel op -> (hls4ml layer class, config struct in C++, header, function)
KINDS = {
    "softmax_int": ("AccelShiftmax", "accel_shiftmax_config", "vit", "accel_shiftmax"),
    "gelu_int": ("AccelShiftGelu", "accel_shiftgelu_config", "vit", "accel_shiftgelu"),
    "layernorm_int": ("AccelLayerNorm", "accel_layernorm_config", "vit", "accel_layernorm"),
    "matmul": ("AccelMatMul", "accel_matmul_config", "vit", "accel_matmul"),
    "deform_conv2d": ("AccelDeformDW", "accel_deform_config", "deform", "accel_deform_dw"),
}
CLASS_NAMES = tuple(k[0] for k in KINDS.values())
# config constants declared unsigned / bool in the C++ base structs (the rest are int)
_UNSIGNED = {
    "n_rows", "n_cols", "n_in", "n_m", "n_k", "n_n",
    "in_height", "in_width", "n_chan", "out_height", "out_width", "n_off",
}  # fmt: skip
_BOOL = {"transpose_b", "bilinear"}


def sources_digest() -> str:
    """A digest of the C++ sources: part of the compile-cache key."""
    h = hashlib.sha256()
    for name in SOURCES:
        h.update(name.encode() + b"\0" + (CPP_DIR / name).read_bytes())
    return h.hexdigest()


# -- registration with hls4ml ----------------------------------------------------

_REGISTERED: dict[str, Any] = {}


def register() -> None:
    """Register the layer classes, templates and sources with hls4ml (once per process)."""
    if _REGISTERED:
        return
    import hls4ml
    from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate
    from hls4ml.model.attributes import Attribute, TypeAttribute, WeightAttribute
    from hls4ml.model.layers import Layer, register_layer

    class AccelLayer(Layer):
        """An accel op: output shape, weights and config constants come from the layer dict."""

        def initialize(self):
            self.add_output_variable(list(self.attributes["accel_shape"]))
            for w in self.attributes.get("accel_weights", ()):
                self.add_weights_variable(name=w, var_name=f"{w}{{index}}")

    classes = {}
    for cls_name in CLASS_NAMES:
        attrs: list[Any] = [Attribute("accel_consts", value_type=dict)]
        if cls_name == "AccelMatMul":
            attrs.append(TypeAttribute("accum"))
        for w in {"AccelLayerNorm": ("gamma", "beta"), "AccelDeformDW": ("weight", "bias")}.get(
            cls_name, ()
        ):
            attrs += [WeightAttribute(w), TypeAttribute(w)]
        classes[cls_name] = type(cls_name, (AccelLayer,), {"_expected_attributes": attrs})
        register_layer(cls_name, classes[cls_name])

    layer_classes = tuple(classes.values())

    class AccelConfigTemplate(LayerConfigTemplate):
        def __init__(self):
            super().__init__(layer_classes)

        def format(self, node):
            lines = [f"struct config{node.index} : nnet::{node.get_attr('accel_struct')} {{"]
            for k, v in node.get_attr("accel_consts").items():
                if k in _BOOL:
                    lines.append(f"    static const bool {k} = {str(bool(v)).lower()};")
                else:
                    kind = "unsigned" if k in _UNSIGNED else "int"
                    lines.append(f"    static const {kind} {k} = {int(v)};")
            lines.append(f"    typedef {node.get_attr('accel_exact')} exact_t;")
            for w in node.get_attr("accel_weights", ()):
                lines.append(f"    typedef {node.get_weights(w).type.name} {w}_t;")
            if node.get_attr("accum_t") is not None and node.class_name == "AccelMatMul":
                lines.append(f"    typedef {node.get_attr('accum_t').name} accum_t;")
            lines.append("};\n")
            return "\n".join(lines)

    class AccelFunctionTemplate(FunctionCallTemplate):
        def __init__(self):
            super().__init__(layer_classes, include_header=list(HEADERS.values()))

        def format(self, node):
            ins = [node.get_input_variable(i) for i in node.inputs]
            types = [v.type.name for v in ins] + [node.get_output_variable().type.name]
            args = [v.name for v in ins] + [node.get_output_variable().name]
            args += [node.get_weights(w).name for w in node.get_attr("accel_weights", ())]
            fn = node.get_attr("accel_function")
            return f"nnet::{fn}<{', '.join(types)}, config{node.index}>({', '.join(args)});"

    vivado = hls4ml.backends.get_backend("Vivado")
    vivado.register_template(AccelConfigTemplate)
    vivado.register_template(AccelFunctionTemplate)
    for be in ("Vivado", "Vitis"):
        backend = hls4ml.backends.get_backend(be)
        for name in SOURCES:
            backend.register_source(CPP_DIR / name)
    _REGISTERED.update(classes)


# -- lowering accel nodes to the layers' dicts ------------------------------------


def _floats(raw: np.ndarray, t: FixedType) -> np.ndarray:
    return np.ldexp(np.asarray(raw, dtype=np.float64), -t.frac)


def _raw_width(t: FixedType) -> int:
    """Bits of the signed integer that holds every raw value of ``t``."""
    return t.width + (0 if t.signed else 1)


def _layer(node: Node, name: str, inputs: list[str], shape: tuple, exact: FixedType, consts):
    cls, struct, _, fn = KINDS[node.op]
    return {
        "name": name,
        "class_name": cls,
        "inputs": inputs,
        "accel_shape": list(shape),
        "accel_struct": struct,
        "accel_function": fn,
        "accel_consts": consts,
        "accel_exact": exact.ap(),
    }


def lower(graph: Graph, node: Node, inputs: list[str], name: str) -> tuple[dict, dict[str, str]]:
    """The hls4ml layer dict and the precisions (except the result) of an extension op."""
    xs = [graph.tensors[t] for t in node.inputs]
    out = graph.tensors[node.outputs[0]]
    where = f"node {node.name}"
    if node.op == "softmax_int":
        (x,) = xs
        if node.attrs["axis"] not in (-1, len(x.shape) - 1):
            raise AccelError(
                f"{where}: softmax_int over axis {node.attrs['axis']} has no hls4ml form "
                "(the extension layer normalizes the last axis)"
            )
        t, o = x.type, node.attrs["out"]
        n = x.shape[-1]
        span = intops.softmax_span(t.min_int, t.max_int, t.frac)
        w = intops.softmax_widths(n, t.frac, span, o.frac)
        if w["product"] + 1 >= 62:
            raise AccelError(f"{where}: softmax_int's product needs {w['product']} bits")
        consts = {
            "n_rows": x.size // n,
            "n_cols": n,
            "x_width": _raw_width(t),
            "x_frac": t.frac,
            "span": span,
            "out_bits": o.frac,
            "out_w": o.width,
            "guard": intops.SOFTMAX_GUARD,
            "sum_w": w["sum"],
            "prod_w": w["product"],
        }
        return _layer(node, name, inputs, x.shape, out.type, consts), {}
    if node.op == "gelu_int":
        (x,) = xs
        consts = {
            "n_in": x.size,
            "x_width": _raw_width(x.type),
            "x_frac": x.type.frac,
            "sig_bits": node.attrs["sig_bits"],
        }
        return _layer(node, name, inputs, x.shape, out.type, consts), {}
    if node.op == "layernorm_int":
        return _layernorm(graph, node, inputs, name)
    if node.op == "matmul":
        a, b = xs
        if len(a.shape) != 2:
            raise AccelError(
                f"{where}: matmul with leading axes {a.shape[:-2]} has no hls4ml form here "
                "(the extension layer multiplies 2-D operands; split the heads)"
            )
        tb = node.attrs["transpose_b"]
        consts = {
            "n_m": a.shape[0],
            "n_k": a.shape[1],
            "n_n": b.shape[0] if tb else b.shape[1],
            "transpose_b": tb,
        }
        layer = _layer(node, name, inputs, out.shape, out.type, consts)
        return layer, {"accum": node.attrs["acc"].ap()}
    if node.op == "deform_conv2d":
        return _deform(graph, node, inputs, name)
    raise AccelError(f"{where}: op {node.op!r} has no hls4ml mapping")


def _layernorm(graph: Graph, node: Node, inputs: list[str], name: str):
    (x,) = (graph.tensors[t] for t in node.inputs)
    out = graph.tensors[node.outputs[0]]
    c = x.shape[-1]
    p, g, m = (node.attrs[k] for k in ("norm_frac", "sqrt_guard", "mean_frac"))
    gamma, beta = node.params["gamma"], node.params.get("beta")
    if beta is None:  # a zero beta of the output's scale: adds nothing
        beta_data, beta_type = np.zeros(c, np.int64), FixedType(2, p + gamma.type.frac)
    else:
        beta_data, beta_type = beta.data, beta.type
    w = intops.layernorm_widths(x.type, c, p, g, m)
    if c >= 1 << 12:
        raise AccelError(f"node {node.name}: layernorm_int over {c} >= 4096 values")
    y_w = _raw_width(x.type) + m + 2
    consts = {
        "n_rows": x.size // c,
        "n_in": c,
        "x_width": x.type.width,
        "raw_width": _raw_width(x.type),
        "mean_frac": m,
        "sqrt_guard": g,
        "norm_frac": p,
        "beta_shift": p + gamma.type.frac - beta_type.frac,
        "y_w": y_w,
        "sum_sq_w": w["sum_sq"],
        "sqrt_in_w": w["sqrt_in"],
        "div_w": w["dividend"],
        "out_w": out.type.width + 2,
    }
    if max(consts["y_w"] + consts["div_w"] + 1, consts["sqrt_in_w"]) > 2 * MAX_WIDTH:
        raise AccelError(f"node {node.name}: layernorm_int registers too wide for HLS")
    layer = _layer(node, name, inputs, x.shape, out.type, consts)
    layer["accel_weights"] = ["gamma", "beta"]
    layer["gamma_data"] = _floats(gamma.data, gamma.type)
    layer["beta_data"] = _floats(beta_data, beta_type)
    return layer, {"gamma": gamma.type.ap(), "beta": beta_type.ap()}


def offset_quant_type(node: Node) -> FixedType:
    """The type the offset conv rounds and saturates to (``accel.deform.offsets``)."""
    frac = node.attrs["offset_frac"]
    lo, hi = deform.offset_bounds(node.attrs["mode"], node.attrs["max_offset"], frac)
    return FixedType.covering(lo, hi, frac)


def _deform(graph: Graph, node: Node, inputs: list[str], name: str):
    """The depthwise part of a square or bilinear deform_conv2d; ``inputs`` = [x, offsets]."""
    x = graph.tensors[node.inputs[0]]
    out = graph.tensors[node.outputs[0]]
    mode, frac, r = node.attrs["mode"], node.attrs["offset_frac"], node.attrs["max_offset"]
    h, wd, c = x.shape
    s = node.attrs["stride"]
    oh, top, _ = conv_padding(h, 3, s, "same")
    ow, left, _ = conv_padding(wd, 3, s, "same")
    lo, hi = deform.offset_bounds(mode, r, frac)
    wt, b = node.params["weight"], node.params.get("bias")
    acc: FixedType = node.attrs["acc"]
    sample = deform.sample_type(x.type, mode, frac)
    if acc.frac != sample.frac + wt.type.frac:
        raise AccelError(f"node {node.name}: accumulator {acc} does not match the samples' scale")
    bias_data = np.zeros(c, np.int64) if b is None else b.data
    bias_type = FixedType(2, acc.frac) if b is None else b.type
    consts = {
        "in_height": h,
        "in_width": wd,
        "n_chan": c,
        "out_height": oh,
        "out_width": ow,
        "n_off": node.params["offset_weight"].data.shape[-1],
        "stride": s,
        "pad_top": top,
        "pad_left": left,
        "bilinear": mode == "bilinear",
        "off_frac": frac,
        "off_lo": lo,
        "off_hi": hi,
        "x_width": _raw_width(x.type),
        "sample_w": _raw_width(x.type) + 2 * frac + 1,
        "acc_width": acc.width,
        "bias_shift": acc.frac - bias_type.frac,
    }
    layer = _layer(node, name, inputs, out.shape, acc, consts)
    layer["accel_weights"] = ["weight", "bias"]
    layer["weight_data"] = _floats(wt.data.reshape(-1), wt.type)
    layer["bias_data"] = _floats(bias_data, bias_type)
    return layer, {"weight": wt.type.ap(), "bias": bias_type.ap()}
