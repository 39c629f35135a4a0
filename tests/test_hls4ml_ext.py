"""accel's hls4ml extension layers (Shiftmax, ShiftGELU, I-LayerNorm, activation matmul)
and the native layers around them (Merge add, Concatenate, BatchNormalization as
add_const, Reshape/Transpose as patchify, Dense over tokens): the compiled C simulation of
small graphs equals the reference bit for bit, edge inputs included; the written project
carries the extension sources and builds on its own."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from accel import reference
from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.ir import Graph, Param
from accel.sim.stimulus import edge_inputs, random_inputs

pytest.importorskip("hls4ml")
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")

from accel.flows import hls4ml as flow  # noqa: E402
from accel.flows import hls4ml_ext  # noqa: E402


def _q(width: int, frac: int, signed: bool = True, rnd=Rounding.RND, ovf=Overflow.SAT) -> Quant:
    return Quant(FixedType(width, frac, signed), rnd, ovf)


def vit_graph(wide: bool = False, seed: int = 0) -> Graph:
    """A two-head attention block and a GELU on 8 tokens of 8 channels, random weights.

    ``wide`` changes every type the extension layers read: a wider score type and a
    12-bit softmax, LayerNorm without beta and other norm/guard/mean bits, an unsigned
    GELU input with 6 sigmoid bits, truncating and wrapping requantizers.
    """
    rng = np.random.default_rng(seed)

    def p(shape, width, frac):
        t = FixedType(width, frac)
        return Param(rng.integers(t.min_int, t.max_int + 1, shape), t)

    c = 8
    g = Graph("vit_wide" if wide else "vit_mini")
    x = g.add_input("image", (8, 4, 1), _q(8, 8, signed=False))
    x = g.add("patchify", x, name="patchify", patch=2)  # (8, 4) tokens
    x = g.add("dense", x, name="embed", params={"weight": p((4, c), 8, 6), "bias": p((c,), 16, 14)})
    x = g.add("requantize", x, name="embed_q", quant=_q(8, 5))
    x = g.add("add_const", x, name="pos", params={"value": p((8, c), 8, 6)})
    r = g.add("requantize", x, name="pos_q", quant=_q(8, 5))
    ln_params = {"gamma": p((c,), 8, 6)}
    ln_attrs = {"norm_frac": 6, "sqrt_guard": 2, "mean_frac": 0} if wide else {}
    if not wide:
        ln_params["beta"] = p((c,), 16, 14)
    x = g.add("layernorm_int", r, name="ln", params=ln_params, **ln_attrs)
    ln = g.add("requantize", x, name="ln_q", quant=_q(8, 5))
    score = _q(8, 5) if wide else _q(8, 4)
    prob = FixedType(12, 12, signed=False) if wide else FixedType(8, 8, signed=False)
    heads = []
    for h in range(2):
        t = {}
        for kind, wf, q in (("q", 9, _q(8, 7)), ("k", 7, _q(8, 5)), ("v", 7, _q(8, 5))):
            d = g.add("dense", ln, name=f"{kind}{h}", params={"weight": p((c, 4), 8, wf)})
            t[kind] = g.add("requantize", d, name=f"{kind}{h}_q", quant=q)
        s = g.add("matmul", [t["q"], t["k"]], name=f"s{h}", transpose_b=True)
        s = g.add("requantize", s, name=f"s{h}_q", quant=score)
        pr = g.add("softmax_int", s, name=f"p{h}", out=prob)
        o = g.add("matmul", [pr, t["v"]], name=f"o{h}")
        heads.append(g.add("requantize", o, name=f"o{h}_q", quant=_q(8, 6)))
    x = g.add("concat", heads, name="heads")
    x = g.add("requantize", x, name="heads_q", quant=_q(8, 5))
    x = g.add("add", [r, x], name="res")
    if wide:
        x = g.add(
            "requantize", x, name="res_q", quant=_q(8, 5, rnd=Rounding.TRN, ovf=Overflow.WRAP)
        )
        x = g.add("relu", x, name="res_relu")
        x = g.add("requantize", x, name="res_u", quant=_q(8, 4, signed=False))
        x = g.add("gelu_int", x, name="gelu", sig_bits=6)
    else:
        x = g.add("requantize", x, name="res_q", quant=_q(8, 4))
        x = g.add("gelu_int", x, name="gelu")
    g.mark_output(g.add("requantize", x, name="out", quant=_q(16, 8)))
    return g


def ops_graph(wide: bool = False, seed: int = 1) -> Graph:
    """Each extension op reads the graph input directly, so edge rows reach it unchanged
    (a lone maximum saturates the softmax, a constant row has sigma = 0); every result
    is requantized exactly into one wide type and concatenated, so any difference shows.
    ``wide`` changes every type and attribute the layers read."""
    rng = np.random.default_rng(seed)

    def p(shape, width, frac):
        t = FixedType(width, frac)
        return Param(rng.integers(t.min_int, t.max_int + 1, shape), t)

    xq = _q(8, 5) if wide else _q(8, 4)
    g = Graph("ops_wide" if wide else "ops")
    x = g.add_input("x", (8, 8), xq)
    # wide: 12 fraction bits and an integer bit (1.0 does not saturate)
    prob = FixedType(13, 12, signed=False) if wide else FixedType(8, 8, signed=False)
    sm = g.add("softmax_int", x, name="sm", out=prob)
    ln_params = {"gamma": p((8,), 8, 6)}
    ln_attrs = {"norm_frac": 6, "sqrt_guard": 2, "mean_frac": 0} if wide else {}
    if not wide:
        ln_params["beta"] = p((8,), 16, 14)
    ln = g.add("layernorm_int", x, name="ln", params=ln_params, **ln_attrs)
    ge = g.add("gelu_int", x, name="ge", sig_bits=6 if wide else 8)
    lq = g.add("requantize", ln, name="ln_q", quant=_q(8, 5))
    mm = g.add("matmul", [sm, lq], name="mm", transpose_b=wide)
    wide_t = _q(48, 24, rnd=Rounding.TRN, ovf=Overflow.WRAP)  # holds every result exactly
    outs = [g.add("requantize", t, name=f"{t}_w", quant=wide_t) for t in (sm, ln, ge, mm)]
    g.mark_output(g.add("concat", outs, name="all"))
    return g


@pytest.mark.parametrize("wide", [False, True])
def test_extension_ops_bit_exact(wide):
    g = ops_graph(wide)
    x = np.concatenate([edge_inputs(g), random_inputs(g, 500, 3)])
    values = reference.run(g, x)
    for t in ("sm", "ln", "ge", "mm"):  # nothing was lost on the way to the output
        assert np.array_equal(values[f"{t}_w"] >> (24 - g.tensors[t].type.frac), values[t])
    # The stimulus reaches the corners of the integer algorithms.
    top = values["sm"].max()  # a saturated probability (wide: near 1, below 2 - 2**-12)
    assert top == g.tensors["sm"].type.max_int if not wide else 4000 < top < 4096
    assert (values["sm"] == 0).any()
    flat = (x == x[..., :1]).all(axis=-1)  # constant rows: sigma = 0, the output is beta
    node = g.node("ln")
    beta = node.params.get("beta")
    shift = (
        node.attrs["norm_frac"] + node.params["gamma"].type.frac - (beta.type.frac if beta else 0)
    )
    assert flat.any() and (values["ln"][flat] == (beta.data << shift if beta else 0)).all()
    assert (values["ge"] < 0).any() and (values["ge"] > 0).any()
    y = flow.predict(g, x)
    assert y.dtype == np.int64 and y.shape == (len(x), 8, 32)
    assert int((y != values["all"]).sum()) == 0


@pytest.mark.parametrize("wide", [False, True])
def test_attention_block_bit_exact(wide):
    g = vit_graph(wide)
    x = np.concatenate([edge_inputs(g), random_inputs(g, 400, 3)])
    y = flow.predict(g, x)
    want = reference.predict(g, x)
    assert y.dtype == np.int64 and y.shape == want.shape == (len(x), 8, 8)
    assert int((y != want).sum()) == 0


def test_layers_are_extensions_or_native():
    g = vit_graph()
    low = flow._lower(g)
    kinds = {n["hls4ml_layer"]: n["class"] for n in low.nodes}
    assert kinds["ln"] == "AccelLayerNorm" and kinds["gelu"] == "AccelShiftGelu"
    assert kinds["p0"] == "AccelShiftmax" and kinds["s0"] == kinds["o1"] == "AccelMatMul"
    assert kinds["res"] == "Merge(add)" and kinds["heads"] == "Concatenate"
    assert kinds["pos"] == "BatchNormalization" and kinds["embed"] == "Dense"
    assert [kinds[k] for k in ("patchify_split", "patchify_swap", "patchify")] == [
        "Reshape",
        "Transpose",
        "Reshape",
    ]
    # every requantize after an exactly computed result is that layer's result type
    covers = {n["hls4ml_layer"]: n["nodes"] for n in low.nodes}
    assert covers["gelu"] == ["gelu", "out"] and covers["s0"] == ["s0", "s0_q"]
    assert low.precisions["s0"] == {
        "accum": str(g.node("s0").attrs["acc"]),
        "result": "ap_fixed<8,4,AP_RND,AP_SAT>",
    }


def test_project_carries_the_sources_and_builds(tmp_path):
    g = vit_graph()
    prj = flow.write_project(g, tmp_path / "prj")
    fw = prj / "firmware"
    for name in hls4ml_ext.SOURCES:
        assert (fw / "nnet_utils" / name).read_bytes() == (hls4ml_ext.CPP_DIR / name).read_bytes()
    top = (fw / "vit_mini.cpp").read_text()
    assert "nnet_utils/nnet_accel_vit.h" in (fw / "parameters.h").read_text()
    for call in ("accel_layernorm<", "accel_shiftmax<", "accel_matmul<", "accel_shiftgelu<"):
        assert f"nnet::{call}" in top, call
    params = (fw / "parameters.h").read_text()
    assert "nnet::accel_shiftmax_config" in params and "static const int span = 23;" in params
    readme = (prj / "README.md").read_text()
    assert "## accel's extension layers" in readme and "nnet_accel_vit.h" in readme
    manifest = json.loads((prj / flow.MANIFEST).read_text())
    assert {n["class"] for n in manifest["layers"]} >= {"AccelShiftmax", "AccelLayerNorm"}
    # The project's own testbench (what a Vitis C simulation runs), built with g++ from
    # the project directory alone: its outputs are the reference's.
    exe = prj / "tb"
    subprocess.run(
        ["g++", "-O1", "-std=c++17", "-Ifirmware/ap_types", "-Ifirmware",
         f'-DWEIGHTS_DIR="{fw / "weights"}"', "vit_mini_test.cpp", "firmware/vit_mini.cpp",
         "-o", str(exe)],
        cwd=prj, check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run([str(exe)], cwd=prj, check=True, capture_output=True)
    got = np.loadtxt(prj / "tb_data" / "csim_results.log")
    want = np.loadtxt(prj / "tb_data" / "tb_output_predictions.dat")
    assert got.shape == want.shape == (16, 8 * 8)
    # 6 significant digits in the log: every output of at most 16 bits is told apart
    assert np.array_equal(np.rint(np.ldexp(got, 8)), np.ldexp(want, 8))


def _softmax_axis0() -> Graph:
    g = Graph("sm0")
    x = g.add_input("x", (4, 6), _q(8, 4))
    g.mark_output(g.add("softmax_int", x, name="rows", axis=0))
    return g


def _heads_matmul() -> Graph:
    g = Graph("mm3")
    a = g.add_input("a", (2, 4, 6), _q(8, 4))
    g.mark_output(g.add("matmul", [a, a], name="scores", transpose_b=True))
    return g


def test_forms_without_an_hls4ml_layer_are_named(tmp_path):
    with pytest.raises(AccelError, match=r"^node rows: softmax_int over axis 0 has no hls4ml"):
        flow.write_project(_softmax_axis0(), tmp_path / "p")
    with pytest.raises(AccelError, match=r"^node scores: matmul with leading axes \(2,\)"):
        flow.predict(_heads_matmul(), np.zeros((1, 2, 4, 6), np.int64))
    assert not list(tmp_path.iterdir())


def deform_graph(mode: str, stride: int, seed: int = 4) -> Graph:
    """A deformable depthwise conv straight off the input, offsets from a 3x3 (square) or a
    1x1 (bilinear) offset conv with large weights and biases, so they span and pass the
    clip bounds; the exact accumulator is the output."""
    rng = np.random.default_rng(seed)
    r, frac = (3, 0) if mode == "square" else (2, 3)
    k = 1 if mode == "square" else 18
    ks = 3 if mode == "square" else 1
    xq = _q(8, 6, signed=False) if mode == "square" else _q(8, 5)
    g = Graph(f"deform_{mode}")
    x = g.add_input("x", (7, 6, 3), xq)
    w4, ow, ob = FixedType(4, 3), FixedType(8, 4), FixedType(12, 4)
    params = {
        "weight": Param(rng.integers(w4.min_int, w4.max_int + 1, (3, 3, 3)), w4),
        "bias": Param(rng.integers(-500, 500, 3), FixedType(16, 8)),
        "offset_weight": Param(rng.integers(ow.min_int, ow.max_int + 1, (ks, ks, 3, k)), ow),
        "offset_bias": Param(rng.integers(-40, 40, k), ob),
    }
    y = g.add(
        "deform_conv2d", x, name="dw", mode=mode, stride=stride, max_offset=r,
        offset_frac=frac, params=params,
    )  # fmt: skip
    g.mark_output(y)
    return g


@pytest.mark.parametrize(("mode", "stride"), [("square", 2), ("bilinear", 1)])
def test_deform_layer_bit_exact(mode, stride):
    g = deform_graph(mode, stride)
    x = np.concatenate([edge_inputs(g), random_inputs(g, 400, 5)])
    node = g.node("dw")
    off = reference.deform_offsets(node, x, g.tensors["x"])
    r = node.attrs["max_offset"] << node.attrs["offset_frac"]
    lo = 0 if mode == "square" else -r
    assert off.min() == lo and off.max() == r  # both clip bounds, and all between
    assert len(np.unique(off)) == r - lo + 1
    kinds = [n["class"] for n in flow._lower(g).nodes]
    assert kinds == ["Conv2D", "AccelDeformDW"]
    y = flow.predict(g, x)
    want = reference.predict(g, x)
    assert y.shape == want.shape and int((y != want).sum()) == 0
