""".npy input files, checked from their header before a byte of data is read.

A user's file may be empty, another format renamed, truncated, or declare a
shape of 10^12 rows in a 100-byte file; each is a one-line error. A good file
is memory-mapped, so a large one is read in chunks as it is used, never loaded
whole.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from accel.errors import AccelError


def open_npy(path: Path, row_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A read-only memory map of the array in ``path`` (a plain array if it has no data).

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
    if need == offset:  # no data: numpy cannot map an empty range
        return np.zeros(shape, dtype)
    order = "F" if fortran else "C"
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape), order=order)
