"""Compile a Graph's dense layers into one engine program over a batch.

Each Dense node, with the ReLU and Requantize after it, is one GEMM whose
drain applies the bias, ReLU and requantization and writes the next layer's
input into the activation banks (two regions, used in turn). The last layer
streams its results out. Weights load once; the batch runs in chunks that fit
the banks, so the program is: weight and bias loads, then per chunk one A
load and one GEMM per layer.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np

from accel import nm
from accel.engine.compile import Allocator, GemmSpec, check_a_region, place
from accel.engine.config import EngineConfig
from accel.engine.isa import Target
from accel.engine.program import Drain, Load, Program, a_words, ceil_to
from accel.errors import AccelError
from accel.ir.graph import Graph
from accel.kernels import align_bias


def layers(graph: Graph) -> list[GemmSpec]:
    """The graph as GEMM specs (A left empty): dense [relu] [requantize] chains."""
    specs: list[GemmSpec] = []
    nodes = list(graph.nodes)
    i = 0
    while i < len(nodes) and nodes[i].op == "reshape" and not specs:
        i += 1  # a leading flatten is only a view of the input rows
    while i < len(nodes):
        node = nodes[i]
        if node.op != "dense":
            raise AccelError(
                f"node {node.name}: the engine compiler takes dense layers (with ReLU and "
                f"requantize); {node.op!r} is not supported yet"
            )
        w = node.params["weight"]
        b = node.params.get("bias")
        acc = node.attrs["acc"]
        bias = None if b is None else align_bias(b.data, b.type, acc)
        relu, quant = False, None
        i += 1
        if i < len(nodes) and nodes[i].op == "relu":
            relu, i = True, i + 1
        if i < len(nodes) and nodes[i].op == "requantize":
            quant, i = nodes[i].attrs["quant"], i + 1
        pattern = node.attrs.get("nm")
        specs.append(
            GemmSpec(
                node.name,
                np.zeros((0, w.data.shape[0]), np.int64),
                w.data,
                Drain(acc, relu, quant),
                None if pattern is None else nm.NM.parse(pattern),
                bias,
            )
        )
    if not specs:
        raise AccelError(f"graph {graph.name} has no dense layer for the engine")
    return specs


def _check_operand(t, bits: int, what: str) -> None:
    need = t.width + (0 if t.signed else 1)
    if need > bits:
        raise AccelError(f"{what}: {t} needs {need}-bit signed operands, the engine has {bits}")


def compile_graph(graph: Graph, cfg: EngineConfig, x: np.ndarray) -> tuple[Program, list[int]]:
    """The program for raw inputs ``x`` (N, ...); returns it and the rows of each chunk."""
    specs = layers(graph)
    _check_operand(graph.tensors[graph.inputs[0]].type, cfg.a_bits, "input")
    for spec, node_out in itertools.pairwise(specs):
        t = spec.drain.quant.type if spec.drain.quant else spec.drain.acc
        _check_operand(t, cfg.a_bits, f"{node_out.name} input")
    x = np.asarray(x, dtype=np.int64).reshape(len(x), -1)
    widths = [ceil_to(s.b.shape[0], cfg.group) for s in specs]
    widths += [ceil_to(s.b.shape[1], cfg.cols) for s in specs]
    words_per_block = max(widths) // cfg.group
    # two regions of row blocks; the largest chunk that fits, and at most the batch
    blocks = cfg.a_depth // (2 * words_per_block)
    if blocks < 1:
        raise AccelError(
            f"{specs[0].name}: a row block of activations needs {2 * words_per_block} words per "
            f"bank (two regions), the banks hold {cfg.a_depth}"
        )
    chunk = min(blocks * cfg.rows, ceil_to(max(len(x), 1), cfg.rows))
    region = blocks * words_per_block
    alloc = Allocator(cfg)
    prog = Program(cfg)
    placed = []
    for spec in specs:
        gemm, loads = place(cfg, spec, alloc, chunk, 0, 0, False)
        prog.steps += loads
        placed.append(gemm)
    sizes = []
    for start in range(0, len(x), chunk):
        rows = x[start : start + chunk]
        sizes.append(len(rows))
        prog.steps.append(Load(Target.A, 0, a_words(cfg, rows, placed[0].k)))
        for li, gemm in enumerate(placed):
            last = li == len(placed) - 1
            g = replace(
                gemm,
                rows=len(rows),
                a_base=(li % 2) * region,
                out_base=((li + 1) % 2) * region,
                to_stream=last,
            )
            check_a_region(cfg, g.a_words(cfg), g.name)
            prog.steps.append(g)
    prog.instructions()  # refuses a program longer than the instruction memory
    return prog, sizes


def outputs(program: Program, sizes: list[int], graph: Graph, lines: list[str]) -> np.ndarray:
    """The graph's output rows from the engine's output words."""
    mats = program.split_outputs(lines)
    n_out = graph.tensors[graph.outputs[0]].size
    return np.concatenate([m[:n, :n_out] for m, n in zip(mats, sizes, strict=True)])
