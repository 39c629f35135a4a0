""".npy input files, checked from their header before a byte of data is read.

A user's file may be empty, another format renamed, truncated, or declare a
shape of 10^12 rows in a 100-byte file; each is a one-line error. A good file
is read in row ranges as it is used, so a large one is never loaded whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from accel.errors import AccelError


@dataclass(frozen=True)
class NpyFile:
    """An array on disk, known from its header: read whole or in row ranges."""

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int
    fortran: bool

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop``, read from the file (only those bytes)."""
        stop = min(stop, len(self))
        if self.fortran:  # rows are not contiguous: map the file, copy the slice
            whole = np.memmap(self.path, self.dtype, "r", self.offset, self.shape, order="F")
            return np.array(whole[start:stop])
        row = int(np.prod(self.shape[1:], dtype=np.int64))
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * row * self.dtype.itemsize)
            data = np.fromfile(f, self.dtype, count=(stop - start) * row)
        return data.reshape(stop - start, *self.shape[1:])

    def load(self) -> np.ndarray:
        return self.rows(0, len(self))


def open_npy(path: Path, row_shape: tuple[int, ...] | None = None) -> NpyFile:
    """The array in ``path``, checked from its header: format, dtype, shape, size.

    ``row_shape`` is the expected shape of one row (the batch axis first); a file
    of another shape is refused from its header alone.
    """
    path = Path(path)
    if not path.is_file():
        raise AccelError(f"input file {path} not found" + (" (a directory)" * path.is_dir()))
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except (ValueError, OSError, EOFError, SyntaxError) as e:
        text = " ".join(str(e).split()) or type(e).__name__
        raise AccelError(f"cannot read {path} as a .npy array: {text[:200]}") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise AccelError(f"{path}: dtype {dtype} is neither floating point nor integer")
    if row_shape is not None and (len(shape) != len(row_shape) + 1 or shape[1:] != row_shape):
        want = ", ".join(map(str, row_shape))
        raise AccelError(f"{path}: expected shape (N, {want}), got {tuple(shape)}")
    need = offset + int(np.prod(shape, dtype=object)) * dtype.itemsize
    have = os.path.getsize(path)
    if have != need:
        raise AccelError(
            f"{path}: its header declares {tuple(shape)} {dtype} ({need:,} bytes with the "
            f"header) but the file has {have:,} bytes"
        )
    return NpyFile(path, tuple(shape), dtype, offset, bool(fortran))
