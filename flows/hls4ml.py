"""hls4ml flow: an accel Graph as a real hls4ml project whose C simulation is bit-exact.

The Graph is handed to hls4ml as its own layer list (the dicts its Keras/ONNX
parsers produce) and turned into a ``ModelGraph`` with
``ModelGraph.from_layer_list``, so no Keras or torch model is involved and no
precision is left to hls4ml's defaults or its ``auto`` inference: the input,
every weight, bias, accumulator and result type is named per layer, and each
requantize carries its rounding and overflow mode (``AP_RND``, ``AP_SAT``).
After conversion every one of those types is read back from the ModelGraph and
compared with the Graph, so a silent change by an hls4ml pass is an error, not
a wrong number.

Mapping (io_parallel):

- ``conv2d`` -> ``Conv2D`` with TensorFlow's explicit pads (8 -> 4 with stride
  2 and a 3x3 kernel pads 0 top/left and 1 bottom/right), weights (KH, KW, Cin,
  Cout) as hls4ml's channels-last kernel; ``dense`` -> ``Dense``. Result type
  = accumulator type = the Graph's derived accumulator, so nothing rounds or
  wraps inside the layer.
- ``relu`` whose only consumer is a ``requantize`` -> one ``Activation('relu')``
  whose result type is the requantize's ``ap_[u]fixed<W,I,AP_RND,AP_SAT>``:
  the assignment in ``nnet::relu`` is the requantization (what hls4ml does
  for qkeras' ``quantized_relu``). Any other ``requantize`` -> a ``linear``
  activation with that result type; a lone ``relu`` keeps its input type.
- ``reshape`` -> ``Reshape`` (row-major, as in the Graph).
- Integer ViT and deformable ops: ``softmax_int``, ``gelu_int``, ``layernorm_int``,
  ``matmul`` and the depthwise part of a square or bilinear ``deform_conv2d`` -> accel's
  own layers, registered through hls4ml's extension API (:mod:`accel.flows.hls4ml_ext`);
  its offset conv -> ``Conv2D`` whose result type rounds and saturates the offsets; a
  regular ``deform_conv2d`` -> ``DepthwiseConv2D``. ``add`` -> ``Merge`` add,
  ``concat`` -> ``Concatenate`` (chained), ``add_const`` -> ``BatchNormalization`` with
  scale 1 per element, ``patchify`` -> ``Reshape``, ``Transpose``, ``Reshape``; a dense
  layer over tokens is hls4ml's pointwise ``Conv1D``. A requantize that only reads an
  exactly computed result (dot products, adds, the extension layers) is that layer's
  result type (``accel.ir.passes.epilogue``).
- ``gather`` of the graph input (the autoencoder's 48 charges -> 8x8x1 grid
  with masked zeros) has no hls4ml layer. The project's input is the gathered
  tensor; :func:`predict` applies the gather in numpy before calling the C
  simulation, and the project's README and ``accel_manifest.json`` give the
  index. Since a gather only moves values (and inserts exact zeros), quantizing
  before or after it is the same, so the project input keeps the graph's input
  rounding/overflow. A gather anywhere else is refused.

Why every type is spelled out (measured on 10,005 autoencoder inputs): with
hls4ml's defaults (``ap_fixed<16,6>`` everywhere) 8,489 samples differ from the
reference; leaving the modes off (TRN/WRAP) 8,496; with ``auto`` accumulators
(safe here, only wider: ``ap_fixed<21,11>``, ``ap_fixed<30,16>``) and the
``AP_RND_CONV`` hls4ml gives quantizers, 5,449, because ties round to even
instead of up. Inputs and outputs cross hls4ml's ``double`` bridge, exact up to
53 bits.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.ir.graph import Graph, Node
from accel.ir.ops import conv_padding
from accel.ir.passes import epilogue
from accel.outputs import staged_dir

BACKENDS = ("Vitis", "Vivado")
STRATEGIES = ("Latency", "Resource")
# Bump when the lowering changes: it is part of the compile-cache key.
FORMAT = "accel-hls4ml/2"
# hls4ml's Python bridge and its weight .txt files go through double.
DOUBLE_BITS = 53
MANIFEST = "accel_manifest.json"


def cache_root() -> Path:
    """Where compiled C simulations are kept: ``$ACCEL_CACHE`` or ``~/.cache/accel``."""
    return Path(os.environ.get("ACCEL_CACHE", Path.home() / ".cache" / "accel"))


# -- lowering ------------------------------------------------------------------


@dataclass
class _Lowered:
    """The Graph as hls4ml layer dicts plus what the Python side must do around them."""

    layers: list[dict[str, Any]]
    precisions: dict[str, dict[str, str]]  # hls4ml layer -> {var: ap type}
    host_gather: np.ndarray | None  # index of the graph-input gather done in numpy
    input_tensor: str  # the Graph tensor that is the project's input
    input_quant: Quant
    output_tensor: str
    nodes: list[dict[str, Any]] = field(default_factory=list)  # for the manifest


def _cname(name: str, taken: set[str]) -> str:
    """A unique lower-case C identifier (hls4ml keys types by lower-cased layer names)."""
    base = re.sub(r"\W", "_", name).lower() or "layer"
    if base[0].isdigit() or base == "input":
        base = f"l_{base}"
    out, i = base, 1
    while out in taken:
        out, i = f"{base}_{i}", i + 1
    taken.add(out)
    return out


def _floats(raw: np.ndarray, t: FixedType) -> np.ndarray:
    return np.ldexp(np.asarray(raw, dtype=np.float64), -t.frac)


def _check_double(what: str, t: FixedType) -> None:
    if t.width > DOUBLE_BITS:
        raise AccelError(
            f"{what} is {t}, wider than the {DOUBLE_BITS} bits hls4ml's double bridge carries"
        )


def _dot_layer(graph: Graph, node: Node, prev: str, name: str) -> tuple[dict, dict[str, str]]:
    x = graph.tensors[node.inputs[0]]
    w, b = node.params["weight"], node.params.get("bias")
    acc: FixedType = node.attrs["acc"]
    for k, p in node.params.items():
        _check_double(f"node {node.name}: {k}", p.type)
    layer: dict[str, Any] = {"name": name, "inputs": [prev], "weight_data": _floats(w.data, w.type)}
    prec = {"weight": w.type.ap(), "accum": acc.ap(), "result": acc.ap()}
    if b is not None:
        layer["bias_data"] = _floats(b.data, b.type)
        prec["bias"] = b.type.ap()
    if node.op == "dense":
        layer.update(class_name="Dense", n_in=w.data.shape[0], n_out=w.data.shape[1])
        return layer, prec
    kh, kw, cin, cout = w.data.shape
    h, wd, _ = x.shape
    s, pad = node.attrs["stride"], node.attrs["padding"]
    oh, top, bottom = conv_padding(h, kh, s, pad)
    ow, left, right = conv_padding(wd, kw, s, pad)
    layer.update(
        class_name="Conv2D",
        data_format="channels_last",
        in_height=h,
        in_width=wd,
        n_chan=cin,
        n_filt=cout,
        filt_height=kh,
        filt_width=kw,
        stride_height=s,
        stride_width=s,
        out_height=oh,
        out_width=ow,
        pad_top=top,
        pad_bottom=bottom,
        pad_left=left,
        pad_right=right,
    )
    return layer, prec


def _activation(name: str, kind: str, prev: str) -> dict:
    """An hls4ml Activation layer; its result type (set by the caller) does the requantize."""
    return {"name": name, "class_name": "Activation", "activation": kind, "inputs": [prev]}


# Ops whose hls4ml layer computes its exact result and assigns it to the result type: a
# requantize that is the only consumer of that result is folded into it (the assignment
# to ap_[u]fixed<W,I,AP_RND,AP_SAT> is the requantization, as for a ReLU).
FUSES_REQUANTIZE = {
    "dense", "conv2d", "add", "add_const", "matmul", "softmax_int", "gelu_int",
    "layernorm_int", "deform_conv2d",
}  # fmt: skip
# Ops lowered to accel's extension layers (flows/hls4ml_ext.py); the rest are native.
EXTENSION_OPS = ("softmax_int", "gelu_int", "layernorm_int", "matmul")


def _same_pads(h: int, w: int, k: int, s: int) -> dict[str, int]:
    oh, top, bottom = conv_padding(h, k, s, "same")
    ow, left, right = conv_padding(w, k, s, "same")
    return {
        "out_height": oh,
        "out_width": ow,
        "pad_top": top,
        "pad_bottom": bottom,
        "pad_left": left,
        "pad_right": right,
    }


def _conv_dict(name: str, prev: str, x_shape: tuple, w: np.ndarray, s: int) -> dict[str, Any]:
    h, wd, cin = x_shape
    kh, kw = w.shape[:2]
    return {
        "name": name,
        "class_name": "Conv2D",
        "inputs": [prev],
        "data_format": "channels_last",
        "in_height": h,
        "in_width": wd,
        "n_chan": cin,
        "filt_height": kh,
        "filt_width": kw,
        "stride_height": s,
        "stride_width": s,
        **_same_pads(h, wd, kh, s),
    }


def _deform_layers(
    graph: Graph, node: Node, prev: str, name: str, taken: set[str]
) -> list[tuple[dict, dict[str, str], str]]:
    """deform_conv2d: regular -> a native DepthwiseConv2D; square and bilinear -> a native
    Conv2D for the offsets (rounded half up and saturated by its result type) and the
    AccelDeformDW extension layer for the sampling and the depthwise sum."""
    from accel.flows import hls4ml_ext

    x = graph.tensors[node.inputs[0]]
    w, b = node.params["weight"], node.params.get("bias")
    acc: FixedType = node.attrs["acc"]
    s = node.attrs["stride"]
    for k, p in node.params.items():
        _check_double(f"node {node.name}: {k}", p.type)
    if node.attrs["mode"] == "regular":
        layer = _conv_dict(name, prev, x.shape, w.data, s)
        c = x.shape[-1]
        layer.update(
            class_name="DepthwiseConv2D",
            n_filt=c,
            depth_multiplier=1,
            depthwise_data=_floats(w.data.reshape(3, 3, c, 1), w.type),
        )
        prec = {"weight": w.type.ap(), "accum": acc.ap(), "result": acc.ap()}
        if b is not None:
            layer["bias_data"] = _floats(b.data, b.type)
            prec["bias"] = b.type.ap()
        return [(layer, prec, "DepthwiseConv2D")]
    ow, ob = node.params["offset_weight"], node.params.get("offset_bias")
    off_name = _cname(f"{node.name}_offsets", taken)
    off = _conv_dict(off_name, prev, x.shape, ow.data, s)
    off.update(n_filt=ow.data.shape[-1], weight_data=_floats(ow.data, ow.type))
    oq = Quant(hls4ml_ext.offset_quant_type(node), Rounding.RND, Overflow.SAT)
    off_prec = {"weight": ow.type.ap(), "accum": node.attrs["offset_acc"].ap(), "result": oq.ap()}
    if ob is not None:
        off["bias_data"] = _floats(ob.data, ob.type)
        off_prec["bias"] = ob.type.ap()
    layer, prec = hls4ml_ext.lower(graph, node, [prev, off_name], name)
    return [(off, off_prec, "Conv2D"), (layer, {**prec, "result": acc.ap()}, layer["class_name"])]


def _lower(graph: Graph) -> _Lowered:
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise AccelError(f"graph {graph.name}: the hls4ml flow needs one input and one output")
    src = graph.inputs[0]
    quant = graph.input_quant[src]
    nodes = list(graph.nodes)
    host_gather = None
    first = nodes[0] if nodes else None
    if (
        first is not None
        and first.op == "gather"
        and first.inputs == [src]
        and sum(1 for _ in graph.consumers(src)) == 1
    ):
        host_gather = np.asarray(first.attrs["index"], dtype=np.int64)
        src = first.outputs[0]
        nodes = nodes[1:]
    in_t, out_t = graph.tensors[src], graph.tensors[graph.outputs[0]]
    _check_double(f"input {src!r}", in_t.type)
    _check_double(f"output {out_t.name!r}", out_t.type)

    taken: set[str] = set()
    in_name = _cname(src, taken)
    layers: list[dict[str, Any]] = [
        {"name": in_name, "class_name": "InputLayer", "input_shape": list(in_t.shape)}
    ]
    # The project input quantizes like the graph input (a gather commutes with it).
    in_quant = Quant(in_t.type, quant.rounding, quant.overflow)
    precisions = {in_name: {"result": in_quant.ap()}}
    produced = {src: in_name}  # Graph tensor -> hls4ml layer producing it
    manifest: list[dict[str, Any]] = []
    merged: set[str] = set()

    for node in nodes:
        if node.name in merged:
            continue
        for t in node.inputs:
            if t not in produced:
                raise AccelError(f"node {node.name}: input {t!r} is not computed in hls4ml")
        ins = [produced[t] for t in node.inputs]
        prev, out = ins[0], node.outputs[0]
        name = _cname(node.name, taken)
        covers = [node.name]
        # (layer dict, precisions, kind for the manifest); the last one produces `out`
        new: list[tuple[dict, dict[str, str], str]] = []
        exact = graph.tensors[out].type.ap()
        if node.op in ("dense", "conv2d"):
            layer, prec = _dot_layer(graph, node, prev, name)
            new.append((layer, prec, layer["class_name"]))
        elif node.op == "relu":
            # the requantize after it folds in (accel.ir.passes.epilogue decides)
            ep = epilogue(graph, node, relu=False)
            if ep.quant is not None:
                merged |= ep.names
                covers += [n.name for n in ep.nodes]
                out, exact = ep.out, ep.quant.ap()
            new.append((_activation(name, "relu", prev), {"result": exact}, "Activation"))
        elif node.op == "requantize":
            new.append(
                (_activation(name, "linear", prev), {"result": node.attrs["quant"].ap()}, "linear")
            )
        elif node.op == "reshape":
            layer = {
                "name": name,
                "class_name": "Reshape",
                "inputs": [prev],
                "target_shape": list(node.attrs["shape"]),
            }
            # In place in io_parallel: the result is the input variable, modes and all.
            new.append((layer, {"result": precisions[prev]["result"]}, "Reshape"))
        elif node.op == "add":
            layer = {"name": name, "class_name": "Merge", "op": "add", "inputs": ins}
            new.append((layer, {"result": exact}, "Merge(add)"))
        elif node.op == "add_const":
            # a BatchNormalization with one scale and bias per element: x * 1 + value
            v = node.params["value"]
            _check_double(f"node {node.name}: value", v.type)
            layer = {
                "name": name,
                "class_name": "BatchNormalization",
                "inputs": [prev],
                "n_in": int(v.data.size),
                "n_filt": -1,
                "scale_data": np.ones(v.data.size),
                "bias_data": _floats(v.data.reshape(-1), v.type),
            }
            prec = {"scale": "ap_ufixed<2,2>", "bias": v.type.ap(), "result": exact}
            new.append((layer, prec, "BatchNormalization"))
        elif node.op == "concat":
            # hls4ml's Concatenate joins two tensors: a chain for more
            rank = len(graph.tensors[out].shape)
            acc_in = ins[0]
            for i, other in enumerate(ins[1:]):
                cat = name if i == len(ins) - 2 else _cname(f"{node.name}_{i}", taken)
                layer = {
                    "name": cat,
                    "class_name": "Concatenate",
                    "op": f"concatenate{rank}d",
                    "axis": -1,
                    "inputs": [acc_in, other],
                }
                new.append((layer, {"result": exact}, "Concatenate"))
                acc_in = cat
            if len(ins) == 1:
                layer = {
                    "name": name,
                    "class_name": "Reshape",
                    "inputs": [prev],
                    "target_shape": list(graph.tensors[out].shape),
                }
                new.append((layer, {"result": precisions[prev]["result"]}, "Reshape"))
        elif node.op == "patchify":
            # (H, W, C) -> (H/P, P, W/P, P, C) -> transpose -> (H/P * W/P, P*P*C)
            h, w, c = graph.tensors[node.inputs[0]].shape
            p = node.attrs["patch"]
            r1, tr = _cname(f"{node.name}_split", taken), _cname(f"{node.name}_swap", taken)
            keep = {"result": precisions[prev]["result"]}
            new += [
                (
                    {
                        "name": r1,
                        "class_name": "Reshape",
                        "inputs": [prev],
                        "target_shape": [h // p, p, w // p, p, c],
                    },
                    keep,
                    "Reshape",
                ),
                (
                    {
                        "name": tr,
                        "class_name": "Transpose",
                        "inputs": [r1],
                        "perm": [0, 2, 1, 3, 4],
                    },
                    keep,
                    "Transpose",
                ),
                (
                    {
                        "name": name,
                        "class_name": "Reshape",
                        "inputs": [tr],
                        "target_shape": list(graph.tensors[out].shape),
                    },
                    keep,
                    "Reshape",
                ),
            ]
        elif node.op in EXTENSION_OPS:
            from accel.flows import hls4ml_ext

            layer, prec = hls4ml_ext.lower(graph, node, ins, name)
            new.append((layer, {**prec, "result": exact}, layer["class_name"]))
        elif node.op == "deform_conv2d":
            new += _deform_layers(graph, node, prev, name, taken)
        elif node.op == "gather":
            raise AccelError(
                f"node {node.name}: op 'gather' has no hls4ml layer; only a gather of the graph "
                "input is supported (applied in numpy before the C simulation)"
            )
        else:
            raise AccelError(f"node {node.name}: op {node.op!r} has no hls4ml mapping")
        if node.op in FUSES_REQUANTIZE:
            ep = epilogue(graph, node, relu=False)
            if ep.quant is not None:
                merged |= ep.names
                covers += [n.name for n in ep.nodes]
                out = ep.out
                new[-1][1]["result"] = ep.quant.ap()
        for i, (layer, prec, kind) in enumerate(new):
            layers.append(layer)
            precisions[layer["name"]] = prec
            last = i == len(new) - 1
            manifest.append(
                {
                    "hls4ml_layer": layer["name"],
                    "class": kind,
                    "nodes": covers if last else [node.name],
                    "precision": prec,
                }
            )
        produced[out] = new[-1][0]["name"]
    if len(layers) == 1:
        raise AccelError(f"graph {graph.name}: nothing for hls4ml to compute")
    if graph.outputs[0] not in produced:
        raise AccelError(f"graph {graph.name}: output {graph.outputs[0]!r} is not computed")
    if produced[graph.outputs[0]] != layers[-1]["name"]:
        raise AccelError(f"graph {graph.name}: the output must be the last node's result")
    return _Lowered(layers, precisions, host_gather, src, in_quant, graph.outputs[0], manifest)


# -- conversion ----------------------------------------------------------------


def _check_options(backend: str, strategy: str, reuse: int) -> None:
    if backend not in BACKENDS:
        raise AccelError(f"hls4ml backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if strategy not in STRATEGIES:
        raise AccelError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if not isinstance(reuse, int) or reuse < 1:
        raise AccelError(f"reuse factor must be a positive integer, got {reuse!r}")


def _project_name(graph: Graph) -> str:
    name = re.sub(r"\W", "_", graph.name) or "model"
    return name if not name[0].isdigit() else f"m_{name}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """hls4ml prints progress on stdout; keep stdout for our JSON and send it to stderr.
    Its UserWarnings (e.g. the strategy string its pointwise pass re-cases) are noise
    here: every type and option it could change is checked after conversion."""
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"hls4ml(\.|$)")
        yield


def _precision_key(p: Any) -> tuple:
    """(width, integer bits, signed, rounding, saturation) of an hls4ml precision type."""
    rnd = getattr(p, "rounding_mode", None)
    sat = getattr(p, "saturation_mode", None)
    return (
        p.width,
        getattr(p, "integer", p.width),
        p.signed,
        getattr(rnd, "name", "TRN") if rnd is not None else "TRN",
        getattr(sat, "name", "WRAP") if sat is not None else "WRAP",
    )


def _ap_key(ap: str) -> tuple:
    t = FixedType.parse(ap)
    m = re.search(r"AP_(\w+?),\s*AP_(\w+)\s*>", ap)
    rnd, sat = m.groups() if m else ("TRN", "WRAP")
    return (t.width, t.int_bits, t.signed, rnd, sat)


def _verify(model: Any, low: _Lowered) -> None:
    """Every type that decides a number must be the one we asked for."""
    layers = {layer.name: layer for layer in model.get_layers()}
    kinds = {n["hls4ml_layer"]: n["class"] for n in low.nodes}
    for name, prec in low.precisions.items():
        layer = layers.get(name)
        if layer is None:
            # hls4ml drops a final Reshape and a linear activation that changes no type;
            # neither changes a value. Anything else missing is a bug.
            if kinds.get(name) in ("Reshape", "linear"):
                continue
            raise AccelError(f"hls4ml dropped layer {name}; its C simulation would differ")
        for var, ap in prec.items():
            if var == "result":
                got = layer.get_output_variable().type.precision
            elif var in layer.weights:
                got = layer.get_weights(var).type.precision
            else:
                got = layer.get_attr(f"{var}_t").precision
            if _precision_key(got) != _ap_key(ap):
                raise AccelError(
                    f"hls4ml changed {name}.{var} to {got}; accel asked for {ap}, "
                    "so its C simulation would not be bit-exact"
                )


def _convert(
    graph: Graph,
    low: _Lowered,
    out_dir: Path,
    *,
    reuse: int,
    backend: str,
    strategy: str,
    part: str | None,
    clock_ns: float,
) -> Any:
    """Build hls4ml's ModelGraph from our layer list (no Keras/torch involved)."""
    try:
        from hls4ml.model.graph import ModelGraph
        from hls4ml.utils.config import create_config
    except ImportError:
        raise AccelError("hls4ml is not installed (pip install hls4ml)") from None
    from accel.flows import hls4ml_ext

    hls4ml_ext.register()
    config = create_config(
        output_dir=str(out_dir),
        project_name=_project_name(graph),
        backend=backend,
        part=part,
        clock_period=clock_ns,
        io_type="io_parallel",
    )
    config["HLSConfig"] = {
        "Model": {
            # Every numeric type below is named per layer; this default is never used
            # (``_verify`` checks), but hls4ml requires one.
            "Precision": {"default": "ap_fixed<16,6>"},
            "ReuseFactor": reuse,
            "Strategy": strategy,
            # hls4ml's bit-exact width inference would re-derive our types; keep ours.
            "BitExact": False,
        },
        "LayerName": {
            name: {"Precision": dict(prec), "ReuseFactor": reuse, "Strategy": strategy}
            for name, prec in low.precisions.items()
        },
    }
    layers = [dict(layer) for layer in low.layers]
    with _quiet():
        try:
            model = ModelGraph.from_layer_list(config, layers)
        except Exception as e:  # hls4ml raises bare Exceptions
            raise AccelError(f"hls4ml could not convert graph {graph.name}: {e}") from None
    _verify(model, low)
    _check_reuse(model, reuse, strategy)
    return model


def _check_reuse(model: Any, reuse: int, strategy: str) -> None:
    """hls4ml silently replaces a reuse factor its Resource kernels cannot use; refuse instead."""
    be = model.config.backend
    for layer in model.get_layers():
        r = layer.get_attr("reuse_factor")
        if layer.class_name in _DOT_CLASSES and int(r) != reuse:
            valid = be.get_valid_reuse_factors(*be.get_layer_mult_size(layer))
            raise AccelError(
                f"reuse factor {reuse} is not valid for layer {layer.name} with hls4ml's "
                f"{strategy} strategy (valid: {', '.join(map(str, valid))})"
            )


_DOT_CLASSES = ("Dense", "Conv1D", "PointwiseConv1D", "Conv2D", "DepthwiseConv2D")


def _mult_limits(model: Any) -> dict[str, int]:
    """Multipliers per layer by the formulas of hls4ml's kernels (see multiplier_count)."""
    out = {}
    for layer in model.get_layers():
        if layer.class_name == "Dense":
            n = layer.get_attr("n_in") * layer.get_attr("n_out")
        elif layer.class_name in ("Conv1D", "PointwiseConv1D"):
            n = layer.get_attr("filt_width") * layer.get_attr("n_chan") * layer.get_attr("n_filt")
        elif layer.class_name == "Conv2D":
            n = layer.get_attr("filt_height") * layer.get_attr("filt_width")
            n *= layer.get_attr("n_chan") * layer.get_attr("n_filt")
        elif layer.class_name == "DepthwiseConv2D":
            n = layer.get_attr("filt_height") * layer.get_attr("filt_width")
            n *= layer.get_attr("n_chan")
        else:
            continue
        r = int(layer.get_attr("reuse_factor"))
        zeros = layer.get_weights("weight").nzeros if layer.get_attr("strategy") == "latency" else 0
        out[layer.name] = int(-(-n // r) - zeros // r)
    return out


def multiplier_count(
    graph: Graph, *, reuse: int = 1, backend: str = "Vitis", strategy: str = "Latency"
) -> dict[str, int]:
    """Multipliers per layer that hls4ml's kernels allow for this graph, without compiling.

    Latency strategy: hls4ml's ``multiplier_limit`` (the bound of its ``#pragma HLS
    ALLOCATION``), ``ceil(n_in * n_out / R) - n_zeros // R``: it multiplies by
    constant weights, so zero weights cost nothing, but padding taps and inputs that
    are always zero (the gather's masked cells) still count. Resource strategy: its
    ``block_factor``, ``ceil(n_in * n_out / R)`` (weights in memory, no zero is
    skipped). For a conv, ``n_in x n_out`` is one window (KH*KW*Cin x Cout): with
    hls4ml's default ParallelizationFactor 1 that one set serves every output pixel
    in turn, one pipeline step per pixel. These are bounds for the HLS tool, which
    may also fold multiplications by powers of two; only synthesis gives DSP counts.
    """
    _check_options(backend, strategy, reuse)
    low = _lower(graph)
    with tempfile.TemporaryDirectory(prefix="accel-hls4ml-") as tmp:
        model = _convert(
            graph,
            low,
            Path(tmp),
            reuse=reuse,
            backend=backend,
            strategy=strategy,
            part=None,
            clock_ns=5.0,
        )
    return _mult_limits(model)


# -- the written project -------------------------------------------------------


def _gather(low: _Lowered, x: np.ndarray) -> np.ndarray:
    """The graph-input gather that hls4ml cannot express, applied in numpy."""
    x = x.reshape(len(x), -1)
    if low.host_gather is None:
        return x
    idx = low.host_gather
    return np.where(idx >= 0, x[:, np.maximum(idx, 0)], 0)


def _tb_rows(graph: Graph) -> np.ndarray:
    """Raw graph inputs for the project's testbench: type extremes and seeded random rows."""
    t = graph.tensors[graph.inputs[0]]
    lo, hi, n = t.type.min_int, t.type.max_int, t.size
    rows = [np.zeros(n), np.full(n, hi), np.full(n, lo), np.resize([hi, lo], n)]
    rng = np.random.default_rng(0)
    rows += list(rng.integers(lo, hi + 1, size=(12, n)))
    return np.array(rows, dtype=np.int64).reshape(len(rows), *t.shape)


def _write_dat(path: Path, values: np.ndarray) -> None:
    # repr of a float64 round-trips exactly; hls4ml's testbench reads one sample per line.
    path.write_text("".join(" ".join(repr(float(v)) for v in row) + "\n" for row in values))


def _manifest(graph: Graph, low: _Lowered, model: Any, options: dict[str, Any]) -> dict[str, Any]:
    import hls4ml

    from accel.ir.io import to_json

    src = graph.inputs[0]
    in_t = graph.tensors[low.input_tensor]
    out_t = graph.tensors[low.output_tensor]
    mults = _mult_limits(model)
    return {
        "format": FORMAT,
        "graph": graph.name,
        "hls4ml_version": hls4ml.__version__,
        "project": _project_name(graph),
        "options": options,
        "graph_input": {
            "name": src,
            "shape": list(graph.tensors[src].shape),
            "quant": graph.input_quant[src].ap(),
        },
        "host_gather": None
        if low.host_gather is None
        else {
            "what": (
                f"hls4ml has no gather layer: the project's input {low.input_tensor!r} is "
                f"graph input {src!r} gathered as flat[i] = x[index[i]] (0 where index is -1); "
                "the caller applies it"
            ),
            "index": low.host_gather.tolist(),
        },
        "project_input": {
            "name": low.input_tensor,
            "shape": list(in_t.shape),
            "type": low.input_quant.ap(),
            "value": f"raw * 2**-{in_t.type.frac}",
        },
        "project_output": {
            "name": low.output_tensor,
            "shape": list(out_t.shape),
            "type": low.precisions[low.nodes[-1]["hls4ml_layer"]]["result"],
            "value": f"raw * 2**-{out_t.type.frac}",
        },
        "layers": low.nodes,
        "multiplier_limit": {**mults, "total": sum(mults.values())},
        "graph_ir": to_json(graph),
    }


def _readme(graph: Graph, low: _Lowered, manifest: dict[str, Any]) -> str:
    o = manifest["options"]
    pin, pout = manifest["project_input"], manifest["project_output"]
    lines = [
        f"# {manifest['project']}: hls4ml project generated by accel",
        "",
        f"Graph `{graph.name}`, hls4ml {manifest['hls4ml_version']}, backend {o['backend']}, "
        f"strategy {o['strategy']}, reuse factor {o['reuse']}, io_parallel, part {o['part']}, "
        f"clock {o['clock_ns']} ns.",
        "",
        "This is hls4ml's own `write()` output. Build it with"
        + (
            " `vitis-run --tcl build_prj.tcl --mode hls` (steps chosen in `build_opt.tcl`)."
            if o["backend"] == "Vitis"
            else ' `vivado_hls -f build_prj.tcl "csim=1 synth=1"`.'
        ),
        "Every precision is explicit (see",
        "`firmware/defines.h` and `hls4ml_config.yml`), and its C simulation equals",
        "accel's integer reference bit for bit.",
        "",
        "## Input and output",
        "",
        f"- Input `{pin['name']}`: shape {tuple(pin['shape'])}, `{pin['type']}`, "
        f"value = {pin['value']}.",
        f"- Output `{pout['name']}`: shape {tuple(pout['shape'])}, `{pout['type']}`, "
        f"value = {pout['value']}.",
    ]
    if low.host_gather is not None:
        src = graph.inputs[0]
        lines += [
            "",
            "## Not in this project: the input gather",
            "",
            f"The graph's input `{src}` {tuple(graph.tensors[src].shape)} is first rearranged",
            f"into `{pin['name']}` {tuple(pin['shape'])} by a gather: `flat[i] = x[index[i]]`,",
            "or 0 where `index[i] == -1`. hls4ml has no such layer, so the project starts",
            "after it: whoever drives the IP applies the gather (in accel,",
            "`accel.flows.hls4ml.predict` does). The index is `host_gather.index` in",
            "`accel_manifest.json`. Quantizing before or after the gather is the same, so",
            "the input type keeps the graph's input rounding and overflow modes.",
        ]
    lines += [
        "",
        "## Layers",
        "",
        "| hls4ml layer | accel nodes | precisions |",
        "|---|---|---|",
    ]
    for n in low.nodes:
        precs = ", ".join(f"{k} `{v}`" for k, v in n["precision"].items())
        lines.append(f"| {n['hls4ml_layer']} ({n['class']}) | {', '.join(n['nodes'])} | {precs} |")
    ext = [n for n in low.nodes if n["class"].startswith("Accel")]
    if ext:
        from accel.flows import hls4ml_ext

        kinds = sorted({n["class"] for n in ext})
        lines += [
            "",
            "## accel's extension layers",
            "",
            f"{len(ext)} layers ({', '.join(kinds)}) are not hls4ml's own: accel registers",
            "them through hls4ml's extension API (a layer class, a config and a function",
            "template, HLS C++ source), and hls4ml's `write()` copied their source into",
            "`firmware/nnet_utils/` ("
            + ", ".join(f"`{s}`" for s in hls4ml_ext.SOURCES)
            + "). They compute accel's integer",
            "algorithms exactly on `ap_int` of declared widths (constants in",
            "`firmware/parameters.h`), so the project needs nothing outside this directory.",
        ]
    mults = manifest["multiplier_limit"]
    lines += [
        "",
        f"hls4ml's multiplier limit (zero weights skipped): {mults['total']} "
        f"({', '.join(f'{k} {v}' for k, v in mults.items() if k != 'total')}).",
        "",
        "## Testbench data",
        "",
        "`tb_data/tb_input_features.dat` holds type-extreme and random inputs (already",
        "gathered), `tb_data/tb_output_predictions.dat` accel's reference outputs for",
        "them. After C simulation `tb_data/csim_results.log` holds hls4ml's outputs,",
        "printed to 6 significant digits: times 2**frac and rounded, they equal the",
        "predictions times 2**frac exactly.",
        "",
    ]
    return "\n".join(lines)


def _finish_project(graph: Graph, low: _Lowered, model: Any, prj: Path) -> None:
    """Add what hls4ml cannot know: manifest, README, testbench data from the reference."""
    from accel import reference

    cfg = model.config
    options = {
        "reuse": int(cfg.get_config_value("HLSConfig")["Model"]["ReuseFactor"]),
        "backend": cfg.get_config_value("Backend"),
        "strategy": cfg.get_config_value("HLSConfig")["Model"]["Strategy"],
        "part": cfg.get_config_value("Part"),
        "clock_ns": cfg.get_config_value("ClockPeriod"),
        "io_type": cfg.get_config_value("IOType"),
    }
    manifest = _manifest(graph, low, model, options)
    (prj / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    (prj / "README.md").write_text(_readme(graph, low, manifest))
    x = _tb_rows(graph)
    in_t = graph.tensors[low.input_tensor].type
    out_t = graph.tensors[low.output_tensor].type
    y = reference.predict(graph, x)
    (prj / "tb_data").mkdir(exist_ok=True)
    _write_dat(prj / "tb_data" / "tb_input_features.dat", in_t.to_float(_gather(low, x)))
    _write_dat(prj / "tb_data" / "tb_output_predictions.dat", out_t.to_float(y.reshape(len(y), -1)))


def _set_output_dir(prj: Path, final: Path, stamp: str) -> None:
    """Same inputs, same bytes: hls4ml_config.yml records where the project was written
    (point it at the final place) and a random stamp for the library name (replace it,
    in every file that names it, with one derived from the graph and options)."""
    import yaml

    cfg = prj / "hls4ml_config.yml"
    doc = yaml.safe_load(cfg.read_text())
    doc["OutputDir"] = str(final)
    old = str(doc.get("Stamp", ""))
    doc["Stamp"] = stamp
    cfg.write_text(yaml.dump(doc))
    if len(old) < 8:
        return
    for f in sorted(prj.rglob("*")):
        if not f.is_file() or f.stat().st_size > 1 << 24:
            continue
        try:
            text = f.read_text()
        except UnicodeDecodeError:
            continue
        if old in text:
            f.write_text(text.replace(old, stamp))


def write_project(
    graph: Graph,
    out_dir: Path,
    *,
    reuse: int = 1,
    backend: str = "Vitis",
    strategy: str = "Latency",
    part: str | None = None,
    clock_ns: float = 5.0,
    final: Path | None = None,
) -> Path:
    """Write the hls4ml project for ``graph`` to ``out_dir`` (which must not hold files).

    The result is hls4ml's ``write()`` output (``build_prj.tcl``, ``firmware/``,
    weights, testbench) plus ``README.md``, ``accel_manifest.json`` and testbench
    data from the reference. It is assembled next to ``out_dir`` and renamed into
    place, so a failure leaves nothing half-written. ``final`` is where the project
    will finally live, if a caller moves ``out_dir`` there (the config records it).
    The same graph and options give the same bytes.
    """
    _check_options(backend, strategy, reuse)
    low = _lower(graph)
    out_dir = Path(out_dir).resolve()
    options = {"reuse": reuse, "backend": backend, "strategy": strategy, "part": part}
    stamp = _cache_key(graph, {**options, "clock_ns": clock_ns})[:8]
    with staged_dir(out_dir) as tmp:
        model = _convert(
            graph,
            low,
            tmp,
            reuse=reuse,
            backend=backend,
            strategy=strategy,
            part=part,
            clock_ns=clock_ns,
        )
        with _quiet():
            model.write()
        _finish_project(graph, low, model, tmp)
        _set_output_dir(tmp, Path(final).resolve() if final else out_dir, stamp)
    return out_dir


# -- C simulation ----------------------------------------------------------------

_LOADED: dict[str, Any] = {}


def _cache_key(graph: Graph, options: dict[str, Any]) -> str:
    """Everything the compiled library depends on: graph, weights, options, versions."""
    import hls4ml

    from accel.flows import hls4ml_ext
    from accel.ir.io import to_json

    h = hashlib.sha256()
    h.update(json.dumps(to_json(graph), sort_keys=True, default=str).encode())
    for node in graph.nodes:
        for k, p in sorted(node.params.items()):
            h.update(f"{node.name}/{k}{p.data.shape}".encode())
            h.update(np.ascontiguousarray(p.data, dtype="<i8").tobytes())
    h.update(json.dumps(options, sort_keys=True).encode())
    h.update(f"{hls4ml.__version__}\0{FORMAT}\0{hls4ml_ext.sources_digest()}".encode())
    return h.hexdigest()[:20]


def _compiled(graph: Graph, low: _Lowered, options: dict[str, Any]) -> Any:
    """hls4ml's compiled C simulation for ``graph``, built once per cache key."""
    key = _cache_key(graph, options)
    if key in _LOADED:
        return _LOADED[key]
    from hls4ml.utils.link import FilesystemModelGraph

    d = cache_root() / "hls4ml" / key
    prj, done = d / "project", d / "built.json"
    if not done.is_file():
        if shutil.which("g++") is None:
            raise AccelError("hls4ml's C simulation needs g++, which is not on PATH")
        d.mkdir(parents=True, exist_ok=True)
        with open(d / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not done.is_file():
                shutil.rmtree(prj, ignore_errors=True)
                t0 = time.perf_counter()
                model = _convert(graph, low, prj, part=None, clock_ns=5.0, **options)
                with _quiet():
                    try:
                        model.compile()  # write() + build_lib.sh (g++)
                    except Exception as e:
                        raise AccelError(
                            f"hls4ml C simulation build failed in {prj}: {e}"
                        ) from None
                _finish_project(graph, low, model, prj)
                stamp = model.config.get_config_value("Stamp")
                lib = f"{model.config.get_project_name()}-{stamp}.so"
                info = {"lib": lib, "compile_s": round(time.perf_counter() - t0, 2)}
                done.write_text(json.dumps(info) + "\n")
    lib = prj / "firmware" / json.loads(done.read_text())["lib"]
    with _quiet():
        model = FilesystemModelGraph(prj)
    # hls4ml's FilesystemModelGraph links a written project; load the library the
    # cached build produced instead of re-running build_lib.sh.
    model._top_function_lib = ctypes.cdll.LoadLibrary(str(lib))
    _LOADED[key] = model
    return model


def predict(
    graph: Graph,
    x_raw: np.ndarray,
    *,
    reuse: int = 1,
    backend: str = "Vitis",
    strategy: str = "Latency",
) -> np.ndarray:
    """Raw int64 outputs of hls4ml's compiled C simulation of ``graph`` on raw inputs.

    Inputs enter as exact doubles (``raw * 2**-frac``) and outputs are scaled back by
    ``2**frac`` and checked to be integers in the output type, so any difference
    from the reference is a real one. The build is cached (see :func:`cache_root`).
    """
    from accel.reference import check_raw_inputs

    _check_options(backend, strategy, reuse)
    low = _lower(graph)
    x = check_raw_inputs(graph, graph.inputs[0], x_raw)
    out_t = graph.tensors[low.output_tensor]
    if len(x) == 0:
        return np.zeros((0, *out_t.shape), dtype=np.int64)
    model = _compiled(graph, low, {"reuse": reuse, "backend": backend, "strategy": strategy})
    in_t = graph.tensors[low.input_tensor].type
    xf = np.ascontiguousarray(in_t.to_float(_gather(low, x)))
    with _quiet():
        y = np.asarray(model.predict(xf), dtype=np.float64).reshape(len(x), -1)
    raw = np.ldexp(y, out_t.type.frac)
    out = np.rint(raw)
    if not np.array_equal(out, raw) or not out_t.type.contains(out.astype(np.int64)):
        raise AccelError(f"hls4ml returned values that are not raw {out_t.type} integers")
    return out.astype(np.int64).reshape(len(x), *out_t.shape)
