"""Compile GEMMs onto the engine: tiling, weight packing and buffer allocation.

Tiling is fixed by the array: a GEMM ``C (R x C) = A (R x K) @ B (K x C)`` runs as
a grid of ``rows x cols`` output tiles, column tile outer and row block inner,
each tile sweeping K one group at a time. What the compiler decides is how many
weights of each group a tile reads (``n``: the declared N:M pattern mapped onto
the hardware's group), where every operand lives in the buffers, and the
stream words that carry them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from accel import nm
from accel.engine.config import EngineConfig
from accel.engine.cycles import DRAIN_LATENCY, ISSUE_TO_DRAIN, reduce_latency
from accel.engine.isa import Target
from accel.engine.program import (
    DrainSpec,
    Gemm,
    Geometry,
    Load,
    Program,
    a_words,
    b_words,
    bias_words,
    ceil_to,
)
from accel.errors import AccelError


def kept_per_group(cfg: EngineConfig, pattern: nm.NM | None) -> int:
    """Weights a tile reads per hardware group for a layer declared ``pattern``.

    N:M with M dividing the group is (N * group / M):group; with the group
    dividing M each hardware group holds at most N; otherwise the layer runs dense.
    """
    g = cfg.group
    if pattern is None:
        return g
    if g % pattern.m == 0:
        return pattern.n * (g // pattern.m)
    if pattern.m % g == 0:
        return min(pattern.n, g)
    return g


def lanes_per_word(k: int, group: int) -> int:
    """Lanes a reduction of ``k`` keeps per word, spread evenly over ``ceil(k / group)``."""
    return -(-k // -(-k // group))


def spread_lanes(k: int, group: int) -> np.ndarray | None:
    """The lane (row of B, column of A) of each of a reduction's ``k`` terms with the
    padding spread evenly over its ``ceil(k / group)`` words (``per`` lanes to a word,
    K = 10: 0-4 and 8-12), so it runs as ``per``:``group``; ``None`` when no word
    would keep fewer than ``group`` (:func:`spread_reduction`)."""
    per = lanes_per_word(k, group)
    if per == group:
        return None
    t = np.arange(k)
    return t // per * group + t % per


@dataclass
class GemmSpec:
    """One GEMM with its operands as raw integers; ``pattern`` is B's along K."""

    name: str
    a: np.ndarray
    b: np.ndarray
    drain: DrainSpec
    pattern: nm.NM | None = None
    bias: np.ndarray | None = None  # aligned to the accumulator
    k_real: int | None = None  # reduction length before storage padding (for MAC counts)
    # ``pattern`` only packs the lanes (a thin first layer's patch): every one of the
    # ``k_real`` weights is useful
    packed: bool = False


def _fits(x: np.ndarray, bits: int, what: str) -> None:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if x.size and (x.min() < lo or x.max() > hi):
        raise AccelError(f"{what}: values outside the engine's {bits}-bit signed operands")


def _useful_macs(rows: int, shape: tuple[int, int], pattern: nm.NM | None) -> int:
    """MACs the algorithm needs: all of a dense GEMM, the kept N of M of a sparse one.

    Structural, not data-dependent: a zero that happens to sit in a dense
    operand (a ReLU'd gradient, say) still costs a MAC in any dense design.
    """
    k, c = shape
    kept = k if pattern is None else k // pattern.m * pattern.n
    return rows * kept * c


class Allocator:
    """Bump allocation in the weight and bias buffers, with one-line overflow errors."""

    def __init__(self, cfg: EngineConfig) -> None:
        self.cfg = cfg
        self.used = {"weight": 0, "bias": 0}

    def _take(self, buffer: str, words: int, depth: int, what: str) -> int:
        base = self.used[buffer]
        self.used[buffer] += words
        if self.used[buffer] > depth:
            raise AccelError(
                f"{what}: {'biases' if buffer == 'bias' else 'weights'} need "
                f"{self.used[buffer]} words of the {buffer} buffer, "
                f"which holds {depth}"
            )
        return base

    def weights(self, words: int, what: str) -> int:
        return self._take("weight", words, self.cfg.b_depth, what)

    def biases(self, words: int, what: str) -> int:
        return self._take("bias", words, self.cfg.bias_depth, what)


def check_a_region(cfg: EngineConfig, words: int, what: str) -> None:
    if words > cfg.a_depth:
        raise AccelError(
            f"{what}: activations need {words} words per bank, the banks hold {cfg.a_depth}"
        )


def place(
    cfg: EngineConfig,
    spec: GemmSpec,
    alloc: Allocator,
    rows: int,
    a_base: int,
    out_base: int,
    to_stream: bool,
    geometry: Geometry | None = None,
) -> tuple[Gemm, list[Load]]:
    """A GEMM with its weights and biases allocated; the loads that fill them.

    ``geometry`` says how A is read (default: plain rows of K features).
    """
    b = np.asarray(spec.b, dtype=np.int64)
    _fits(b, cfg.b_bits, f"{spec.name}: B")
    if spec.pattern is not None:
        nm.check(b, spec.pattern, 0, spec.name)
    k = ceil_to(b.shape[0], cfg.group)
    cols = ceil_to(b.shape[1], cfg.cols)
    n = kept_per_group(cfg, spec.pattern)
    dense = n == cfg.group
    gemm = Gemm(
        name=spec.name,
        rows=rows,
        k=k,
        cols=cols,
        n=n,
        dense=dense,
        a_base=a_base,
        b_base=0,
        bias_base=0,
        out_base=out_base,
        to_stream=to_stream,
        drain=spec.drain,
        useful_macs=_useful_macs(
            rows, (spec.k_real or b.shape[0], b.shape[1]), None if spec.packed else spec.pattern
        )
        * (geometry or Geometry()).positions,
        geometry=geometry or Geometry.rows(k),
    )
    words = b_words(cfg, b, k, cols, n, dense, spec.name)
    gemm.b_base = alloc.weights(len(words), spec.name)
    biases = bias_words(cfg, spec.bias, cols)
    gemm.bias_base = alloc.biases(len(biases), spec.name)
    return gemm, [Load(Target.B, gemm.b_base, words), Load(Target.BIAS, gemm.bias_base, biases)]


def spread_offsets(w2: np.ndarray, bias: np.ndarray | None, group: int):
    """A (K, n) B and bias with each output's reduction split across ``group`` columns
    (an offset conv, a layer's tail).

    Output ``o`` gets columns ``o * group + l`` (``l < group``), and column ``l``
    keeps the taps ``k`` with ``k % group == l``: B is 1:group sparse, so every
    column takes one activation of each group word and a group of taps costs one
    step instead of ``group``. The drain sums the word (``Gemm.reduce``); the
    bias rides on lane 0.
    """
    k, n = w2.shape
    b = np.zeros((k, n, group), np.int64)
    b[np.arange(k), :, np.arange(k) % group] = w2
    out = None
    if bias is not None:
        out = np.zeros((n, group), np.int64)
        out[:, 0] = bias
        out = out.reshape(-1)
    return b.reshape(k, n * group), out


def split_tail(cfg: EngineConfig, k: int, n_out: int) -> int:
    """How many of a dense last layer's ``n_out`` outputs (reduction ``k``, a multiple of
    the group) run as a tail GEMM whose reduction is split across the columns: the
    outputs past its last full column tile, when that is faster (0: none).

    The plain GEMM spends a whole column tile (``max(k, drain)`` cycles per row
    block) on them; the tail spends ``max(k / group, drain)`` per ``cols / group``
    of them, plus a second GEMM's fill once per chunk (counted as if every
    chunk had one row block).
    """
    t = n_out % cfg.cols
    if not t or cfg.group == 1:
        return 0
    drain = cfg.rows * cfg.cols // cfg.group
    tiles = -(-t * cfg.group // cfg.cols)
    fill = 2 + ISSUE_TO_DRAIN + 2 + DRAIN_LATENCY + drain + reduce_latency(cfg)
    split = tiles * max(k // cfg.group, drain) + fill
    return t if split < max(k, drain) else 0


def split_columns(cfg: EngineConfig, spec: GemmSpec, t: int) -> list[tuple[GemmSpec, bool]]:
    """``spec`` as a GEMM on all but its last ``t`` columns (none when that is all of
    them) and a tail GEMM for those, its reduction split across the columns
    (:func:`spread_offsets`); each with whether it is the tail."""
    c, bias = spec.b.shape[1], spec.bias
    b, tb = spread_offsets(spec.b[:, c - t :], None if bias is None else bias[c - t :], cfg.group)
    tail = replace(spec, name=f"{spec.name}.tail", b=b, bias=tb, pattern=nm.NM(1, cfg.group))
    if c == t:
        return [(tail, True)]
    main = replace(spec, b=spec.b[:, : c - t], bias=None if bias is None else bias[: c - t])
    return [(main, False), (tail, True)]


def spread_reduction(cfg: EngineConfig, spec: GemmSpec) -> GemmSpec:
    """A dense GEMM whose reduction is not a multiple of the group, with its padding spread
    over the words (:func:`spread_lanes`) and run as N:M with the sparse mode's
    indices: ``ceil(K / per) * per`` steps per tile instead of ``ceil(K / group) *
    group``. Other GEMMs as they are."""
    k = np.shape(spec.b)[0]
    lanes = spread_lanes(k, cfg.group) if spec.pattern is None else None
    if lanes is None:
        return spec
    size = -(-k // cfg.group) * cfg.group
    a = np.zeros((len(spec.a), size), np.int64)
    a[:, lanes] = spec.a
    b = np.zeros((size, np.shape(spec.b)[1]), np.int64)
    b[lanes] = spec.b
    pattern = nm.NM(lanes_per_word(k, cfg.group), cfg.group)
    return replace(spec, a=a, b=b, pattern=pattern, packed=True, k_real=spec.k_real or k)


def compile_gemms(cfg: EngineConfig, specs: list[GemmSpec]) -> Program:
    """Independent GEMMs, each loading its operands (over the previous ones) and streaming C.

    A reduction that is not a multiple of the group runs with its padding spread over
    its words (:func:`spread_reduction`); a dense GEMM's columns past its last full
    column tile run as a tail with the reduction split across the columns
    (:func:`split_tail`), whose results :meth:`Program.split_values` appends to C."""
    prog = Program(cfg)
    for spec in specs:
        alloc = Allocator(cfg)
        a = np.asarray(spec.a, dtype=np.int64)
        if a.ndim != 2 or np.asarray(spec.b).ndim != 2 or a.shape[1] != spec.b.shape[0]:
            raise AccelError(f"{spec.name}: A {a.shape} and B {np.shape(spec.b)} do not multiply")
        _fits(a, cfg.a_bits, f"{spec.name}: A")
        spec = spread_reduction(cfg, replace(spec, a=a))
        a = spec.a
        k, c = spec.b.shape
        t = split_tail(cfg, k, c) if spec.pattern is None else 0
        parts = split_columns(cfg, spec, t) if t else [(spec, False)]
        gemms, loads = [], []
        for part, is_tail in parts:
            gemm, more = place(cfg, part, alloc, len(a), 0, 0, True)
            gemm.reduce, gemm.tail = is_tail, is_tail and c > t
            check_a_region(cfg, gemm.a_words(cfg), spec.name)
            gemms.append(gemm)
            loads += more
        prog.steps += [*loads, Load(Target.A, 0, a_words(cfg, a, gemms[0].k)), *gemms]
    return prog
