"""Outputs appear whole or not at all, and replace exactly what was named.

Every writer of a result (the CLI, the hls4ml and da4ml flows) assembles it
in a hidden sibling of the output and swaps it into place only when it is
complete, so an error or an interrupt never leaves a half-written design and
never destroys what was there. Replacing (``--force``) resolves the path first
(symlinks, ``..``) and refuses anything whose removal would take more than the
output with it: the working directory or one of its parents, the home
directory, the filesystem root.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from accel.errors import AccelError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _normal_permissions(path: Path, directory: bool) -> None:
    """mkdtemp/mkstemp make 0700/0600; outputs get the user's usual permissions."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def refuse_dangerous(out: Path) -> Path:
    """``out`` resolved; an error if replacing it would remove more than the output."""
    resolved = Path(out).resolve()
    cwd = Path.cwd().resolve()
    what = None
    if resolved == Path(resolved.anchor):
        what = "the filesystem root"
    elif resolved == Path.home().resolve():
        what = "the home directory"
    elif resolved == cwd:
        what = "the working directory"
    elif resolved in cwd.parents:
        what = "a parent of the working directory"
    if what is not None:
        raise AccelError(f"refusing to replace {out} ({resolved}): it is {what}")
    return resolved


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _swap_in(new: Path, out: Path) -> None:
    """Put ``new`` at ``out``; whatever was at ``out`` is removed only once ``new`` is there."""
    if not out.exists() and not out.is_symlink():
        new.rename(out)
        return
    if _exchange(new, out):
        _remove(new)  # now holds the old output
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent)) / "x"
    out.rename(old)
    try:
        new.rename(out)
    except BaseException:
        old.rename(out)
        raise
    _remove(old.parent)


@contextmanager
def staged_dir(out: Path, *, replace: bool = False, hint: str = "") -> Iterator[Path]:
    """Yield an empty directory that becomes ``out`` if the block succeeds.

    ``out`` may be absent or an empty directory; one that holds anything is
    refused unless ``replace`` (then it is swapped out only at the end, and only
    if it is not the working directory, one of its parents, home or root).
    """
    out = Path(out)
    resolved = out.resolve()
    occupied = resolved.exists() and (not resolved.is_dir() or any(resolved.iterdir()))
    if occupied and not replace:
        raise AccelError(f"output directory {out} exists and is not an empty directory{hint}")
    if resolved.exists():
        refuse_dangerous(out)
    resolved.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{resolved.name}.", dir=resolved.parent))
    try:
        _normal_permissions(tmp, directory=True)
        yield tmp
        _swap_in(tmp, resolved)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def staged_file(
    out: Path, *, replace: bool = False, hint: str = "", inputs: Iterable[Path] = ()
) -> Iterator[Path]:
    """Yield a temporary file path beside ``out`` that becomes ``out`` on success.

    An existing ``out`` is refused unless ``replace``; a directory and any of the
    ``inputs`` (the files the run reads) are always refused.
    """
    out = Path(out)
    resolved = out.resolve()
    if resolved.is_dir():
        raise AccelError(f"output {out} is a directory; name a file")
    for src in inputs:
        if Path(src).resolve() == resolved:
            raise AccelError(f"output {out} is the input file {src}; write the result elsewhere")
    if resolved.exists() and not replace:
        raise AccelError(f"output file {out} exists{hint}")
    resolved.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{resolved.name}-", dir=resolved.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        _normal_permissions(tmp, directory=False)
        yield tmp
        os.replace(tmp, resolved)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
