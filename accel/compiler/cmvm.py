"""Constant matrix-vector products as shared adder graphs (multiplier-free layers).

A dataflow layer at reuse 1 multiplies its inputs by constant weights, so its
products need no multipliers: every weight is a sum of signed powers of two,
and sums of shifted inputs that several outputs need are computed once. The
adder graph comes from da4ml's CMVM solver (``da4ml.cmvm.solve``, a real,
published solver: Sun et al., "da4ml: distributed arithmetic for real-time
neural networks on FPGAs"); this module only turns its solution into a plain
list of ``a +- (b << s)`` operations on integers, with each value's range and
adder depth, and checks it against the matrix product it replaces, exactly,
before any hardware is generated from it.

Every value is an integer with its own fraction bits (da4ml may split a
constant into halves), and an adder aligns its two terms with left shifts
only, so the hardware adds integers and never carries bits known to be zero.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import ceil, log2

import numpy as np

from accel.errors import AccelError
from accel.fixed import FixedType


@dataclass(frozen=True)
class Term:
    """``+-(v[index] * 2**shift)``; a negative shift drops low bits known to be zero."""

    index: int
    shift: int = 0
    neg: bool = False

    def scaled(self, s: int) -> Term:
        return Term(self.index, self.shift + s, self.neg)

    def negated(self) -> Term:
        return Term(self.index, self.shift, not self.neg)


@dataclass(frozen=True)
class Add:
    """``a + b`` (each a :class:`Term`); the result is an integer ``V`` with the real
    value ``V * 2**-frac``, in ``lo..hi``."""

    a: Term
    b: Term
    frac: int
    lo: int
    hi: int
    depth: int  # adders on the longest path from an input


def _shifted(x, k: int):
    """``x * 2**k`` for integer ``x``; a negative ``k`` must only drop zero bits."""
    if k >= 0:
        return x * (1 << k)
    d = 1 << -k
    if any(int(e) % d for e in np.ravel(x)):
        raise AssertionError("an adder-graph shift dropped non-zero bits")
    return x // d


@dataclass(frozen=True)
class AdderGraph:
    """``n_in`` integer inputs (values 0..n_in-1), then one value per adder; output
    ``o`` is the term ``outputs[o]`` (``None``: a constant zero), an integer."""

    n_in: int
    in_lo: int
    in_hi: int
    adds: tuple[Add, ...]
    outputs: tuple[Term | None, ...]

    @property
    def depth(self) -> int:
        return max((a.depth for a in self.adds), default=0)

    def frac(self, i: int) -> int:
        return 0 if i < self.n_in else self.adds[i - self.n_in].frac

    def depth_of(self, i: int) -> int:
        return 0 if i < self.n_in else self.adds[i - self.n_in].depth

    def bounds(self, i: int) -> tuple[int, int]:
        if i < self.n_in:
            return self.in_lo, self.in_hi
        a = self.adds[i - self.n_in]
        return a.lo, a.hi

    def width(self, i: int) -> int:
        """Bits of value ``i`` as a signed integer."""
        lo, hi = self.bounds(i)
        return max(abs(lo), hi + 1).bit_length() + 1

    def align(self, t: Term, frac: int) -> int:
        """The left shift that puts term ``t`` on a grid of ``frac`` fraction bits."""
        return t.shift - self.frac(t.index) + frac

    def adder_bits(self) -> int:
        return sum(self.width(self.n_in + k) for k in range(len(self.adds)))

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        """Exact integer evaluation of raw inputs ``x`` (N, n_in) -> (N, n_out)."""
        x = np.asarray(x, dtype=object)
        v = [x[:, i] for i in range(self.n_in)]

        def term(t: Term, frac: int):
            y = _shifted(v[t.index], self.align(t, frac))
            return -y if t.neg else y

        for op in self.adds:
            v.append(term(op.a, op.frac) + term(op.b, op.frac))
        out = np.zeros((len(x), len(self.outputs)), dtype=object)
        for o, t in enumerate(self.outputs):
            if t is not None:
                out[:, o] = term(t, 0)
        return out.astype(np.int64)


def _coef(coef: list[np.ndarray], fracs: list[int], t: Term, frac: int) -> np.ndarray:
    """The input coefficients of term ``t`` on a grid of ``frac`` fraction bits."""
    k = t.shift - fracs[t.index] + frac
    c = coef[t.index] * (1 << k) if k >= 0 else coef[t.index] // (1 << -k)
    return -c if t.neg else c


def _frac(step: float) -> int:
    return max(0, -round(log2(step))) if 0 < step < float("inf") else 0


def solve(w: np.ndarray, in_type: FixedType, share: int = 0, block: int = 0) -> AdderGraph:
    """The adder graph of ``x @ w`` for raw integer inputs of ``in_type`` and integer
    weights ``w`` (n_in, n_out), checked exactly against the product.

    ``share``: outputs per solved group (consecutive columns; 0, all of them).
    ``block``: inputs per solved block (consecutive rows; 0, all of them); each
    output's partial sums from the blocks are added by a balanced tree, neighbouring
    blocks first. Subexpressions are shared only inside a tile (a block's inputs and
    a group's outputs): more adders, but each adder's operands come from its own
    tile, which a placer can keep together, and a block's inputs reach only its
    tiles.
    """
    w = np.asarray(w, dtype=np.int64)
    n_in, n_out = w.shape
    share = share if 0 < share < n_out else n_out
    block = block if 0 < block < n_in else n_in
    if (share, block) == (n_out, n_in):
        return _solve(w, in_type)
    tiles = []
    for j in range(0, n_out, share):
        for i in range(0, n_in, block):
            sub = w[i : i + block, j : j + share]
            cols = np.flatnonzero(np.abs(sub).sum(axis=0))  # the outputs this block reaches
            if len(cols):
                tiles.append((_solve(sub[:, cols], in_type), i, j + cols))
    graph = _assemble(n_in, n_out, in_type, tiles)
    _check(graph, w, in_type)
    return graph


def _assemble(
    n_in: int, n_out: int, in_type: FixedType, tiles: list[tuple[AdderGraph, int, np.ndarray]]
) -> AdderGraph:
    """Tiles' adder graphs (each over inputs ``first..``, giving outputs ``cols``) as one
    graph over all inputs: their adders in turn, then per output a balanced tree over
    its partial sums (disjoint inputs, so each sum's range is the sum of the ranges)."""
    adds: list[Add] = []
    partial: list[list[Term]] = [[] for _ in range(n_out)]
    for g, first, cols in tiles:
        base = n_in + len(adds)

        def moved(t: Term, g: AdderGraph = g, first: int = first, base: int = base) -> Term:
            k = first + t.index if t.index < g.n_in else base + t.index - g.n_in
            return Term(k, t.shift, t.neg)

        adds += [replace(a, a=moved(a.a), b=moved(a.b)) for a in g.adds]
        for o, t in zip(cols, g.outputs, strict=True):
            if t is not None:
                partial[o].append(moved(t))
    lo_in, hi_in = in_type.min_int, in_type.max_int
    frac = [0] * n_in + [a.frac for a in adds]
    depth = [0] * n_in + [a.depth for a in adds]
    bounds = [(lo_in, hi_in)] * n_in + [(a.lo, a.hi) for a in adds]

    def span(t: Term, f: int) -> tuple[int, int]:
        lo, hi = (v << (t.shift - frac[t.index] + f) for v in bounds[t.index])
        return (-hi, -lo) if t.neg else (lo, hi)

    def add(a: Term, b: Term) -> Term:
        f = max(0, frac[a.index] - a.shift, frac[b.index] - b.shift)
        (la, ha), (lb, hb) = span(a, f), span(b, f)
        adds.append(Add(a, b, f, la + lb, ha + hb, 1 + max(depth[a.index], depth[b.index])))
        frac.append(f)
        depth.append(adds[-1].depth)
        bounds.append((la + lb, ha + hb))
        return Term(n_in + len(adds) - 1)

    outputs: list[Term | None] = []
    for terms in partial:
        while len(terms) > 1:
            terms = [add(*terms[k : k + 2]) if k + 1 < len(terms) else terms[k]
                     for k in range(0, len(terms), 2)]  # fmt: skip
        outputs.append(terms[0] if terms else None)
    return AdderGraph(n_in, lo_in, hi_in, tuple(adds), tuple(outputs))


def _solve(w: np.ndarray, in_type: FixedType) -> AdderGraph:
    try:
        import da4ml.cmvm as cmvm
    except ImportError:
        raise AccelError("multiplier-free layers need da4ml (pip install da4ml)") from None
    w = np.asarray(w, dtype=np.int64)
    n_in, _ = w.shape
    if np.abs(w).max(initial=0) >= 1 << 24:
        raise AccelError("a weight too large for the adder-graph solver (24 bits)")
    lo, hi = in_type.min_int, in_type.max_int
    qint = [(float(lo), float(hi), 1.0)] * n_in
    # C order: da4ml reads the matrix's buffer as row-major whatever its strides (a
    # column selection, F-ordered, came back as another matrix's adder graph)
    w32 = np.ascontiguousarray(w, dtype=np.float32)
    pipe = cmvm.solve(w32, qintervals=qint, latencies=[0.0] * n_in)
    adds: list[Add] = []
    depth = [0] * n_in
    # every value as exact coefficients of the inputs (times 2**-frac), for its range:
    # da4ml's own intervals do not always bound the value (its sign conventions differ)
    coef: list[np.ndarray] = [np.eye(n_in, dtype=object)[i] for i in range(n_in)]
    fracs = [0] * n_in
    stage_in: list[Term | None] = [Term(i) for i in range(n_in)]
    for s in pipe.solutions:
        stage_in = [
            None if t is None else t.scaled(int(sh))
            for t, sh in zip(stage_in, s.inp_shifts, strict=True)
        ]
        buf: list[Term | None] = []
        for op in s.ops:
            if op.opcode == -1:
                buf.append(stage_in[op.id0])
                continue
            if op.opcode not in (0, 1):
                raise AccelError(f"da4ml returned an op (opcode {op.opcode}) that is not an adder")
            a, b = buf[op.id0], buf[op.id1].scaled(int(op.data))
            b = b.negated() if op.opcode == 1 else b
            f = max(_frac(op.qint.step), fracs[a.index] - a.shift, fracs[b.index] - b.shift)
            d = 1 + max(depth[a.index], depth[b.index])
            c = _coef(coef, fracs, a, f) + _coef(coef, fracs, b, f)
            lo_v = int(sum(min(k * lo, k * hi) for k in c))
            hi_v = int(sum(max(k * lo, k * hi) for k in c))
            adds.append(Add(a, b, f, lo_v, hi_v, d))
            depth.append(d)
            coef.append(c)
            fracs.append(f)
            buf.append(Term(n_in + len(adds) - 1))
        stage_in = [
            None if idx < 0 or buf[idx] is None else
            (buf[idx].scaled(int(shift)).negated() if neg else buf[idx].scaled(int(shift)))
            for idx, shift, neg in zip(s.out_idxs, s.out_shifts, s.out_negs, strict=True)
        ]  # fmt: skip
    graph = AdderGraph(n_in, lo, hi, tuple(adds), tuple(stage_in))
    _check(graph, w, in_type)
    return graph


def _check(graph: AdderGraph, w: np.ndarray, t: FixedType) -> None:
    """The adder graph equals ``x @ w`` on the type's corners and random inputs."""
    rng = np.random.default_rng(0)
    n = graph.n_in
    x = np.concatenate(
        [
            np.full((1, n), t.min_int),
            np.full((1, n), t.max_int),
            np.zeros((1, n), np.int64),
            rng.integers(t.min_int, t.max_int + 1, (61, n)),
            np.where(w > 0, t.max_int, t.min_int).T[: min(16, w.shape[1])],
        ]
    )
    want = x.astype(object) @ w.astype(object)
    if not np.array_equal(graph.evaluate(x), np.asarray(want, dtype=np.int64)):
        raise AssertionError("da4ml's adder graph differs from the matrix product")


def levels(graph: AdderGraph, per_stage: int) -> int:
    """Pipeline registers an adder graph needs with a register every ``per_stage`` levels."""
    return ceil(graph.depth / per_stage) if graph.depth else 0
