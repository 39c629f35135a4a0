"""Compile GEMMs onto the engine: tiling, weight packing and buffer allocation.

Tiling is fixed by the array: a GEMM ``C (R x C) = A (R x K) @ B (K x C)`` runs as
a grid of ``rows x cols`` output tiles, column tile outer and row block inner,
each tile sweeping K one group at a time. What the compiler decides is how many
weights of each group a tile reads (``n``: the declared N:M pattern mapped onto
the hardware's group), where every operand lives in the buffers, and the
stream words that carry them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accel import nm
from accel.engine.config import EngineConfig
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


def compile_gemms(cfg: EngineConfig, specs: list[GemmSpec]) -> Program:
    """Independent GEMMs, each loading its operands (over the previous ones) and streaming C."""
    prog = Program(cfg)
    for spec in specs:
        alloc = Allocator(cfg)
        a = np.asarray(spec.a, dtype=np.int64)
        if a.ndim != 2 or np.asarray(spec.b).ndim != 2 or a.shape[1] != spec.b.shape[0]:
            raise AccelError(f"{spec.name}: A {a.shape} and B {np.shape(spec.b)} do not multiply")
        _fits(a, cfg.a_bits, f"{spec.name}: A")
        gemm, loads = place(cfg, spec, alloc, len(a), 0, 0, True)
        check_a_region(cfg, gemm.a_words(cfg), spec.name)
        prog.steps += [*loads, Load(Target.A, 0, a_words(cfg, a, gemm.k)), gemm]
    return prog
