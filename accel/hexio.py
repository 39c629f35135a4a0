"""Hex words: rows of fixed-width integer fields packed into one hex string per row,
element 0 in the low bits (the ``$readmemh`` format every testbench and program uses).

Shared by the compilers (engine programs), the simulators and the flows, so it
imports nothing of theirs.
"""

from __future__ import annotations

import numpy as np


def pack_hex(raw: np.ndarray, width: int) -> list[str]:
    """Rows of raw integers -> one hex word per row, element 0 in the low bits."""
    return pack_fields_hex([(raw, width)])


def pack_fields_hex(fields: list[tuple[np.ndarray, int]], word_bits: int = 0) -> list[str]:
    """Rows of several fields, each (n, k) integers of one width, low field first.

    Words are padded to ``word_bits`` (at least) so every line has the same length.
    """
    parts = []
    for raw, width in fields:
        raw = np.asarray(raw, dtype=np.int64)
        n, k = raw.shape
        bits = ((raw[:, :, None] >> np.arange(width)) & 1).astype(np.uint8)
        parts.append(bits.reshape(n, k * width))
    bits = np.concatenate(parts, axis=1)
    pad = (-bits.shape[1]) % 4 + max(0, word_bits - bits.shape[1]) // 4 * 4
    bits = np.pad(bits, ((0, 0), (0, pad)))
    n = len(bits)
    nibbles = bits.reshape(n, bits.shape[1] // 4, 4) @ np.array([1, 2, 4, 8], np.uint8)
    digits = np.frombuffer(b"0123456789abcdef", np.uint8)[nibbles[:, ::-1]]
    return [row.tobytes().decode() for row in digits]


def unpack_hex(lines: list[str], width: int, count: int, signed: bool) -> np.ndarray:
    """Inverse of :func:`pack_hex` for ``count`` elements of ``width`` bits per row."""
    n_digits = -(-width * count // 4)
    text = np.array([ln.rjust(n_digits, "0") for ln in lines], dtype=f"S{n_digits}")
    chars = text.view(np.uint8).reshape(len(lines), n_digits)[:, ::-1]
    nib = np.where(chars >= ord("a"), chars - ord("a") + 10, chars - ord("0")).astype(np.int64)
    bits = ((nib[:, :, None] >> np.arange(4)) & 1).reshape(len(lines), 4 * n_digits)
    bits = bits[:, : width * count]
    vals = bits.reshape(len(lines), count, width) @ (np.int64(1) << np.arange(width))
    if signed:
        vals = vals - ((vals >> (width - 1)) & 1) * (np.int64(1) << width)
    return vals
