"""Outputs appear whole or not at all.

Every writer of a result directory (the CLI, the hls4ml and da4ml flows)
assembles it in a hidden sibling directory and renames it into place only
when it is complete, so an error or an interrupt never leaves a half-written
design, and never destroys what was there.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from accel.errors import AccelError


@contextmanager
def staged_dir(out: Path, *, replace: bool = False, hint: str = "") -> Iterator[Path]:
    """Yield an empty directory that becomes ``out`` if the block succeeds.

    ``out`` may be absent or an empty directory; one that holds anything is
    refused unless ``replace`` (then it is swapped out only at the end).
    """
    out = Path(out).absolute()
    if out.exists() and not replace and (not out.is_dir() or any(out.iterdir())):
        raise AccelError(f"output directory {out} exists and is not an empty directory{hint}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
