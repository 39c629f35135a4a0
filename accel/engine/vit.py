"""Compile a token graph (a ViT: attention, LayerNorm, GELU, MoE) into one engine program.

The array's rows are tokens: a (T, C) tensor is stored as row blocks of
``rows`` tokens, token ``p`` of a block in bank ``p``, its C values in words of
``group`` lanes. A per-token dense layer is then an ordinary GEMM, and every
bank holds whole rows, which is what the vector unit needs for row-wise
softmax and LayerNorm.

Each node becomes one step, with the requantize after it fused into the
step's drain:

- ``patchify`` of the input: the host sends the patches (the input stream's A load);
- ``dense``: a weight load, a bias load and a GEMM (weights stream in per
  inference, as Edge-MoE's come from DRAM: only the nodes in the graph, so
  only a task's own experts, are fetched);
- ``matmul``: a GEMM whose second operand is already in the weight buffer:
  the dense layer producing k writes its result there transposed (K^T), the
  one producing v as is;
- ``softmax_int``, ``gelu_int``, ``layernorm_int`` (gamma and beta loaded into
  the bias buffer), ``add`` and ``add_const`` (the constant held in the banks,
  loaded once): VEC instructions;
- ``concat``: free; each head's result is written into its slice of the
  concatenated rows.

Bank space is allocated first-fit and freed after a tensor's last use. The
program's per-image body repeats in a LOOP.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from accel.engine.compile import Allocator, _fits, place
from accel.engine.config import EngineConfig
from accel.engine.graph import _check_operand, _spec
from accel.engine.isa import Target, VecOp
from accel.engine.program import (
    BWrite,
    DrainSpec,
    Gemm,
    Geometry,
    Load,
    Program,
    Repeat,
    a_words,
    bias_words,
    ceil_to,
)
from accel.engine.vector import (
    Vec,
    add_fields,
    exact_drain,
    gelu_fields,
    layernorm_fields,
    softmax_fields,
)
from accel.errors import AccelError
from accel.fixed import FixedType, Quant
from accel.ir.graph import Graph, Node
from accel.ir.passes import epilogue

VIT_NODES = (
    "patchify", "dense", "matmul", "softmax_int", "gelu_int", "layernorm_int", "add",
    "add_const", "concat", "requantize",
)  # fmt: skip


def is_token_graph(graph: Graph) -> bool:
    """A graph for this compiler (a ViT): it starts by cutting its image into patches."""
    return bool(graph.nodes) and graph.nodes[0].op == "patchify"


# what the token compiler's programs need of the engine: the vector unit, room for the
# ViT's weight tiles, LayerNorm parameters and instructions
TOKEN_NEEDS = {"vector": True, "b_depth": 1024, "bias_depth": 64, "imem_depth": 512}


def engine_config(array: str = "8x8", bank_words: int = 512, vec_rows: int = 0) -> EngineConfig:
    """The engine the token graphs run on: the vector unit, room for the ViT's programs.

    The group is the array's row count (a transposed tile column is one weight word).
    ``vec_rows`` rows share the vector unit's lanes at a time (0: all rows).
    """
    shape = EngineConfig.array(array, group=1)
    rows = shape.rows
    if shape.cols != rows:
        raise AccelError(
            f"the vector engine's array must be square (its group is the rows), got {array}"
        )
    return EngineConfig.array(
        array, group=rows, a_depth=bank_words, vec_rows=vec_rows, **TOKEN_NEEDS
    )


@dataclass
class Region:
    base: int
    words: int  # words per row
    stride: int  # words between row blocks (a slice of a wider tensor: the wider row)


class Banks:
    """First-fit allocation of row-block regions in the activation banks."""

    def __init__(self, depth: int, buffer: str = "the banks", hint: str = "") -> None:
        self.depth, self.buffer, self.hint = depth, buffer, hint
        self.free = [(0, depth)]
        self.high = 0

    def take(self, size: int, what: str) -> int:
        for i, (base, n) in enumerate(self.free):
            if n >= size:
                self.free[i] = (base + size, n - size)
                self.high = max(self.high, base + size)
                return base
        raise AccelError(
            f"{what}: {self.buffer} ({self.depth} words) have no room for {size} more words"
            f"{self.hint}"
        )

    def give(self, base: int, size: int) -> None:
        self.free.append((base, size))
        self.free.sort()
        merged: list[tuple[int, int]] = []
        for b, n in self.free:
            if merged and merged[-1][0] + merged[-1][1] == b:
                merged[-1] = (merged[-1][0], merged[-1][1] + n)
            elif n:
                merged.append((b, n))
        self.free = merged


def _words(c: int, cfg: EngineConfig) -> int:
    return ceil_to(c, cfg.group) // cfg.group


class _Compiler:
    def __init__(self, graph: Graph, cfg: EngineConfig) -> None:
        if not cfg.vector:
            raise AccelError(
                f"graph {graph.name} needs the vector unit (softmax, GELU, LayerNorm): build "
                "the engine with vector=True"
            )
        self.g, self.cfg = graph, cfg
        for n in graph.nodes:
            if n.op not in VIT_NODES:
                raise AccelError(
                    f"node {n.name}: the engine's token compiler takes {', '.join(VIT_NODES)}; "
                    f"{n.op!r} is not supported"
                )
        first = graph.nodes[0]
        if first.op != "patchify" or first.inputs != graph.inputs[:1]:
            raise AccelError(f"graph {graph.name}: the engine's token graphs start with patchify")
        self.tokens = graph.tensors[first.outputs[0]].shape[0]
        if self.tokens % cfg.rows:
            raise AccelError(
                f"graph {graph.name}: {self.tokens} tokens are not whole blocks of {cfg.rows} rows"
            )
        self.blocks = self.tokens // cfg.rows
        self.banks = Banks(cfg.a_depth, hint="; build deeper banks (--bank-words)")
        self.regions: dict[str, Region] = {}
        self.slices: dict[str, tuple[str, int]] = {}  # head output -> (concat, word offset)
        self.in_b: dict[str, int] = {}  # tensors in the weight buffer -> base
        self.kv_size: dict[str, int] = {}
        self.steps: list = []
        self.last_use = self._last_use()
        # bias buffer: zero words for matmuls, then one region reloaded per layer
        self.zero_words = _words(self.tokens, cfg)
        self.bias_base = self.zero_words
        # weight buffer: one layer's weights at 0, then K^T and V
        self.b_used = 0
        self.kv = Banks(
            cfg.b_depth, "the weight buffer's attention operands"
        )  # K^T and V regions, relative to the weights' end
        self.kv_readers: set[int] = set()  # the matmul GEMMs reading them

    # -- bookkeeping --------------------------------------------------------------
    def consumers(self, t: str) -> list[Node]:
        return list(self.g.consumers(t))

    def _last_use(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for i, n in enumerate(self.g.nodes):
            for t in n.inputs:
                last[t] = i
        for n in self.g.nodes:  # a concat's parts live as long as the concat
            if n.op == "concat":
                for t in n.inputs:
                    last[t] = max(last.get(t, 0), last.get(n.outputs[0], len(self.g.nodes)))
        return last

    def fused(self, node: Node) -> tuple[str, Quant | None, int]:
        """The node's output after a requantize that only it feeds; the index it ends at."""
        ep = epilogue(self.g, node, relu=False)
        return ep.out, ep.quant, self.g.nodes.index(ep.nodes[-1] if ep.nodes else node)

    def ttype(self, t: str) -> FixedType:
        return self.g.tensors[t].type

    def width(self, t: str) -> int:
        return self.g.tensors[t].shape[-1]

    def region(self, t: str) -> Region:
        try:
            return self.regions[t]
        except KeyError:
            raise AccelError(f"tensor {t}: not in the banks (an unsupported graph shape)") from None

    def allocate(self, t: str, what: str) -> Region:
        """Room for tensor ``t`` (or its slice of a concat)."""
        if t in self.slices:
            cat, off = self.slices[t]
            if cat not in self.regions:
                self.allocate(cat, what)
            whole = self.regions[cat]
            r = Region(whole.base + off, _words(self.width(t), self.cfg), whole.stride)
        else:
            words = _words(self.width(t), self.cfg)
            base = self.banks.take(self.blocks * words, what)
            r = Region(base, words, words)
        self.regions[t] = r
        return r

    def release(self, upto: int) -> None:
        """Free every tensor whose last use is at or before node ``upto``.

        A concat's parts are freed with the concat, which owns their region.
        """
        for t, r in list(self.regions.items()):
            if self.last_use.get(t, -1) > upto or t in self.g.outputs:
                continue
            if t not in self.slices:
                self.banks.give(r.base, self.blocks * r.stride)
            del self.regions[t]
        for t in list(self.in_b):
            if self.last_use.get(t, -1) <= upto:
                self.kv.give(self.in_b.pop(t), self.kv_size.pop(t))

    def stored(self, t: str, bits: int, what: str) -> None:
        _check_operand(self.ttype(t), bits, what)

    # -- steps ----------------------------------------------------------------------
    def dense(self, node: Node) -> int:
        cfg = self.cfg
        x = node.inputs[0]
        out, quant, end = self.fused(node)
        w = node.params["weight"].data
        k = ceil_to(w.shape[0], cfg.group)
        w2 = np.zeros((k, w.shape[1]), np.int64)
        w2[: w.shape[0]] = w
        spec = _spec(node, w2, False, quant, w.shape[0])
        alloc = Allocator(cfg)
        alloc.biases(self.bias_base, "zero biases")
        src = self.region(x)
        users = self.consumers(out)
        to_stream = out in self.g.outputs
        b_write, region = None, None
        if len(users) == 1 and users[0].op == "matmul" and users[0].inputs[1] == out:
            b_write = self.b_operand(out, users[0])
        elif not to_stream:
            region = self.allocate(out, node.name)
        gemm, loads = place(
            cfg, spec, alloc, self.tokens, src.base, 0 if region is None else region.base,
            to_stream, Geometry.rows(k),
        )  # fmt: skip
        self.b_used = max(self.b_used, alloc.used["weight"])
        gemm = replace(gemm, a_stride=src.stride, b_write=b_write)
        if region is not None:
            gemm = replace(gemm, out_stride=region.stride)
        t_out = quant.type if quant else spec.drain.acc
        if b_write is not None:
            _check_operand(t_out, cfg.b_bits, f"{node.name} (a matmul's second operand)")
        elif not to_stream:
            _check_operand(t_out, cfg.a_bits, node.name)
        self.steps += [*loads, gemm]
        return end

    def b_operand(self, t: str, mm: Node) -> BWrite:
        """Where a matmul's second operand goes in the weight buffer, and how it is written."""
        cfg = self.cfg
        shape = self.g.tensors[t].shape
        rows_pad, cols_pad = ceil_to(shape[0], cfg.rows), ceil_to(shape[1], cfg.cols)
        words = rows_pad * cols_pad // cfg.cols
        base = self.kv.take(words, f"{t} (in the weight buffer)")
        self.in_b[t] = base
        self.kv_size[t] = words
        if mm.attrs["transpose_b"]:  # K^T: key block rb is B's column tile
            return BWrite(base, cfg.cols, cols_pad, True)
        return BWrite(base, rows_pad, cfg.rows, False)  # V: a token's row is a row of B

    def matmul(self, node: Node) -> int:
        cfg = self.cfg
        a, b = node.inputs
        out, quant, end = self.fused(node)
        if b not in self.in_b:
            raise AccelError(f"node {node.name}: its second operand must come from a dense layer")
        self.stored(a, cfg.a_bits, node.name)
        src = self.region(a)
        bshape = self.g.tensors[b].shape
        tb = node.attrs["transpose_b"]
        k_real, n = (bshape[1], bshape[0]) if tb else bshape
        k = ceil_to(k_real, cfg.group)
        region = None if out in self.g.outputs else self.allocate(out, node.name)
        drain = DrainSpec(node.attrs["acc"], False, quant)
        gemm = Gemm(
            name=node.name, rows=self.tokens, k=k, cols=ceil_to(n, cfg.cols), n=cfg.group,
            dense=True, a_base=src.base, b_base=self.in_b[b], bias_base=0,
            out_base=0 if region is None else region.base, to_stream=region is None,
            drain=drain, useful_macs=self.tokens * k_real * n, geometry=Geometry.rows(k),
            a_stride=src.stride, out_stride=None if region is None else region.stride,
        )  # fmt: skip
        drain.fields(cfg.acc_bits, node.name)
        self.kv_readers.add(id(gemm))
        self.steps.append(gemm)
        return end

    def vec(self, node: Node, vop: VecOp, exact: FixedType, fields: dict, **kw) -> int:
        cfg = self.cfg
        x = node.inputs[0]
        out, quant, end = self.fused(node)
        saturate = kw.pop("saturate", None)
        for t in node.inputs:
            if t in self.regions:
                self.stored(t, cfg.a_bits, node.name)
        src = self.region(x)
        region = self.allocate(out, node.name)
        drain = exact_drain(exact, quant, saturate)
        t_out = drain.quant.type if drain.quant else exact
        _check_operand(t_out, cfg.a_bits, node.name)
        if exact.width > cfg.acc_bits:
            raise AccelError(
                f"node {node.name}: its exact result needs {exact.width} bits, the vector unit "
                f"has {cfg.acc_bits}"
            )
        c = self.width(x)
        step = Vec(
            node.name, vop, self.blocks, src.words, c, src.base, src.stride, region.base,
            region.stride, drain, fields=fields, **kw,
        )  # fmt: skip
        self.steps.append(step)
        return end

    def layernorm(self, node: Node) -> int:
        cfg = self.cfg
        x = node.inputs[0]
        c = self.width(x)
        gamma, beta = node.params["gamma"], node.params.get("beta")
        exact, fields = layernorm_fields(
            self.ttype(x), c, gamma.type, None if beta is None else beta.type,
            node.attrs["norm_frac"], node.attrs["sqrt_guard"], node.attrs["mean_frac"],
        )  # fmt: skip
        words = _words(c, cfg) * cfg.group
        params = np.zeros(2 * words, np.int64)
        params[:c] = gamma.data
        if beta is not None:
            params[words : words + c] = beta.data
        _fits(params, cfg.acc_bits, f"{node.name}: gamma/beta")
        load = bias_words(cfg, params, 2 * words)
        if self.bias_base + len(load) > cfg.bias_depth:
            raise AccelError(f"node {node.name}: gamma and beta do not fit the bias buffer")
        self.steps.append(Load(Target.BIAS, self.bias_base, load))
        return self.vec(node, VecOp.LAYERNORM, exact, fields, bias_base=self.bias_base)

    def add(self, node: Node) -> int:
        a, b = node.inputs
        exact, fields = add_fields(self.ttype(a), self.ttype(b))
        src_b = self.region(b)
        if src_b.stride != self.region(a).stride:
            raise AccelError(f"node {node.name}: both operands must be stored alike")
        return self.vec(node, VecOp.ADD, exact, fields, b_base=src_b.base)

    def add_const(self, node: Node) -> int:
        cfg = self.cfg
        x = node.inputs[0]
        v = node.params["value"]
        const = f"{node.name}.value"
        words = _words(v.data.shape[-1], cfg)
        base = self.banks.take(self.blocks * words, node.name)
        self.regions[const] = Region(base, words, words)
        self.last_use[const] = self.g.nodes.index(node)
        _check_operand(v.type, cfg.a_bits, f"{node.name} constant")
        # loaded with each inference, like the weights: inferences share no state
        self.steps.append(Load(Target.A, base, a_words(cfg, v.data, words * cfg.group)))
        exact, fields = add_fields(self.ttype(x), v.type)
        return self.vec(node, VecOp.ADD, exact, fields, b_base=base)

    def compile(self) -> list:
        cfg = self.cfg
        nodes = self.g.nodes
        for n in nodes:
            if n.op == "concat":
                off = 0
                for t in n.inputs:
                    self.slices[t] = (n.outputs[0], off)
                    off += _words(self.width(t), cfg)
        patches = nodes[0].outputs[0]
        self.stored(nodes[0].inputs[0], cfg.a_bits, "input")
        r = self.allocate(patches, "input patches")
        self.steps.append(("input", r.base))
        i = 1
        while i < len(nodes):
            node = nodes[i]
            op = node.op
            if op == "dense":
                end = self.dense(node)
            elif op == "matmul":
                end = self.matmul(node)
            elif op == "softmax_int":
                x = node.inputs[0]
                if node.attrs["axis"] not in (-1, len(self.g.tensors[x].shape) - 1):
                    raise AccelError(f"node {node.name}: the engine's softmax runs along rows")
                exact, fields = softmax_fields(
                    self.ttype(x), self.width(x), node.attrs["out"], node.name
                )
                end = self.vec(node, VecOp.SOFTMAX, exact, fields, saturate=node.attrs["out"])
            elif op == "gelu_int":
                x = node.inputs[0]
                exact, fields = gelu_fields(self.ttype(x), node.attrs["sig_bits"], node.name)
                end = self.vec(node, VecOp.GELU, exact, fields)
            elif op == "layernorm_int":
                end = self.layernorm(node)
            elif op == "add":
                end = self.add(node)
            elif op == "add_const":
                end = self.add_const(node)
            elif op == "concat":
                end = i
            else:
                raise AccelError(
                    f"node {node.name}: a lone {op} (the engine fuses requantize into the "
                    "step before it)"
                )
            self.release(end)
            i = end + 1
        if self.b_used + self.kv.high > cfg.b_depth:
            raise AccelError(
                f"graph {self.g.name}: weights and attention operands need "
                f"{self.b_used + self.kv.high} words of the weight buffer, which holds "
                f"{cfg.b_depth}"
            )
        # K^T and V sit above the largest layer's weights
        self.steps = [_shift_b(s, self.b_used, self.kv_readers) for s in self.steps]
        return self.steps


def _shift_b(step, offset: int, readers: set[int]):
    """Move the attention operands above the weights: their writers and their readers."""
    if isinstance(step, Gemm):
        if step.b_write is not None:
            step = replace(step, b_write=replace(step.b_write, base=step.b_write.base + offset))
        if id(step) in readers:
            step = replace(step, b_base=step.b_base + offset)
    return step


@dataclass
class TokenProgram:
    program: Program
    tokens: int
    out_cols: list[int]  # each inference's output columns
    bodies: list[tuple[int, int]]  # each inference's steps: (first, end)


def patches(graph: Graph, x: np.ndarray) -> np.ndarray:
    """Raw images (N, H, W, C) as the patch rows the first node makes of them."""
    p = graph.nodes[0].attrs["patch"]
    x = np.asarray(x, dtype=np.int64)
    n, h, w, c = x.shape
    t = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return t.reshape(n, (h // p) * (w // p), p * p * c)


def compile_inferences(cfg: EngineConfig, runs: list[tuple[Graph, np.ndarray]]) -> TokenProgram:
    """One program for a sequence of inferences ``(graph, raw image)``, e.g. alternating tasks.

    Every inference loads what it needs (weights, biases, constants) and leaves
    nothing behind, so its cycles do not depend on what ran before it.
    """
    compiled: dict[int, tuple[list, int, int]] = {}
    prog = Program(cfg)
    tokens = None
    bodies, cols = [], []
    for graph, image in runs:
        if id(graph) not in compiled:
            comp = _Compiler(graph, cfg)
            steps = comp.compile()
            compiled[id(graph)] = (steps, comp.tokens, comp.zero_words)
        steps, t, zero_words = compiled[id(graph)]
        if tokens is None:
            tokens = t
            prog.steps.append(Load(Target.BIAS, 0, bias_words(cfg, None, zero_words * cfg.cols)))
        elif t != tokens:
            raise AccelError("the inferences of one program must have the same number of tokens")
        rows = patches(graph, image[np.newaxis])[0]
        k = ceil_to(rows.shape[-1], cfg.group)
        first = len(prog.steps)
        for s in steps:
            if isinstance(s, tuple):  # the image's patches
                prog.steps.append(Load(Target.A, s[1], a_words(cfg, rows, k)))
            else:
                prog.steps.append(s)
        bodies.append((first, len(prog.steps)))
        cols.append(graph.tensors[graph.outputs[0]].shape[-1])
    return TokenProgram(prog, tokens or 0, cols, bodies)


def compile_tokens(graph: Graph, cfg: EngineConfig, x: np.ndarray) -> TokenProgram:
    """The program running ``graph`` on raw images ``x`` (N, H, W, C), one by one, in a LOOP."""
    tp = compile_inferences(cfg, [(graph, img) for img in np.asarray(x)])
    if len(tp.bodies) > 1:
        first, end = tp.bodies[0]
        tp.program.repeat = Repeat(first, end - first, len(tp.bodies))
    tp.program.instructions()  # refuses a program longer than the instruction memory
    return tp


def step_cycles(tp: TokenProgram, timing, index: int = 0) -> list[tuple[object, int]]:
    """Each step of inference ``index`` with its cycles (its fetch to the next fetch).

    ``timing`` is ``accel.engine.cycles.predict(tp.program)``.
    """
    ends = [0, *timing.ends]
    first, end = tp.bodies[index]
    return [(tp.program.steps[i], ends[i + 1] - ends[i]) for i in range(first, end)]


def token_outputs(tp: TokenProgram, lines: list[str]) -> list[np.ndarray]:
    """Each inference's raw outputs (T, C) from the engine's output words."""
    return token_values(tp, tp.program.split_outputs(lines))


def token_values(tp: TokenProgram, mats: list[np.ndarray]) -> list[np.ndarray]:
    """Each inference's (T, C) from :meth:`Program.split_values`."""
    return [m[: tp.tokens, :c] for m, c in zip(mats, tp.out_cols, strict=True)]
