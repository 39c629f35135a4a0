"""Compile a Graph's dense and conv layers into one engine program over a batch.

Each Dense or Conv2D node, with the ReLU and Requantize after it, is one GEMM
whose drain applies the bias, ReLU and requantization and writes the next
layer's input into the activation banks (two regions, used in turn). The last
layer streams its results out. Weights load once; the batch runs in chunks
that fit the banks, so the program is: weight and bias loads, then per chunk
one A load and one GEMM per layer.

Activations are stored per sample as NHWC pixels with channels padded (the
input to the group, layer outputs to the array's columns), which is also the
flattened order a following dense layer reads: its weight rows are scattered
to match, so a flatten costs nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from accel import nm
from accel.deform import offset_bounds
from accel.engine.compile import (
    Allocator,
    GemmSpec,
    check_a_region,
    place,
    split_columns,
    split_tail,
    spread_lanes,
    spread_offsets,
    spread_reduction,
)
from accel.engine.config import EngineConfig
from accel.engine.isa import Deform, Target
from accel.engine.program import DrainSpec, Geometry, Load, Program, Repeat, a_words, ceil_to
from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.ir.graph import Graph, Node
from accel.ir.ops import conv_padding
from accel.ir.passes import epilogue
from accel.kernels import align_bias, im2col


def _chains(graph: Graph) -> Iterator[tuple[Node, bool, Quant | None]]:
    """Each dot-product node with the ReLU and requantize that fold into its drain."""
    folded: set[str] = set()
    for node in graph.nodes:
        if node.name in folded or node.op == "reshape":
            continue  # a flatten: NHWC storage already is the flattened order
        if node.op not in ("dense", "conv2d", "deform_conv2d"):
            raise AccelError(
                f"node {node.name}: the engine compiler takes dense and conv2d layers (with "
                f"ReLU and requantize); {node.op!r} is not supported yet"
            )
        ep = epilogue(graph, node)
        folded |= ep.names
        yield node, ep.relu, ep.quant


def check(graph: Graph) -> None:
    """A one-line :class:`AccelError` if the layer-chain compiler cannot take ``graph``."""
    if not any(True for _ in _chains(graph)):
        raise AccelError(f"graph {graph.name} has no dense or conv layer for the engine")


def _spec(
    node: Node, w2: np.ndarray, relu: bool, quant: Quant | None, k_real: int | None = None
) -> GemmSpec:
    b = node.params.get("bias")
    acc = node.attrs["acc"]
    return GemmSpec(
        node.name,
        np.zeros((0, w2.shape[0]), np.int64),
        w2,
        DrainSpec(acc, relu, quant),
        node.attrs.get("nm"),
        None if b is None else align_bias(b.data, b.type, acc),
        k_real,
    )


def layers(graph: Graph) -> list[GemmSpec]:
    """A dense-layer graph as GEMM specs (A left empty), weights as (in, out)."""
    specs = []
    for node, relu, quant in _chains(graph):
        if node.op != "dense":
            raise AccelError(f"node {node.name}: only dense layers here, not {node.op!r}")
        specs.append(_spec(node, node.params["weight"].data, relu, quant))
    if not specs:
        raise AccelError(f"graph {graph.name} has no dense layer for the engine")
    return specs


@dataclass
class Placed:
    """A layer as the engine runs it: B in the storage order of its input."""

    spec: GemmSpec
    geometry: Geometry
    out_shape: tuple[int, ...]  # the graph's (H, W, C) or (C,)
    # first layer only: the host unfolds the input into patches (kh, kw, pads, stride)
    im2col: tuple[int, int, tuple[int, int, int, int], int] | None = None
    # first layer only: the lane of each of a pixel's (or patch's) values in its stored
    # words, when the padding is spread over them (see spread_lanes; default: in order)
    lanes: np.ndarray | None = None
    to_offsets: bool = False  # fills the offset memories; the next layer reads the same input
    reduce: bool = False  # an offset conv's reduction split across the columns (see _deform)
    out_stride: int | None = None  # words between row blocks of C (default: C's row)
    final: bool = False  # the last layer (both its parts when it has a tail): streams out
    # the last layer's outputs past its last full column tile, their reduction split
    # across the columns (see split_tail); reads the same input as the part before it
    tail: bool = False


def _stored_weights(w: np.ndarray, stored: int) -> np.ndarray:
    """A (KH, KW, Cin, Cout) conv weight as B rows in storage order: channels padded."""
    kh, kw, cin, cout = w.shape
    out = np.zeros((kh, kw, stored, cout), np.int64)
    out[:, :, :cin] = w
    return out.reshape(kh * kw * stored, cout)


def depthwise_b(w: np.ndarray, cfg: EngineConfig, corners: int = 1) -> np.ndarray:
    """A depthwise (3, 3, C) weight as the (9 * corners * cols, C) B its column tiles read.

    Rows are (tap, corner, channel block of the tile, lane): column ``q`` of a
    tile has its one weight per tap in its own block at lane ``q % group``, so B
    is 1:group sparse and each step feeds every column from one activation word.
    A bilinear sample's four corners each meet the tap's weight.
    """
    taps, c = 9, w.shape[-1]
    q = np.arange(c) % cfg.cols
    b = np.zeros((taps, corners, cfg.cols // cfg.group, cfg.group, c), np.int64)
    b[:, :, q // cfg.group, q % cfg.group, np.arange(c)] = w.reshape(taps, 1, c)
    return b.reshape(taps * corners * cfg.cols, c)


def _check_sampler(node: Node, cfg: EngineConfig, stored: int) -> None:
    mode, r, f = (node.attrs[k] for k in ("mode", "max_offset", "offset_frac"))
    where = f"node {node.name}"
    if stored % cfg.cols:
        raise AccelError(
            f"{where}: a depthwise conv needs its channels stored in whole column tiles "
            f"({stored} stored, {cfg.cols} columns)"
        )
    if mode != "regular" and r > cfg.max_offset:
        raise AccelError(
            f"{where}: offsets range up to {r}, but the engine was built for {cfg.max_offset} "
            f"(its offset memories hold {cfg.offset_bits}-bit values)"
        )
    if mode == "bilinear" and (not cfg.bilinear_frac or f != cfg.bilinear_frac or cfg.group % 2):
        built = (
            f"with {cfg.bilinear_frac} fraction bits"
            if cfg.bilinear_frac
            else "without a bilinear sampler (bilinear_frac 0)"
        )
        raise AccelError(
            f"{where}: bilinear offsets with {f} fraction bits, but the engine was built {built}"
        )


def reduce_offsets(cfg: EngineConfig, k: int, n_off: int) -> bool:
    """Whether an offset conv with reduction ``k`` (a multiple of the group) and ``n_off``
    outputs runs faster with its reduction split across the columns (cycles per row
    block: column tiles x max(steps per tile, drain words per tile)).

    Outputs go to the offset memories one lane at a time, so more than one needs an
    engine whose offset memories take lane writes (the bilinear sampler's).
    """
    if n_off > 1 and not cfg.bilinear_frac:
        return False
    g, drain = cfg.group, cfg.rows * cfg.cols // cfg.group
    plain = -(-n_off // cfg.cols) * max(k, drain)
    split = -(-n_off * g // cfg.cols) * max(k // g, drain)
    return split < plain


def _tail(p: Placed, cfg: EngineConfig) -> list[Placed]:
    """The last layer ``p`` as a plain GEMM on its full column tiles and a tail GEMM for
    the rest (:func:`split_tail`), or as it is."""
    spec = p.spec
    n_out = spec.b.shape[1]
    t = 0
    if spec.pattern is None and p.geometry.positions == 1 and p.im2col is None:
        t = split_tail(cfg, spec.b.shape[0], n_out)
    if not t:
        return [replace(p, final=True)]
    return [
        replace(p, spec=part, out_shape=(*p.out_shape[:-1], part.b.shape[1] // (
            cfg.group if tail else 1)), final=True, tail=tail, reduce=tail)
        for part, tail in split_columns(cfg, spec, t)
    ]  # fmt: skip


def _deform(
    node: Node, relu: bool, quant: Quant | None, shape: tuple[int, ...], stored: int,
    cfg: EngineConfig, split_ok: bool = True,
) -> list[Placed]:  # fmt: skip
    """A deform_conv2d: its offset conv (into the offset memories), then the depthwise GEMM.

    The offset conv's reduction is split across the columns when that is faster
    (:func:`reduce_offsets`) and ``split_ok``.
    """
    mode, s = node.attrs["mode"], node.attrs["stride"]
    if len(shape) != 3:
        raise AccelError(f"node {node.name}: deform_conv2d input must be (H, W, C)")
    _check_sampler(node, cfg, stored)
    h, w_, c = shape
    oh, top, _ = conv_padding(h, 3, s, "same")
    ow, left, _ = conv_padding(w_, 3, s, "same")
    out = []
    words = 1
    if mode != "regular":
        wo = node.params["offset_weight"].data
        k, n_off = wo.shape[0], wo.shape[-1]  # 3x3 or 1x1; 1 or 18 offsets
        ob = node.params.get("offset_bias")
        acc = node.attrs["offset_acc"]
        bias = None if ob is None else align_bias(ob.data, ob.type, acc)
        lo, hi = offset_bounds(mode, node.attrs["max_offset"], node.attrs["offset_frac"])
        q = Quant(FixedType.covering(lo, hi, node.attrs["offset_frac"]), Rounding.RND, Overflow.SAT)
        w2, pattern = _stored_weights(wo, stored), None
        words = ceil_to(n_off, cfg.cols) // cfg.group  # offset words per pixel
        split = split_ok and reduce_offsets(cfg, len(w2), n_off)
        if split:
            w2, bias = spread_offsets(w2, bias, cfg.group)
            pattern = nm.NM(1, cfg.group)
        spec = GemmSpec(
            f"{node.name}.offsets", np.zeros((0, k * k * stored), np.int64), w2,
            DrainSpec(acc, False, q, clip=(lo, hi)), pattern, bias, k * k * c,
        )  # fmt: skip
        _, o_top, _ = conv_padding(h, k, s, "same")
        _, o_left, _ = conv_padding(w_, k, s, "same")
        geo = Geometry(h, w_, stored, k, k, s, o_top, o_left, oh, ow)
        out.append(Placed(spec, geo, (oh, ow, n_off), to_offsets=True, reduce=split,
                          out_stride=words))  # fmt: skip
    corners = 4 if mode == "bilinear" else 1
    spec = _spec(node, depthwise_b(node.params["weight"].data, cfg, corners), relu, quant)
    spec = replace(spec, pattern=nm.NM(1, cfg.group), k_real=9 * cfg.group)
    deform = {"regular": Deform.NONE, "square": Deform.SQUARE, "bilinear": Deform.BILINEAR}[mode]
    # bilinear: the kernel loops run tap (as ky) and corner (as kx)
    kh, kw = (9, 4) if mode == "bilinear" else (3, 3)
    geo = Geometry(h, w_, stored, kh, kw, s, top, left, oh, ow, True, deform, words)
    out.append(Placed(spec, geo, (oh, ow, c)))
    return out


def _storage_rows(shape: tuple[int, ...], pad_c: int) -> np.ndarray:
    """Storage position of each element of a C-order (H, W, C) tensor, channels padded."""
    h, w, c = shape if len(shape) == 3 else (1, 1, shape[-1])
    pix = np.arange(h * w)[:, None] * pad_c + np.arange(c)[None, :]
    return pix.ravel()


def lower(graph: Graph, cfg: EngineConfig, split: bool = True) -> list[Placed]:
    """Every layer with its geometry; channels padded to the group (input) or columns.

    ``split``: offset convs, and the last layer's outputs past its last full column
    tile (:func:`split_tail`), may split their reduction across the columns.
    """
    t = graph.tensors[graph.inputs[0]]
    shape = t.shape if len(t.shape) == 3 else (1, 1, t.size)
    stored = ceil_to(shape[2], cfg.group)  # channels as stored
    out: list[Placed] = []
    for node, relu, quant in _chains(graph):
        w = node.params["weight"].data
        if node.op == "deform_conv2d":
            out += _deform(node, relu, quant, shape, stored, cfg, split)
            shape = out[-1].out_shape
            continue
        if node.op == "conv2d":
            kh, kw, cin, cout = w.shape
            if len(shape) != 3 or shape[2] != cin:
                raise AccelError(f"node {node.name}: conv input must be (H, W, {cin})")
            if node.attrs.get("nm") is not None and cin != stored:
                raise AccelError(
                    f"node {node.name}: an N:M conv needs its {cin} input channels stored "
                    f"unpadded, but they are stored as {stored} (padded to the group of "
                    f"{cfg.group} or to the previous layer's {cfg.cols} columns)"
                )
            s, p = node.attrs["stride"], node.attrs["padding"]
            oh, top, bottom = conv_padding(shape[0], kh, s, p)
            ow, left, right = conv_padding(shape[1], kw, s, p)
            unfold = None
            if not out and cin != stored:
                # a thin first layer (an image's few channels): the host loads patches,
                # a 1x1 conv over them wastes no MACs on padded channels; the taps are
                # spread evenly over the words, so a word keeps ``per`` lanes (N:M) and
                # a patch costs ceil(taps / per) * per steps, not its padded length
                w2 = w.reshape(-1, cout)  # spread_reduction pads it
                geo = Geometry(oh, ow, ceil_to(len(w2), cfg.group), out_h=oh, out_w=ow)
                unfold = (kh, kw, (top, bottom, left, right), s)
            else:
                w2 = _stored_weights(w, stored)
                geo = Geometry(shape[0], shape[1], stored, kh, kw, s, top, left, oh, ow)
            spec = _spec(node, w2, relu, quant, kh * kw * cin)
            spread = None
            if unfold is not None:
                spec, spread = spread_reduction(cfg, spec), spread_lanes(len(w2), cfg.group)
            out.append(Placed(spec, geo, (oh, ow, cout), unfold, spread))
            shape = (oh, ow, cout)
            stored = ceil_to(cout, cfg.cols)
            continue
        else:
            rows = _storage_rows(shape, stored)
            if len(rows) != w.shape[0]:
                raise AccelError(f"node {node.name}: dense input does not match {shape}")
            wp = np.zeros((shape[0] * shape[1] * stored, w.shape[1]), np.int64)
            wp[rows] = w
            geo = Geometry.rows(len(wp))
            spread = None
            if not out and shape[:2] == (1, 1) and node.attrs.get("nm") is None:
                # a first dense layer of K features, not a multiple of the group: the
                # host spreads the padding over the words and the layer runs N:M
                spread = spread_lanes(len(w), cfg.group)
            if spread is not None:
                spec = spread_reduction(cfg, _spec(node, w, relu, quant))
            else:
                spec = _spec(node, wp, relu, quant, w.shape[0])
            shape = (1, 1, w.shape[1])
        out.append(Placed(spec, geo, shape, lanes=spread))
        stored = ceil_to(shape[2], cfg.cols)
    if not out:
        raise AccelError(f"graph {graph.name} has no dense or conv2d layer for the engine")
    return out[:-1] + (_tail(out[-1], cfg) if split else [replace(out[-1], final=True)])


def _check_operand(t, bits: int, what: str) -> None:
    need = t.width + (0 if t.signed else 1)
    if need > bits:
        raise AccelError(f"{what}: {t} needs {need}-bit signed operands, the engine has {bits}")


def _pad_input(x: np.ndarray, shape: tuple[int, ...], first: Placed) -> np.ndarray:
    """Raw inputs (N, *shape) as stored rows: NHWC pixels (or patches), channels padded."""
    x = np.asarray(x, dtype=np.int64)
    if first.im2col is not None:
        kh, kw, pads, stride = first.im2col
        cols, (n, oh, ow) = im2col(x.reshape(len(x), *shape), kh, kw, pads, stride)
        x, shape = cols.reshape(n, oh * ow, -1), (oh, ow, cols.shape[1])
    h, w, c = shape if len(shape) == 3 else (1, 1, shape[-1])
    out = np.zeros((len(x), h * w, first.geometry.channels), np.int64)
    lanes = np.arange(c) if first.lanes is None else first.lanes
    out[:, :, lanes] = x.reshape(len(x), h * w, c)
    return out.reshape(len(x), -1)


def compile_graph(graph: Graph, cfg: EngineConfig, x: np.ndarray) -> tuple[Program, list[int]]:
    """The program for raw inputs ``x`` (N, ...); returns it and the samples of each chunk.

    Offset convs split across the columns take ``group`` times the bias words (a
    bilinear one 18 instead of 3): a graph that fits the buffers only without
    the split compiles without it.
    """
    layers_ = lower(graph, cfg)
    try:
        return _compile(graph, cfg, x, layers_)
    except AccelError:
        if not any(p.reduce for p in layers_):
            raise
    return _compile(graph, cfg, x, lower(graph, cfg, split=False))


def _compile(
    graph: Graph, cfg: EngineConfig, x: np.ndarray, layers_: list[Placed]
) -> tuple[Program, list[int]]:
    t_in = graph.tensors[graph.inputs[0]]
    _check_operand(t_in.type, cfg.a_bits, "input")
    # layers whose results the banks hold (a tail reads the input of the part before it)
    banked = [p for p in layers_ if not p.to_offsets and not p.tail]
    for a, b in itertools.pairwise(banked):
        t = a.spec.drain.quant.type if a.spec.drain.quant else a.spec.drain.acc
        _check_operand(t, cfg.a_bits, f"{b.spec.name} input")
    rows = _pad_input(x, t_in.shape, layers_[0])
    # words per sample block of every tensor the banks hold
    words = [rows.shape[1] // cfg.group]
    words += [
        p.geometry.positions * ceil_to(p.spec.b.shape[1], cfg.cols) // cfg.group for p in banked
    ]
    per_block = max(words)
    # two regions of sample blocks; the largest chunk that fits, and at most the batch
    blocks = cfg.a_depth // (2 * per_block)
    if blocks < 1:
        raise AccelError(
            f"{layers_[0].spec.name}: a block of {cfg.rows} samples needs {2 * per_block} words "
            f"per bank (two regions), the banks hold {cfg.a_depth}"
        )
    for p in layers_:
        if p.to_offsets:  # a chunk's offsets must fit the offset memories
            need = p.geometry.positions * p.out_shape[-1]
            words = p.geometry.positions * p.out_stride
            blocks = min(blocks, cfg.offset_depth // words)
            if blocks < 1:
                raise AccelError(
                    f"{p.spec.name}: {need} offsets per sample take {words} words, the offset "
                    f"memories hold {cfg.offset_depth}"
                )
    chunk = min(blocks * cfg.rows, ceil_to(max(len(rows), 1), cfg.rows))
    region = blocks * per_block
    alloc = Allocator(cfg)
    prog = Program(cfg)
    placed = []
    for p in layers_:
        gemm, loads = place(cfg, p.spec, alloc, chunk, 0, 0, False, p.geometry)
        prog.steps += loads
        placed.append(gemm)
    sizes = []
    first_chunk = len(prog.steps)
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        sizes.append(len(part))
        prog.steps.append(Load(Target.A, 0, a_words(cfg, part, part.shape[1])))
        li = 0  # the region the next layer reads
        for p, gemm in zip(layers_, placed, strict=True):
            g = replace(
                gemm,
                rows=len(part),
                useful_macs=gemm.useful_macs // chunk * len(part),  # placed for a full chunk
                a_base=(li % 2) * region,
                out_base=0 if p.to_offsets else ((li + 1) % 2) * region,
                to_stream=p.final,
                to_offsets=p.to_offsets,
                reduce=p.reduce,
                tail=p.tail and len(layers_) > 1 and layers_[-2].final,
                out_stride=p.out_stride,
            )
            li += not (p.to_offsets or p.final)
            check_a_region(cfg, g.a_words(cfg), g.name)
            prog.steps.append(g)
    full = sum(1 for n in sizes if n == chunk)
    if full > 1:  # the full chunks run one body in a LOOP
        prog.repeat = Repeat(first_chunk, 1 + len(placed), full)
    prog.instructions()  # refuses a program longer than the instruction memory
    return prog, sizes


def outputs(program: Program, sizes: list[int], graph: Graph, lines: list[str]) -> np.ndarray:
    """The graph's output tensor (N, *shape) from the engine's output words."""
    return output_values(program, sizes, graph, program.split_outputs(lines))


def output_values(
    program: Program, sizes: list[int], graph: Graph, mats: list[np.ndarray]
) -> np.ndarray:
    """The graph's output tensor (N, *shape) from :meth:`Program.split_values`."""
    shape = graph.tensors[graph.outputs[0]].shape
    c = shape[-1]
    pos = int(np.prod(shape[:-1], dtype=np.int64))
    parts = [m[:n].reshape(n, pos, -1)[:, :, :c] for m, n in zip(mats, sizes, strict=True)]
    return np.concatenate(parts).reshape(-1, *shape)
