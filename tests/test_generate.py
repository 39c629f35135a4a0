"""accel generate: the Verilog target (testbench runs and checks itself) and bitstreams."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from accel.cli import main


def accel(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "accel.cli", *args], capture_output=True, text=True, timeout=3000
    )


def run_testbench(out: Path, top: str) -> str:
    """Build the generated testbench with Verilator and run it; returns what it printed."""
    from accel.sim.verilator import MAKE_VARS, verilator_bin

    env = {
        **os.environ,
        "MAKEFLAGS": MAKE_VARS,
        "PATH": f"{verilator_bin()}{os.pathsep}{os.environ['PATH']}",
    }
    subprocess.run(
        [
            "verilator",
            "--binary",
            "--timing",
            "-Wno-fatal",
            "-Wno-lint",
            "--top-module",
            f"tb_{top}",
            f"tb_{top}.v",
            f"{top}.v",
        ],
        cwd=out,
        env=env,
        check=True,
        capture_output=True,
    )
    return subprocess.run([f"./obj_dir/Vtb_{top}"], cwd=out, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def verilog_target(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "ae"
    assert (
        main(
            [
                "generate",
                "autoencoder",
                "--target",
                "verilog",
                "--reuse",
                "3",
                "--vectors",
                "400",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_manifest_describes_the_design(verilog_target):
    doc = json.loads((verilog_target / "manifest.json").read_text())
    assert doc["top"] == "accel_autoencoder"
    assert doc["latency_cycles"] == 6 and doc["ii_cycles"] == 3
    ports = doc["ports"]
    assert (
        ports["i__payload"]["width"] == 480
        and ports["i__payload"]["element_type"] == "ap_fixed<10,4>"
    )
    assert (
        ports["o__payload"]["width"] == 144
        and ports["o__payload"]["element_type"] == "ap_ufixed<9,1>"
    )
    assert [layer["reuse"] for layer in doc["layers"]] == [3, 3]
    for name, digest in doc["files"].items():
        assert hashlib.sha256((verilog_target / name).read_bytes()).hexdigest() == digest
    assert len((verilog_target / "vectors" / "inputs.hex").read_text().split()) == 400
    verilog = (verilog_target / "accel_autoencoder.v").read_text()
    assert "module accel_autoencoder" in verilog and "[479:0] i__payload" in verilog


def test_generated_testbench_passes_and_catches_a_wrong_vector(verilog_target):
    out = run_testbench(verilog_target, "accel_autoencoder")
    assert "PASS: 400 vectors bit-exact, latency 6, II 3" in out
    exp = verilog_target / "vectors" / "expected.hex"
    lines = exp.read_text().split()
    lines[7] = format(int(lines[7], 16) ^ 1, f"0{len(lines[7])}x")
    exp.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        ["./obj_dir/Vtb_accel_autoencoder"], cwd=verilog_target, capture_output=True, text=True
    ).stdout
    assert "FAIL: vector 7" in out and "FAIL: 1 errors in 400 vectors" in out


def test_existing_output_is_kept(tmp_path):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "mine.txt").write_text("x")
    r = accel("generate", "autoencoder", "--target", "verilog", "-o", str(out))
    assert r.returncode == 2 and "exists; pass --force" in r.stderr
    assert (out / "mine.txt").read_text() == "x"


def test_unknown_board_is_named(tmp_path):
    r = accel(
        "generate",
        "autoencoder",
        "--target",
        "bitstream",
        "--board",
        "de10nano",
        "-o",
        str(tmp_path / "b"),
    )
    assert r.returncode == 2 and "unknown board 'de10nano'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_failed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    from accel.flows import verilog

    def broken(*a, **k):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(verilog, "write", broken)
    with pytest.raises(RuntimeError):
        main(["generate", "autoencoder", "--target", "verilog", "-o", str(tmp_path / "v")])
    assert list(tmp_path.iterdir()) == []
