"""The exact integer reference against a float32 numpy forward of the same network; prints JSON.

    python benchmarks/bench_reference.py [--batches 1000 10000 100000] [--repeat 5]

For the autoencoder (and ``--models`` others made only of gather, conv2d,
dense, relu, requantize and reshape), in the same run and on the same
inputs: ``accel.reference.predict`` on raw integers, and a float32 numpy
forward with the same structure (gather, im2col through
``accel.kernels.im2col``, matmul, bias, relu; no quantization), the cost a
plain float model would have. ``ratio`` is the reference's throughput over the
float forward's (best of ``--repeat`` rounds; in each round the calls run back
to back, and ``ratio_median_of_rounds`` is the median of the rounds' own
ratios, which a changing machine load moves less). ``int64_path`` is the
reference with its float fast path off (``exact_ints=True``: every kernel in
int64, as before the fast path). The outputs of both paths are compared with
``==`` first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from accel import kernels, reference, zoo
from accel.ir.graph import Graph


def float_forward(graph: Graph):
    """A float32 forward of ``graph``'s structure with its real-valued weights."""
    consts = {}
    for node in graph.nodes:
        for k, p in node.params.items():
            consts[node.name, k] = (p.data * 2.0**-p.type.frac).astype(np.float32)

    def run(x: np.ndarray) -> np.ndarray:
        v = {graph.inputs[0]: x}
        for node in graph.nodes:
            a = v[node.inputs[0]]
            if node.op == "gather":
                flat = a.reshape(len(a), -1)
                index = np.asarray(node.attrs["index"])
                y = np.where(index >= 0, flat[:, np.maximum(index, 0)], np.float32(0))
                y = y.reshape(len(a), *node.attrs["shape"])
            elif node.op in ("conv2d", "dense"):
                w = consts[node.name, "weight"]
                if node.op == "conv2d":
                    kh, kw, _, cout = w.shape
                    pads = reference._conv_pads(node, graph.tensors[node.inputs[0]])
                    cols, (n, oh, ow) = kernels.im2col(a, kh, kw, pads, node.attrs["stride"])
                    y = (cols @ w.reshape(-1, cout)).reshape(n, oh, ow, cout)
                else:
                    y = a @ w
                if (node.name, "bias") in consts:
                    y += consts[node.name, "bias"]
            elif node.op == "relu":
                y = np.maximum(a, np.float32(0))
            elif node.op == "requantize":
                y = a  # a float model does not requantize
            elif node.op == "reshape":
                y = a.reshape(len(a), *node.attrs["shape"])
            else:
                raise SystemExit(f"bench_reference: no float kernel for {node.op}")
            v[node.outputs[0]] = y
        return v[graph.outputs[0]]

    return run


def paired(fns: list, repeat: int) -> list[list[float]]:
    """Seconds per call of each of ``fns``, ``repeat`` rounds, the calls of a round back
    to back (so a change in the machine's load hits all of them alike)."""
    for fn in fns:
        fn()  # warm caches and BLAS
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, ts in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["autoencoder"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1000, 10000, 100000])
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args(argv)
    out = {"load_average": os.getloadavg(), "results": []}
    for name in args.models:
        model = zoo.get(name)
        graph = model.build()
        forward = float_forward(graph)
        t_in = graph.tensors[graph.inputs[0]].type
        x_all = reference.quantize_inputs(
            graph, graph.inputs[0], model.make_inputs(max(args.batches), 1)
        )
        for n in args.batches:
            x = x_all[:n]
            xf = (x * 2.0**-t_in.frac).astype(np.float32)
            got = reference.predict(graph, x)
            want = reference.run(graph, x, exact_ints=True)[graph.outputs[0]]
            assert got.dtype == np.int64 and np.array_equal(got, want)
            t_ref, t_float, t_int = paired(
                [
                    lambda g=graph, x=x: reference.predict(g, x),
                    lambda f=forward, xf=xf: f(xf),
                    lambda g=graph, x=x: reference.run(g, x, exact_ints=True),
                ],
                args.repeat,
            )
            ratios = sorted(f / r for f, r in zip(t_float, t_ref, strict=True))
            out["results"].append(
                {
                    "model": name,
                    "batch": n,
                    "reference_samples_per_s": round(n / min(t_ref)),
                    "float32_samples_per_s": round(n / min(t_float)),
                    "int64_path_samples_per_s": round(n / min(t_int)),
                    "ratio": round(min(t_float) / min(t_ref), 3),
                    "ratio_median_of_rounds": round(ratios[len(ratios) // 2], 3),
                    "int64_path_ratio": round(min(t_float) / min(t_int), 3),
                }
            )
            print(f"bench_reference: {out['results'][-1]}", file=sys.stderr, flush=True)
    out["load_average_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
