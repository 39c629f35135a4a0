"""N:M structured sparsity: patterns, magnitude masks and the compressed weight format.

A weight matrix ``w`` of shape ``(K, C)`` is N:M sparse along ``K`` when every
column keeps at most ``N`` non-zeros in each group of ``M`` consecutive rows.
That is the forward pattern of SAT/BDWP (groups along a dense layer's input
dimension). The backward pattern is the same rule on the transpose: groups of
``M`` consecutive *columns* in each row, so that ``w.T`` is N:M along its first
axis. Every function here takes the grouping axis explicitly.

The compressed form keeps, per group and column, exactly ``N`` (value, index)
pairs: the values in ascending index order, padded with zero values at unused
indices when a group has fewer than ``N`` non-zeros. Indices need
``ceil(log2 M)`` bits. Compression and decompression are exact inverses on
any array that satisfies the pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accel.errors import AccelError


@dataclass(frozen=True)
class NM:
    """An N:M pattern: at most ``n`` non-zeros in every group of ``m``."""

    n: int
    m: int

    def __post_init__(self) -> None:
        if self.m < 1 or self.n < 1:
            raise AccelError(f"N:M pattern needs N, M >= 1, got {self.n}:{self.m}")
        if self.n > self.m:
            raise AccelError(f"N:M pattern {self.n}:{self.m}: N must not exceed M")

    @classmethod
    def parse(cls, text: str | NM | tuple[int, int] | list[int]) -> NM:
        """``"2:8"``, ``(2, 8)`` or an NM."""
        if isinstance(text, NM):
            return text
        if isinstance(text, list | tuple):
            n, m = text
            return cls(int(n), int(m))
        try:
            n, m = (int(v) for v in str(text).split(":"))
        except ValueError:
            raise AccelError(f"N:M pattern must look like '2:8', got {text!r}") from None
        return cls(n, m)

    @property
    def dense(self) -> bool:
        return self.n == self.m

    @property
    def index_bits(self) -> int:
        return max(1, (self.m - 1).bit_length())

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"

    def to_json(self) -> list[int]:
        return [self.n, self.m]


def _groups(w: np.ndarray, nm: NM, axis: int, what: str) -> np.ndarray:
    """View of ``w`` (2-D) as (groups, M, columns) along ``axis``."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise AccelError(f"{what}: N:M needs a 2-D weight, got shape {w.shape}")
    a = w if axis == 0 else w.T
    if a.shape[0] % nm.m:
        raise AccelError(
            f"{what}: M={nm.m} does not divide the group dimension ({a.shape[0]} along axis {axis})"
        )
    return a.reshape(a.shape[0] // nm.m, nm.m, a.shape[1])


def mask(w: np.ndarray, nm: NM, axis: int = 0, what: str = "weight") -> np.ndarray:
    """Keep the ``N`` largest magnitudes of every group (ties: lower index wins)."""
    g = _groups(w, nm, axis, what)
    # stable argsort of -|w| puts the largest first and keeps index order among ties
    order = np.argsort(-np.abs(g), axis=1, kind="stable")
    keep = np.zeros(g.shape, dtype=bool)
    np.put_along_axis(keep, order[:, : nm.n], True, axis=1)
    keep = keep.reshape(-1, g.shape[2])
    return keep if axis == 0 else keep.T


def violations(w: np.ndarray, nm: NM, axis: int = 0, what: str = "weight") -> int:
    """Number of groups with more than ``N`` non-zeros."""
    g = _groups(w, nm, axis, what)
    return int(((g != 0).sum(axis=1) > nm.n).sum())


def check(w: np.ndarray, nm: NM, axis: int = 0, what: str = "weight") -> None:
    """Raise a one-line error when ``w`` breaks the declared pattern."""
    bad = violations(w, nm, axis, what)
    if bad:
        raise AccelError(f"{what}: {bad} group(s) have more than {nm.n} non-zeros of {nm.m}")


@dataclass(frozen=True)
class Compressed:
    """N values and N indices per (group, column): shapes ``(groups, n, columns)``."""

    values: np.ndarray
    index: np.ndarray
    nm: NM
    axis: int
    shape: tuple[int, int]

    @property
    def groups(self) -> int:
        return self.values.shape[0]

    @property
    def columns(self) -> int:
        return self.values.shape[2]


def compress(w: np.ndarray, nm: NM, axis: int = 0, what: str = "weight") -> Compressed:
    """Exact compressed form of an N:M sparse ``w`` (checked first)."""
    w = np.asarray(w, dtype=np.int64)
    check(w, nm, axis, what)
    g = _groups(w, nm, axis, what)
    # Order each group's positions: non-zeros first (in index order), then zeros
    # (in index order), and keep the first N; then sort the kept by index.
    key = (g == 0).astype(np.int64) * nm.m + np.arange(nm.m)[None, :, None]
    kept = np.sort(np.argsort(key, axis=1, kind="stable")[:, : nm.n], axis=1)
    values = np.take_along_axis(g, kept, axis=1)
    return Compressed(values, kept.astype(np.int64), nm, axis, tuple(w.shape))


def decompress(c: Compressed) -> np.ndarray:
    """The dense array back, exactly."""
    groups, _, cols = c.values.shape
    g = np.zeros((groups, c.nm.m, cols), dtype=np.int64)
    np.put_along_axis(g, c.index, c.values, axis=1)
    a = g.reshape(groups * c.nm.m, cols)
    return a if c.axis == 0 else a.T


def matmul_compressed(x: np.ndarray, c: Compressed) -> np.ndarray:
    """``x @ w`` computed from the compressed ``w`` (axis 0): only kept weights are read.

    Each kept weight selects its activation by index, as the sparse MAC array's
    multiplexers do; int64 arithmetic, exact.
    """
    if c.axis != 0:
        raise AccelError("matmul_compressed needs weights grouped along their first axis")
    x = np.asarray(x, dtype=np.int64)
    if x.shape[-1] != c.shape[0]:
        raise AccelError(f"input has {x.shape[-1]} features, weight expects {c.shape[0]}")
    base = (np.arange(c.groups) * c.nm.m)[:, None]
    out = np.zeros((*x.shape[:-1], c.columns), dtype=np.int64)
    for j in range(c.nm.n):
        cols = base + c.index[:, j, :]  # (groups, columns): the activation each weight reads
        out += np.einsum("...gc,gc->...c", x[..., cols], c.values[:, j, :])
    return out
