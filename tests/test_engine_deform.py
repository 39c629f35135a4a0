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


@pytest.mark.parametrize("variant", ["square", "regular", "square1x1"])
def test_zoo_detector_on_the_engine_with_extreme_offsets(variant):
    """deform_det's heatmaps and boxes, bit-exact and cycle-exact; for the square variants
    (3x3 and 1x1 offset convs) one layer's offsets are forced to 0 everywhere and another's
    to R (7) everywhere."""
    from accel.zoo import get

    model = get(f"deform_det@{variant}")
    g = model.build()
    x = reference.quantize_inputs(g, g.inputs[0], model.make_inputs(10, 11))
    x[0], x[1] = 0, 255
    if variant.startswith("square"):
        for name, low in (("b_dw", True), ("c_dw", False)):
            for p in ("offset_weight", "offset_bias"):  # ReLU'd inputs: the sum follows
                t = g.node(name).params[p]
                t.data[:] = t.type.min_int if low else t.type.max_int
    cfg = EngineConfig(rows=4, cols=8, group=8, a_depth=2048, b_depth=4096, bias_depth=64)
    y, run = run_graph(g, cfg, x)
    np.testing.assert_array_equal(y, reference.predict(g, x))
    assert run.cycles_match
    if variant.startswith("square"):
        values = reference.run(g, x)
        for name, want in (("b_dw", {0}), ("c_dw", {7})):
            node = g.node(name)
            t = node.inputs[0]
            off = reference.deform_offsets(node, values[t], g.tensors[t])
            if variant == "square1x1" and name == "c_dw":
                # a 1x1 offset conv sees one pixel: a faint one gives the bias (whose type
                # stops short of 7) and little more, so only some pixels reach R
                assert off.max() == 7 and off.min() >= 5, name
                continue
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


# -- offset convs with their reduction split across the columns -------------------------
BIL = EngineConfig(
    rows=4, cols=8, group=8, a_depth=512, b_depth=4096, bias_depth=64, bilinear_frac=3
)  # the bilinear test's engine


def test_split_offset_conv_sums_to_the_conv_and_is_chosen_when_faster():
    from accel import nm
    from accel.engine.graph import reduce_offsets, spread_offsets

    rng = np.random.default_rng(5)
    w2, bias = rng.integers(-128, 128, (72, 18)), rng.integers(-1000, 1000, 18)
    b, bb = spread_offsets(w2, bias, 8)
    assert b.shape == (72, 18 * 8) and bb.shape == (18 * 8,)
    nm.check(b, nm.NM(1, 8), 0, "spread")  # one weight of every group of 8 per column
    a = rng.integers(-256, 256, (5, 72))
    # the drain sums each output's 8 columns (a word); the bias rides on lane 0
    np.testing.assert_array_equal((a @ b + bb).reshape(5, 18, 8).sum(-1), a @ w2 + bias)
    assert reduce_offsets(BIL, 72, 1) and reduce_offsets(BIL, 72, 18)
    # 1x1 over one group: 18 drain-bound tiles against 3 tiles of 8 steps
    assert not reduce_offsets(BIL, 8, 18)
    # 18 results a pixel need lane writes, which only a bilinear engine's memories take
    assert not reduce_offsets(EngineConfig(rows=4, cols=8, group=8), 72, 18)


def split_net(seed: int, channels: int, layers, h: int = 6, w: int = 7) -> Graph:
    """A stem conv to ``channels``, deformable layers ``(name, mode, stride, R, offset
    kernel, offset fraction bits, offset accumulator or None)`` with offset weights at
    their type's extremes, and a pointwise conv that streams out."""
    rng = np.random.default_rng(seed)
    g = Graph(f"split{seed}")
    x = g.add_input("x", (h, w, 1), Quant(FixedType(8, 8, False), Rounding.RND, Overflow.SAT))
    x = g.add(
        "conv2d", x, name="stem", padding="same",
        params={"weight": Param(rng.integers(-128, 128, (3, 3, 1, channels)), W8),
                "bias": Param(rng.integers(-128, 128, channels), W8)},
    )  # fmt: skip
    x = g.add("requantize", g.add("relu", x), quant=ACT)
    for name, mode, stride, r, ok, frac, acc in layers:
        n_off = 1 if mode == "square" else 18
        scale = 1 << frac  # offsets in units of 2**-frac
        params = {
            "weight": Param(rng.integers(-8, 8, (3, 3, channels)), W4),
            "bias": Param(rng.integers(-8, 8, channels), W4),
            "offset_weight": Param(
                rng.choice([OFF_W.min_int, 0, OFF_W.max_int], (ok, ok, channels, n_off)), OFF_W
            ),
            "offset_bias": Param(rng.integers(-2 * r * scale, 4 * r * scale + 1, n_off), OFF_B),
        }
        extra = {} if acc is None else {"offset_acc": acc}
        x = g.add(
            "deform_conv2d", x, name=name, mode=mode, stride=stride, max_offset=r,
            offset_frac=frac, params=params, **extra,
        )  # fmt: skip
        x = g.add("requantize", g.add("relu", x), quant=ACT)
    x = g.add(
        "conv2d", x, name="pw",
        params={"weight": Param(rng.integers(-128, 128, (1, 1, channels, 16)), W8),
                "bias": Param(rng.integers(-128, 128, 16), W8)},
    )  # fmt: skip
    g.mark_output(x)
    return g


def _inputs(g: Graph, n: int) -> np.ndarray:
    x = np.random.default_rng(7).integers(0, 256, (n, *g.tensors[g.inputs[0]].shape))
    x[0], x[1] = 0, 255
    x[2, ::2] = 255  # stripes: rows of 255 against rows of 0
    x[2, 1::2] = 0
    return x


def _run_split(g: Graph, cfg: EngineConfig, n: int, split: set[str]):
    """``g`` on the engine, bit-exact and cycle-exact; the offset convs in ``split`` (and
    only those) run with their reduction across the columns."""
    x = _inputs(g, n)
    prog, _ = compile_graph(g, cfg, x)
    assert {p.name for p in prog.gemms if p.reduce} == split
    y, run = run_graph(g, cfg, x)
    np.testing.assert_array_equal(y, reference.predict(g, x))
    assert run.cycles_match
    return reference.run(g, x), run


def _offsets(g: Graph, values: dict, name: str) -> np.ndarray:
    node = g.node(name)
    return reference.deform_offsets(node, values[node.inputs[0]], g.tensors[node.inputs[0]])


def test_split_offset_convs_wrap_and_clip_exactly(engine_cfg):
    """Square and bilinear offset convs split across the columns, bit- and cycle-exact, with
    weights at their extremes, accumulators that wrap (11 bits) and offsets at both bounds."""
    wrap = FixedType(11, 7)  # input frac 4 + weight frac 3: sums wrap beyond +-8
    for cfg, mode, r, frac, n in ((engine_cfg, "square", 7, 0, 12), (BIL, "bilinear", 3, 3, 8)):
        layers = [("d1", mode, 1, r, 3, frac, wrap), ("d2", mode, 2, r, 3, frac, None)]
        g = split_net(11, 8, layers)
        values, run = _run_split(g, cfg, n, {"d1.offsets", "d2.offsets"})
        util = {t.name: t.utilisation for t in reversed(run.model.gemms)}  # the full chunk
        # every column busy (one offset on one column ran at 1/8, 18 on 24 at 3/4); short
        # GEMMs pay the pipeline
        assert util["d1.offsets"] > 0.85 and util["d2.offsets"] > 0.85, mode
        lo, hi = (0, r) if mode == "square" else (-r * 8, r * 8)
        for name in ("d1", "d2"):
            off = _offsets(g, values, name)
            assert off.min() == lo and off.max() == hi, (mode, name)
            assert len(np.unique(off)) > 4, (mode, name)
        # the wrap matters: in the derived (wide) accumulator many offsets differ
        wide = split_net(11, 8, [(*layers[0][:-1], None), layers[1]])
        x = _inputs(g, n)
        d1 = [_offsets(h, reference.run(h, x), "d1") for h in (g, wide)]
        assert (d1[0] != d1[1]).mean() > 0.1, mode


def test_split_offset_convs_on_a_wide_array():
    """16 columns (two words a row): the 18 bilinear offsets leave two a tile, the square
    offset beside a padded result, each into its own lane."""
    cfg = EngineConfig(
        rows=2, cols=16, group=8, a_depth=512, b_depth=4096, bias_depth=64, bilinear_frac=3
    )
    g = split_net(
        13, 16, [("s", "square", 1, 5, 3, 0, None), ("b", "bilinear", 2, 3, 3, 3, None)], h=5
    )
    values, _ = _run_split(g, cfg, 5, {"s.offsets", "b.offsets"})
    assert {0, 5} <= set(np.unique(_offsets(g, values, "s")).tolist())
    off = _offsets(g, values, "b")
    assert off.min() == -3 * 8 and off.max() == 3 * 8


def test_offset_convs_stay_whole_when_only_that_fits_the_bias_buffer():
    """Split, an 18-offset conv takes 18 bias words instead of 3: a graph that fits only
    without the split compiles without it; one that fits neither way names the buffer."""
    layers = [("d1", "bilinear", 1, 3, 3, 3, None), ("d2", "bilinear", 2, 3, 3, 3, None)]
    g = split_net(12, 8, layers)
    x = _inputs(g, 4)

    def split(bias_depth: int) -> list[str]:
        cfg = EngineConfig(**{**BIL.to_json(), "bias_depth": bias_depth})
        prog, _ = compile_graph(g, cfg, x)
        return [p.name for p in prog.gemms if p.reduce]

    assert split(64) == ["d1.offsets", "d2.offsets"]  # 41 bias words
    assert split(32) == []  # 11 bias words
    with pytest.raises(AccelError, match=r"words of the bias buffer, which holds 8"):
        split(8)
