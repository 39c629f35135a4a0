"""Hostile input, command by command: one ``accel: error:`` line, exit status 2, no
traceback, and every file beside the output untouched (checked by checksum).

Each case runs in a sandbox: a parent directory with a sibling project and a
working directory holding files of its own; HOME points into the sandbox.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from accel.cli import main

ROOT = Path(os.sep)


def _unwritable(sandbox: Path) -> Path:
    """A directory this process cannot create files in (root ignores chmod: use /sys)."""
    if os.geteuid() == 0:
        return Path("/sys")
    d = sandbox / "readonly"
    d.mkdir(exist_ok=True)
    d.chmod(0o555)
    return d


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """tmp/sibling/{a,b}, tmp/work/{keep.txt, x.npy, y.npy, sub/}; cwd = tmp/work/sub."""
    (tmp_path / "sibling").mkdir()
    (tmp_path / "sibling" / "a.txt").write_text("sibling a")
    (tmp_path / "sibling" / "b.bin").write_bytes(os.urandom(64))
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "keep.txt").write_text("keep")
    (work / "sub" / "mine.txt").write_text("mine")
    rng = np.random.default_rng(0)
    np.save(work / "x.npy", rng.random((20, 48)) / 48)
    np.save(work / "y.npy", np.arange(5))
    (work / "zero.npy").write_bytes(b"")
    np.savez(work / "renamed.npy", a=np.zeros(3))
    os.replace(work / "renamed.npy.npz", work / "renamed.npy")
    huge = np.lib.format.header_data_from_array_1_0(np.zeros((1, 48)))
    huge["shape"] = (10**12, 48)
    with open(work / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, huge)
        f.write(b"\0" * 384)
    (work / "bomb.yaml").write_text(
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        )
        + "name: *i\nmodel: autoencoder\n"
    )
    (work / "escape.yaml").write_text("name: ../../somewhere\nmodel: autoencoder\n")
    (work / "range.yaml").write_text(
        "model: autoencoder\nparams:\n  reuse: {from: 1, to: 1000000000000}\n"
    )
    (work / "ok.yaml").write_text("model: autoencoder\nparams:\n  reuse: [4, 8]\n")
    (work / "seed.yaml").write_text("model: autoencoder\nevaluate:\n  seed: -1\n")
    (work / "link").symlink_to(tmp_path)
    from accel.sim.verilator import cache_root

    monkeypatch.setenv("ACCEL_CACHE", str(cache_root()))  # builds stay in the usual caches
    xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    monkeypatch.setenv("HOME", str(work))
    monkeypatch.chdir(work / "sub")
    return tmp_path


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        for p in sorted(root.rglob("*"))
        if not p.is_symlink()
    }


def _assert_one_line(code: int, err: str, message: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("accel: error: "), err
    assert message in lines[0], lines[0]


# (command line, a piece of the message); "{unwritable}" is a directory we cannot write
AE_IN = "predict autoencoder --inputs ../x.npy"
VLOG = "generate autoencoder --target verilog"
ENGINE = "sim nm_sparse --arch engine"
CASES = {
    "predict": [
        (f"{AE_IN} --out ../y.npy", "exists"),
        (f"{AE_IN} --out ..", "is a directory"),
        (f"{AE_IN} --out ../x.npy", "input file"),
        (f"{AE_IN} --out ../x.npy --force", "input file"),
        (f"{AE_IN} --out ../keep.txt/y.npy", ""),
        (f"{AE_IN} --out {{unwritable}}/y.npy", ""),
        ("predict autoencoder --inputs ../zero.npy --out o.npy", "cannot read"),
        ("predict autoencoder --inputs ../renamed.npy --out o.npy", "cannot"),
        ("predict autoencoder --inputs ../huge.npy --out o.npy", "declares"),
        ("predict autoencoder --inputs .. --out o.npy", "not found"),
        ("predict autoencoder --engine rtl --inputs ../huge.npy --out o.npy", "declares"),
    ],
    "generate": [
        (f"{VLOG} -o .. --force", "refusing"),
        ("generate autoencoder --target hls4ml -o .. --force", "refusing"),
        (f"{VLOG} -o . --force", "refusing"),
        (f"{VLOG} -o ../link --force", "refusing"),
        (f"{VLOG} -o {{home}} --force", "home"),
        (f"{VLOG} -o / --force", "root"),
        (f"{VLOG} -o .. --vectors 1e13", "not an integer"),
        (f"{VLOG} -o v --vectors 10000000000000", "at most"),
        (f"{VLOG} -o v --seed -1", "at least 0"),
        (f"{VLOG} -o v --reuse 1000000", "at most 4,096"),
        (f"{VLOG} -o v --rows 4", "--rows is an option of the engine target"),
        ("generate autoencoder --target hls4ml -o h --reuse 2", "does not apply to an hls4ml"),
        (f"{VLOG} -o v --board ulx3s-85f", "--board is for --target bitstream"),
        (f"{VLOG} -o v --placer-density 0.5", "--placer-density is for --target bitstream"),
        ("generate autoencoder --target bitstream -o b --placer-density 2", "outside 0.3-1.0"),
        ("generate autoencoder --target bitstream -o b --placer-density x", "not a number"),
        (f"{VLOG} -o {{unwritable}}/v", ""),
        (f"{VLOG} -o ../keep.txt/v", ""),
        ("generate autoencoder --target bitstream -o b --board x", "unknown board"),
    ],
    "train": [
        ("train autoencoder -o .. --force --epochs 1", "refusing"),
        ("train autoencoder -o t --seed -1", "at least 0"),
        ("train autoencoder -o {unwritable}/t --epochs 1", ""),
    ],
    "sim": [
        ("sim autoencoder --samples 10000000000000", "at most"),
        ("sim autoencoder --seed -1", "at least 0"),
        ("sim autoencoder --reuse 1000000", "at most 4,096"),
        ("sim autoencoder --reuse 4096 --samples 100000", "cycles"),
        ("sim autoencoder --mult fabric --reuse 2", "runs at reuse 1, not 2"),
        ("sim autoencoder --mult luts", "invalid choice: 'luts'"),
        ("sim nm_sparse --mult fabric", "--mult is an option of the dataflow target"),
        (f"{ENGINE} --array 1000x1000", "--rows must be at most 64"),
        (f"{ENGINE} --array 16x16", "has 156 DSP blocks"),
        (f"{ENGINE} --bank-words 100000000", "at most"),
        (f"{ENGINE} --rows 4 --array 8x8", "not both"),
        (f"{ENGINE} --bank-words 60000", "DP16KD"),
    ],
    "dse": [
        ("dse ../bomb.yaml", "aliases"),
        ("dse ../escape.yaml", "sweep name"),
        ("dse ../range.yaml", "more than"),
        ("dse ../seed.yaml", "evaluate.seed"),
        ("dse ../ok.yaml --scheduler 'not a url'", "bad scheduler address"),
        ("dse ../ok.yaml -o .. --force", "refusing"),
        ("dse ../ok.yaml -o {unwritable}/d", ""),
    ],
    "report": [
        ("report autoencoder --seed -1", "at least 0"),
        ("report autoencoder --board nosuch", "unknown board"),
    ],
}


@pytest.mark.parametrize("command", sorted(CASES))
def test_hostile_inputs_one_line_and_nothing_touched(command, sandbox, capsys):
    unwritable = _unwritable(sandbox)
    before = _digests(sandbox)
    for line, message in CASES[command]:
        args = shlex.split(line.format(unwritable=unwritable, home=os.environ["HOME"]))
        t0 = time.perf_counter()
        code = main(args)
        err = capsys.readouterr().err
        _assert_one_line(code, err, message)
        assert time.perf_counter() - t0 < 60, (line, "took too long to refuse")
        assert _digests(sandbox) == before, line


def test_force_replaces_exactly_the_named_output(sandbox, capsys):
    out = sandbox / "work" / "gen"
    out.mkdir()
    (out / "old.txt").write_text("old")
    before = _digests(sandbox)
    args = ["generate", "autoencoder", "--target", "verilog", "--vectors", "8", "-o", "../gen"]
    assert main(args) == 2 and "--force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    after = _digests(sandbox)
    assert {k for k in before if not k.startswith("work/gen")} == {
        k for k in after if not k.startswith("work/gen")
    }
    assert all(after[k] == v for k, v in before.items() if not k.startswith("work/gen"))
    assert not (out / "old.txt").exists() and (out / "manifest.json").is_file()
    mode = (out / "manifest.json").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask and out.stat().st_mode & 0o777 == 0o777 & ~umask


def test_predict_empty_input_agrees_across_engines(sandbox, capsys):
    np.save("empty.npy", np.zeros((0, 48)))
    shapes = {}
    for engine in ("reference", "hls4ml"):
        assert main(["predict", "autoencoder", "--engine", engine, "--inputs", "empty.npy",
                     "--out", f"{engine}.npy"]) == 0  # fmt: skip
        shapes[engine] = np.load(f"{engine}.npy").shape
    assert shapes == {"reference": (0, 16), "hls4ml": (0, 16)}


def test_predict_streams_a_large_file(sandbox, capsys):
    """The reference reads a memory map in chunks: the result equals a one-shot run."""
    from accel import reference, zoo

    g = zoo.get("autoencoder").build()
    x = zoo.get("autoencoder").make_inputs(50_000, 3)
    np.save("big.npy", x)
    assert main(["predict", "autoencoder", "--inputs", "big.npy", "--out", "big_y.npy"]) == 0
    y = np.load("big_y.npy")
    assert np.array_equal(y, reference.predict(g, reference.quantize_inputs(g, "charges", x)))
    assert main(["predict", "autoencoder", "--inputs", "big.npy", "--out", "big_y.npy"]) == 2
    assert main(["predict", "autoencoder", "--inputs", "big.npy", "--out", "big_y.npy",
                 "--force"]) == 0  # fmt: skip


def test_usage_errors_share_the_prefix():
    r = subprocess.run(
        [sys.executable, "-m", "accel", "sim", "autoencoder", "--samples", "many"],
        capture_output=True,
        text=True,
    )
    _assert_one_line(r.returncode, r.stderr, "'many' is not an integer")


def test_interrupt_during_start_up_is_one_line():
    p = subprocess.Popen(
        [sys.executable, "-m", "accel", "zoo", "list"], stderr=subprocess.PIPE, text=True
    )
    time.sleep(0.15)  # inside the imports (the whole command takes about 0.35 s here)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert "Traceback" not in err
    # 0 only if it had already finished; -SIGINT when the interrupt landed inside a C
    # extension's own import code: CPython then marks it unhandled even though accel
    # caught it and printed its line, and ends by re-raising SIGINT (the status a shell
    # shows as 130 either way)
    assert p.returncode in (0, 130, -signal.SIGINT), err
    assert p.returncode == 0 or err.strip().splitlines() == ["accel: interrupted"], err


@pytest.mark.parametrize(
    ("location", "message"),
    [("../secret.bin", "outside"), ("/etc/passwd", "relative path"), ("link.bin", "symbolic")],
)
def test_onnx_external_data_stays_in_its_directory(tmp_path, location, message):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from accel import qonnx
    from accel.errors import AccelError

    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "link.bin").symlink_to(tmp_path / "secret.bin")
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in {"location": location, "offset": "0", "length": "64"}.items():
        e = w.external_data.add()
        e.key, e.value = k, v
    vi = helper.make_tensor_value_info
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [vi("x", TensorProto.FLOAT, [1, 4])],
        [vi("y", TensorProto.FLOAT, [1, 4])],
        [w],
    )
    onnx.save(helper.make_model(g), tmp_path / "m" / "model.onnx")
    with pytest.raises(AccelError, match=message):
        qonnx.load(tmp_path / "m" / "model.onnx")
