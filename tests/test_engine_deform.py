"""Depthwise and deformable convolutions on the engine: bit-exact and cycle-exact."""

import numpy as np
import pytest

from accel import reference
from accel.engine.config import EngineConfig
from accel.engine.graph import compile_graph, depthwise_b
from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.ir import Graph, Param
from accel.sim.engine import run_graph

ACT = Quant(FixedType(8, 4, False), Rounding.RND, Overflow.SAT)
W4 = FixedType(4, 2)
W8 = FixedType(8, 6)
OFF_W = FixedType(4, 3)  # offset conv weights: a few LSBs each, so offsets spread over 0..R
OFF_B = FixedType(8, 2)


def _around(name: str, h: int, w: int, rng, body) -> Graph:
    """Input, a stem conv, ``body(g, x)`` (the deformable layers), a pointwise conv out."""
    g = Graph(name)
    x = g.add_input("x", (h, w, 1), Quant(FixedType(8, 8, False), Rounding.RND, Overflow.SAT))
    x = g.add(
        "conv2d", x, name="stem", padding="same",
        params={"weight": Param(rng.integers(-128, 128, (3, 3, 1, 8)), W8),
                "bias": Param(rng.integers(-128, 128, 8), W8)},
    )  # fmt: skip
    x = g.add("requantize", g.add("relu", x), quant=ACT)
    x = body(g, x)
    x = g.add(
        "conv2d", x, name="pw",
        params={"weight": Param(rng.integers(-128, 128, (1, 1, 8, 16)), W8),
                "bias": Param(rng.integers(-128, 128, 16), W8)},
    )  # fmt: skip
    g.mark_output(x)
    return g


def deform_net(seed: int, r1: int = 3, r2: int = 7, h: int = 7, w: int = 6) -> Graph:
    """A stem conv, a square deformable conv (stride 1), another (stride 2, 1x1 offset
    conv), a regular depthwise conv and a pointwise conv that streams out."""
    rng = np.random.default_rng(seed)

    def body(g: Graph, x: str) -> str:
        for name, mode, stride, r, ok in (
            ("d1", "square", 1, r1, 3),
            ("d2", "square", 2, r2, 1),
            ("d3", "regular", 1, 0, 0),
        ):
            params = {
                "weight": Param(rng.integers(-8, 8, (3, 3, 8)), W4),
                "bias": Param(rng.integers(-8, 8, 8), W4),
            }
            if mode == "square":
                spread = 2 if ok == 3 else 7  # a 1x1 conv sums fewer terms: larger weights
                params["offset_weight"] = Param(
                    rng.integers(-spread, spread + 1, (ok, ok, 8, 1)), OFF_W
                )
                params["offset_bias"] = Param(np.array([2 * r]), OFF_B)  # R / 2 pixels
            x = g.add(
                "deform_conv2d", x, name=name, mode=mode, stride=stride, max_offset=r,
                params=params,
            )  # fmt: skip
            x = g.add("requantize", g.add("relu", x), quant=ACT)
        return x

    return _around("deform", h, w, rng, body)


def test_deformable_net_is_bit_exact_and_cycle_exact(engine_cfg):
    g = deform_net(1)
    x = np.random.default_rng(2).integers(0, 256, (21, 7, 6, 1))
    x[0], x[1] = 0, 255
    # the offsets spread over the range, clipped at 0 (d1) and at R (both)
    for name, must in (("d1", {0, 1, 2, 3}), ("d2", {3, 4, 5, 6, 7})):
        node = g.node(name)
        off = reference.deform_offsets(
            node, reference.run(g, x)[node.inputs[0]], g.tensors[node.inputs[0]]
        )
        assert must <= set(np.unique(off).tolist()), name
    y, run = run_graph(g, engine_cfg, x)
    np.testing.assert_array_equal(y, reference.predict(g, x))
    assert run.cycles_match
    util = {t.name: t.utilisation for t in reversed(run.model.gemms)}  # the first (full) chunk
    # a depthwise tile uses every PE on every step (cols == group)
    assert min(util["d1"], util["d3"]) > 0.9


def test_depthwise_weights_feed_each_column_its_own_lane():
    cfg = EngineConfig(rows=4, cols=16, group=8)
    w = np.arange(1, 9 * 20 + 1).reshape(3, 3, 20)
    b = depthwise_b(w, cfg)
    assert b.shape == (9 * 16, 20)
    # channel 13: column 13 of its tile, block 1, lane 5; exactly its 9 taps are set
    rows = np.flatnonzero(b[:, 13])
    assert list(rows) == [t * 16 + 8 + 5 for t in range(9)]
    assert list(b[rows, 13]) == list(w.reshape(9, 20)[:, 13])
    assert np.count_nonzero(b) == 9 * 20


def test_engine_refuses_offsets_beyond_its_range_and_bilinear(engine_cfg):
    small = EngineConfig(**{**engine_cfg.to_json(), "max_offset": 3})
    x = np.zeros((4, 7, 6, 1), np.int64)
    with pytest.raises(
        AccelError, match="node d2: offsets range up to 7, but the engine was built for 3"
    ):
        compile_graph(deform_net(1), small, x)
    g = deform_net(1)
    node = g.node("d1")
    node.attrs["mode"] = "bilinear"
    with pytest.raises(AccelError, match="node d1: bilinear offsets with 0 fraction bits, but "):
        compile_graph(g, engine_cfg, x)
    tiny = EngineConfig(**{**engine_cfg.to_json(), "offset_depth": 40})
    with pytest.raises(
        AccelError, match=r"d1\.offsets: 42 offsets per sample take 42 words, the offset memo"
    ):
        compile_graph(deform_net(1), tiny, x)


@pytest.mark.parametrize("variant", ["square", "regular"])
def test_zoo_detector_on_the_engine_with_extreme_offsets(variant):
    """deform_det's heatmaps and boxes, bit-exact and cycle-exact; for the square variant one
    layer's offsets are forced to 0 everywhere and another's to R (7) everywhere."""
    from accel.zoo import get

    model = get(f"deform_det@{variant}")
    g = model.build()
    x = reference.quantize_inputs(g, g.inputs[0], model.make_inputs(10, 11))
    x[0], x[1] = 0, 255
    if variant == "square":
        for name, low in (("b_dw", True), ("c_dw", False)):
            for p in ("offset_weight", "offset_bias"):  # ReLU'd inputs: the sum follows
                t = g.node(name).params[p]
                t.data[:] = t.type.min_int if low else t.type.max_int
    cfg = EngineConfig(rows=4, cols=8, group=8, a_depth=2048, b_depth=4096, bias_depth=64)
    y, run = run_graph(g, cfg, x)
    np.testing.assert_array_equal(y, reference.predict(g, x))
    assert run.cycles_match
    if variant == "square":
        values = reference.run(g, x)
        for name, want in (("b_dw", {0}), ("c_dw", {7})):
            node = g.node(name)
            t = node.inputs[0]
            off = reference.deform_offsets(node, values[t], g.tensors[t])
            assert set(np.unique(off).tolist()) == want, name


def bilinear_net(seed: int, frac: int, r: int = 3) -> Graph:
    """A stem conv, two bilinear deformable convs (3x3 offsets, stride 1; 1x1 offsets,
    stride 2) and a pointwise conv that streams out."""
    rng = np.random.default_rng(seed)

    def body(g: Graph, x: str) -> str:
        for name, stride, ok in (("b1", 1, 3), ("b2", 2, 1)):
            spread = 2 if ok == 3 else 7
            params = {
                "weight": Param(rng.integers(-8, 8, (3, 3, 8)), W4),
                "bias": Param(rng.integers(-8, 8, 8), W4),
                "offset_weight": Param(rng.integers(-spread, spread + 1, (ok, ok, 8, 18)), OFF_W),
                "offset_bias": Param(rng.integers(-4 * r, 4 * r + 1, 18), OFF_B),
            }
            x = g.add(
                "deform_conv2d", x, name=name, mode="bilinear", stride=stride, max_offset=r,
                offset_frac=frac, params=params,
            )  # fmt: skip
            x = g.add("requantize", g.add("relu", x), quant=ACT)
        return x

    return _around("bilinear", 7, 6, rng, body)


def test_bilinear_sampler_is_bit_exact_and_cycle_exact():
    cfg = EngineConfig(
        rows=4, cols=8, group=8, a_depth=512, b_depth=4096, bias_depth=64, bilinear_frac=3
    )
    g = bilinear_net(3, frac=3)
    x = np.random.default_rng(4).integers(0, 256, (13, 7, 6, 1))
    x[0], x[1] = 0, 255
    values = reference.run(g, x)
    for name in ("b1", "b2"):
        node = g.node(name)
        off = reference.deform_offsets(node, values[node.inputs[0]], g.tensors[node.inputs[0]])
        # both clip bounds, and fractional parts of every kind
        assert off.min() == -3 * 8 and off.max() == 3 * 8, name
        assert len(np.unique(off % 8)) == 8, name
    y, run = run_graph(g, cfg, x)
    np.testing.assert_array_equal(y, reference.predict(g, x))
    assert run.cycles_match
    # four corner reads per tap: a quarter of the square sampler's rate
    util = {t.name: t.utilisation for t in reversed(run.model.gemms)}  # the first (full) chunk
    assert 0.24 < util["b1"] <= 0.25
    with pytest.raises(AccelError, match="node b1: bilinear offsets with 2 fraction bits, but"):
        compile_graph(bilinear_net(3, frac=2), cfg, x)


def test_cli_runs_the_bilinear_detector_and_refuses_bad_input(tmp_path):
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "accel.cli"]
    sim = [*cmd, "sim", "deform_det@bilinear", "--arch", "engine", "--array", "4x8"]
    r = subprocess.run(
        [*sim, "--bank-words", "2048", "--samples", "6", "--json"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["mismatches"] == 0 and doc["cycles_match_model"] is True
    assert "a_dw.offsets" in [d["gemm"] for d in doc["layers"]]

    def last_line(args):
        bad = subprocess.run([*cmd, *args], capture_output=True, text=True)
        assert bad.returncode != 0
        return bad.stderr.strip().splitlines()[-1]

    assert "the banks hold 512" in last_line([*sim[3:], "--bank-words", "512", "--samples", "2"])
    assert "built without a bilinear sampler" in last_line(
        [*sim[3:], "--bank-words", "2048", "--bilinear-frac", "0", "--samples", "2"]
    )
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 24, 24, 1)))
    out = tmp_path / "y.npy"
    msg = last_line(["predict", "deform_det", "--inputs", str(wrong), "--out", str(out)])
    assert "expected shape (N, 32, 32, 1), got (2, 24, 24, 1)" in msg and not out.exists()
