"""The design cache (accel.cache): keys, invalidation by source, concurrent use."""

from __future__ import annotations

import multiprocessing
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from accel import cache
from accel.engine.config import EngineConfig
from accel.fixed import FixedType, Overflow, Quant, Rounding


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ACCEL_DESIGN_CACHE", raising=False)
    return tmp_path / "cache"


@dataclass
class _Cfg:
    a: int
    b: np.ndarray


def test_fingerprint_is_by_value():
    fp = cache.fingerprint
    assert fp(EngineConfig()) == fp(EngineConfig())
    assert fp(EngineConfig()) != fp(EngineConfig(rows=4))
    assert fp({"a": 1, "b": 2}) == fp({"b": 2, "a": 1})
    assert fp([1, 2]) != fp((1, 2)) != fp([2, 1])
    assert fp(1) != fp("1") != fp(1.0) != fp(True)
    x = np.arange(6, dtype=np.int64)
    assert fp(x) == fp(x.copy()) != fp(x.astype(np.int32)) != fp(x.reshape(2, 3))
    assert fp(x[::2]) == fp(np.array([0, 2, 4]))
    assert fp(_Cfg(1, x)) != fp(_Cfg(1, x + 1))
    q = Quant(FixedType(8, 3, False), Rounding.RND, Overflow.SAT)
    assert fp(q) == fp(Quant(FixedType(8, 3, False), Rounding.RND, Overflow.SAT))
    assert fp(q) != fp(Quant(FixedType(8, 3, False), Rounding.TRN, Overflow.SAT))
    with pytest.raises(TypeError):
        fp(lambda: 0)


def test_graph_and_plan_are_key_material(random_graph, trained_graph):
    from accel.compiler.dataflow import lower

    assert cache.fingerprint(random_graph) != cache.fingerprint(trained_graph)
    assert cache.fingerprint(lower(random_graph, 1)) == cache.fingerprint(lower(random_graph, 1))
    assert cache.fingerprint(lower(random_graph, 1)) != cache.fingerprint(lower(random_graph, 2))


def test_generator_sources_follow_accel_imports():
    files = {p.as_posix() for p in cache.source_files(["accel.rtl.engine.core"])}
    for part in ("rtl/engine/core.py", "rtl/engine/vector.py", "accel/engine/isa.py"):
        assert any(f.endswith(part) for f in files), part
    assert not any(f.endswith("accel/reference.py") for f in files)


def test_hit_skips_produce_and_key_changes_miss(tmp_cache):
    calls = []

    def produce(text="module m; endmodule\n"):
        calls.append(text)
        return text

    assert cache.cached_text("verilog", ("k", 1), produce) == "module m; endmodule\n"
    assert cache.cached_text("verilog", ("k", 1), produce) == "module m; endmodule\n"
    assert len(calls) == 1
    cache.cached_text("verilog", ("k", 2), produce)
    assert len(calls) == 2
    entries = list((tmp_cache / "designs" / "verilog").glob("*.v"))
    assert len(entries) == 2


def test_a_source_change_invalidates(tmp_cache, tmp_path, monkeypatch):
    pkg = tmp_path / "src"
    pkg.mkdir()
    mod = pkg / "accel_cache_test_gen.py"
    mod.write_text("WIDTH = 8\n")
    monkeypatch.syspath_prepend(str(pkg))
    calls = []

    def produce():
        calls.append(1)
        return f"// {len(calls)}\n"

    args = ("verilog", "same key", produce, ["accel_cache_test_gen"])
    assert cache.cached_text(*args) == "// 1\n"
    assert cache.cached_text(*args) == "// 1\n"
    mod.write_text("WIDTH = 9\n")
    assert cache.cached_text(*args) == "// 2\n"


def test_disabled_by_environment(tmp_cache, monkeypatch):
    monkeypatch.setenv("ACCEL_DESIGN_CACHE", "0")
    calls = []
    for _ in range(2):
        cache.cached_text("verilog", "k", lambda: calls.append(1) or "x")
    assert len(calls) == 2
    assert not (tmp_cache / "designs").exists()


def _worker(root: str, log: str, out: str, i: int) -> None:
    import os

    os.environ["ACCEL_CACHE"] = root

    def produce():
        with open(log, "a") as f:
            f.write("produced\n")
        time.sleep(0.5)
        return "x" * 1_000_000 + "\n"

    text = cache.cached_text("verilog", "shared", produce)
    Path(out, f"{i}.len").write_text(str(len(text)))


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl")
def test_concurrent_runs_produce_once_and_never_see_half_an_entry(tmp_cache, tmp_path):
    ctx = multiprocessing.get_context("fork")
    log = tmp_path / "log"
    procs = [
        ctx.Process(target=_worker, args=(str(tmp_cache), str(log), str(tmp_path), i))
        for i in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert log.read_text().count("produced") == 1
    assert [int((tmp_path / f"{i}.len").read_text()) for i in range(4)] == [1_000_001] * 4
    folder = tmp_cache / "designs" / "verilog"
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))
