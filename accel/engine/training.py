"""One integer training step of a dense-layer network as engine GEMMs (after SAT).

Per layer, with ``W`` (in, out) and batch activations ``X``:

- forward ``X @ W_f``: ``W_f`` is N:M along ``in`` (BDWP's mask on W);
- backward ``dY @ W_b^T``: ``W_b`` is N:M along ``out`` (the mask on W^T), so
  ``W_b^T`` is N:M along the GEMM's reduction axis and runs sparse too;
- weight update ``X^T @ dY``: dense.

Activations come from the reference forward pass; output gradients from an
integer backward pass: the softmax cross-entropy gradient quantized to 8 bits,
then each ``dX`` requantized to 8 bits and zeroed where the layer's input
activation is zero (the ReLU's derivative, as seen after requantization). A
layer whose output count M does not divide keeps a dense backward GEMM.
"""

from __future__ import annotations

import numpy as np

from accel import nm, reference
from accel.engine.compile import GemmSpec
from accel.engine.graph import layers
from accel.engine.program import DrainSpec
from accel.fixed import FixedType, Overflow, Quant, Rounding, quantize, requantize
from accel.ir.graph import Graph

GRAD = Quant(FixedType(8, 7), Rounding.RND, Overflow.SAT)  # output gradients, 8-bit


def step_gemms(
    graph: Graph, x: np.ndarray, labels: np.ndarray, acc: FixedType, sparse: bool = True
) -> list[GemmSpec]:
    """The 3 x layers GEMMs of one step on the raw batch ``x``; ``sparse=False``: dense baseline."""
    specs = layers(graph)
    values = reference.run(graph, x)
    # each dense layer's input activations, from the reference forward pass
    ins = [values[n.inputs[0]] for n in graph.nodes if n.op == "dense"]
    ins = [a.reshape(len(a), -1) for a in ins]
    logits = values[graph.outputs[0]].astype(np.float64)
    logits *= 2.0 ** -graph.tensors[graph.outputs[0]].type.frac
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    dy = quantize(p - np.eye(p.shape[1])[labels], GRAD)
    drain = DrainSpec(acc)
    per_layer: list[list[GemmSpec]] = [[] for _ in specs]
    for li in reversed(range(len(specs))):
        spec, a = specs[li], ins[li]
        w = spec.b
        fwd = spec.pattern if sparse else None
        bwd = fwd if fwd is not None and w.shape[1] % fwd.m == 0 else None
        w_b = w * nm.mask(w, bwd, axis=1) if bwd is not None else w
        per_layer[li] = [
            GemmSpec(f"{spec.name}.forward", a, w, drain, fwd),
            GemmSpec(f"{spec.name}.backward", dy, np.ascontiguousarray(w_b.T), drain, bwd),
            GemmSpec(f"{spec.name}.update", np.ascontiguousarray(a.T), dy, drain),
        ]
        if li:
            dx = dy @ w_b.T  # the backward GEMM's result, exactly
            frac = GRAD.type.frac + graph.node(spec.name).params["weight"].type.frac
            dy = requantize(dx, frac, GRAD) * (a > 0)
    return [g for gemms in per_layer for g in gemms]
