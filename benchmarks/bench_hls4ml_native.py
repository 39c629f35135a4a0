"""What hls4ml's own layers give where accel uses its extension layers; prints JSON.

    python benchmarks/bench_hls4ml_native.py [--images N] [--seed S] [--cases ...]

For each case the accel hls4ml project (extension layers, bit-exact) is lowered as
usual, then the extension layers named by the case are swapped for hls4ml 1.3's
own layer with its defaults for everything accel does not fix (accel still names
the input, result, gamma/beta and weight types), and the compiled C simulation is
compared with the reference on the same images: the model's own data plus the
edge images. Cases:

* ``moe_vit/softmax``, ``moe_vit/layernorm``: hls4ml's ``Softmax`` (stable
  implementation, exp and 1/sum from 1,024-entry tables) in place of
  ``AccelShiftmax``, or its ``LayerNormalization`` (1/sqrt(var) from a 4,096-entry
  table, ``ap_fixed<14,4>`` accumulators) in place of ``AccelLayerNorm``; the
  whole seg network. hls4ml has no GELU, so ``AccelShiftGelu`` always stays.
* ``op/softmax_int``, ``op/layernorm_int``: the same swap for one op alone: each
  instance in the seg network as a one-layer project fed its own inputs on the
  images, so the count is the layer's, not the network's.
* ``deform_det/square``, ``deform_det/bilinear``: hls4ml's ``DepthwiseConv2D`` (a
  regular 3x3 depthwise conv, offsets ignored) in place of the offset conv and
  ``AccelDeformDW``: what hls4ml's layers compute for a deformable layer.

Counts: output values that differ, images with any difference, and the largest
difference in output LSBs. Each case compiles once (a few minutes here).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from accel import reference, zoo
from accel.flows import hls4ml as flow
from accel.sim.stimulus import edge_inputs

CASES = ("moe_vit/softmax", "moe_vit/layernorm", "deform_det/square", "deform_det/bilinear")
OPS = ("op/softmax_int", "op/layernorm_int")


def _graph(case: str):
    family, what = case.split("/")
    if family == "moe_vit":
        from accel.zoo.moe_vit.model import build

        return build(task="seg")
    from accel.zoo.deform_det.model import build

    return build(variant=what)


def _native(graph, low: flow._Lowered, case: str) -> flow._Lowered:
    """The lowering with the case's extension layers replaced by hls4ml's own."""
    layers, precisions, nodes = [], dict(low.precisions), []
    drop: set[str] = set()
    by_name = {n.name: n for n in graph.nodes}
    for layer, info in zip(low.layers[1:], low.nodes, strict=True):
        cls, name = layer["class_name"], layer["name"]
        prec = dict(low.precisions[name])
        if case == "moe_vit/softmax" and cls == "AccelShiftmax":
            rows, n = layer["accel_consts"]["n_rows"], layer["accel_consts"]["n_cols"]
            layer = {
                "name": name,
                "class_name": "Softmax",
                "activation": "softmax",
                "inputs": layer["inputs"],
                "axis": -1,
                "n_in": rows * n,
                "n_outer": rows,
                "n_inner": 1,
            }
            info = {**info, "class": "Softmax"}
        elif case == "moe_vit/layernorm" and cls == "AccelLayerNorm":
            node = by_name[info["nodes"][0]]
            rows, c = layer["accel_consts"]["n_rows"], layer["accel_consts"]["n_in"]
            layer = {
                "name": name,
                "class_name": "LayerNormalization",
                "inputs": layer["inputs"],
                "n_in": rows * c,
                "seq_len": rows,
                "axis": 2,
                "epsilon_power_of_10": 3,
                "gamma_data": layer["gamma_data"],
                "beta_data": layer["beta_data"],
            }
            prec = {"scale": prec.pop("gamma"), "bias": prec.pop("beta"), **prec}
            assert node.op == "layernorm_int"
            info = {**info, "class": "LayerNormalization"}
        elif case.startswith("deform_det/") and cls == "Conv2D" and name.endswith("_offsets"):
            drop.add(name)
            continue
        elif case.startswith("deform_det/") and cls == "AccelDeformDW":
            node = by_name[info["nodes"][0]]
            x = graph.tensors[node.inputs[0]]
            w, b = node.params["weight"], node.params.get("bias")
            c = x.shape[-1]
            layer = flow._conv_dict(name, layer["inputs"][0], x.shape, w.data, node.attrs["stride"])
            layer.update(
                class_name="DepthwiseConv2D",
                n_filt=c,
                depth_multiplier=1,
                depthwise_data=flow._floats(w.data.reshape(3, 3, c, 1), w.type),
                bias_data=flow._floats(b.data, b.type),
            )
            prec = {
                "weight": w.type.ap(),
                "bias": b.type.ap(),
                "accum": node.attrs["acc"].ap(),
                "result": prec["result"],
            }
            info = {**info, "class": "DepthwiseConv2D"}
        layers.append(layer)
        precisions[name] = prec
        nodes.append({**info, "precision": prec})
    for name in drop:
        precisions.pop(name)
    return replace(low, layers=[low.layers[0], *layers], precisions=precisions, nodes=nodes)


def run(case: str, n: int, seed: int) -> dict:
    g = _graph(case)
    family = case.split("/")[0]
    x = np.concatenate(
        [
            edge_inputs(g),
            reference.quantize_inputs(g, g.inputs[0], zoo.get(family).make_inputs(n, seed)),
        ]
    )
    low = _native(g, flow._lower(g), case)
    with tempfile.TemporaryDirectory(prefix="accel-native-") as tmp:
        t0 = time.perf_counter()
        model = flow._convert(
            g, low, Path(tmp) / "prj", reuse=1, backend="Vitis", strategy="Latency",
            part=None, clock_ns=5.0,
        )  # fmt: skip
        with flow._quiet():
            model.compile()
            compile_s = time.perf_counter() - t0
            xf = g.tensors[low.input_tensor].type.to_float(x.reshape(len(x), -1))
            y = np.asarray(model.predict(np.ascontiguousarray(xf)))
    out_t = g.tensors[low.output_tensor].type
    got = np.rint(np.ldexp(y.reshape(len(x), -1), out_t.frac)).astype(np.int64)
    want = reference.predict(g, x).reshape(len(x), -1)
    diff = got != want
    return {
        "case": case,
        "images": len(x),
        "edge_images": 5,
        "values": int(want.size),
        "values_differ": int(diff.sum()),
        "images_differ": int(diff.any(axis=1).sum()),
        "max_abs_diff_lsb": int(np.abs(got - want).max()),
        "compile_s": round(compile_s, 1),
    }


def run_op(op: str, n: int, seed: int) -> dict:
    """One op alone: every instance of ``op`` in the seg network (and the requantize that
    folds into it) as a one-layer project, fed that instance's own input on the images;
    hls4ml's layer against the reference, value by value."""
    from accel.ir import Graph

    g = _graph("moe_vit/seg")
    x = np.concatenate(
        [
            edge_inputs(g),
            reference.quantize_inputs(g, "image", zoo.get("moe_vit").make_inputs(n, seed)),
        ]
    )
    values = reference.run(g, x)
    case = {"softmax_int": "moe_vit/softmax", "layernorm_int": "moe_vit/layernorm"}[op]
    total = differ = worst = 0
    compile_s = 0.0
    for node in [nd for nd in g.nodes if nd.op == op]:
        src = g.tensors[node.inputs[0]]
        one = Graph(f"one_{node.name}")
        t = one.add_input(src.name, src.shape, g.input_quant.get(src.name) or _quant_of(src))
        y = one.add(node.op, t, name=node.name, params=node.params, **node.attrs)
        users = list(g.consumers(node.outputs[0]))
        if len(users) == 1 and users[0].op == "requantize":
            y = one.add("requantize", y, name=users[0].name, quant=users[0].attrs["quant"])
        one.mark_output(y)
        low = _native(one, flow._lower(one), case)
        with tempfile.TemporaryDirectory(prefix="accel-native-") as tmp:
            t0 = time.perf_counter()
            model = flow._convert(
                one, low, Path(tmp) / "prj", reuse=1, backend="Vitis", strategy="Latency",
                part=None, clock_ns=5.0,
            )  # fmt: skip
            with flow._quiet():
                model.compile()
                compile_s += time.perf_counter() - t0
                xi = values[src.name]
                xf = src.type.to_float(xi.reshape(len(xi), -1))
                out = np.asarray(model.predict(np.ascontiguousarray(xf)))
        out_t = one.tensors[one.outputs[0]].type
        got = np.rint(np.ldexp(out.reshape(len(xi), -1), out_t.frac)).astype(np.int64)
        want = values[one.outputs[0]].reshape(len(xi), -1)
        total += want.size
        differ += int((got != want).sum())
        worst = max(worst, int(np.abs(got - want).max()))
    return {
        "case": f"{case} (each instance alone, its own inputs)",
        "images": len(x),
        "values": total,
        "values_differ": differ,
        "max_abs_diff_lsb": worst,
        "compile_s": round(compile_s, 1),
    }


def _quant_of(t):
    """The input quantizer of a one-op graph: the tensor's type (values are raw already)."""
    from accel.fixed import Quant

    return Quant(t.type)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--seed", type=int, default=987654321)
    ap.add_argument("--cases", nargs="+", choices=CASES + OPS, default=list(CASES + OPS))
    args = ap.parse_args()
    results = []
    for case in args.cases:
        print(f"{case} ...", file=sys.stderr)
        if case in OPS:
            results.append(run_op(case.split("/")[1], args.images, args.seed))
        else:
            results.append(run(case, args.images, args.seed))
        print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps({"hls4ml_native": results}, indent=1))


if __name__ == "__main__":
    main()
