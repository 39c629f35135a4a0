"""Deformable depthwise convolution: the vectorised reference against a loop oracle."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accel import reference
from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.ir import Graph, Param
from accel.ir.ops import conv_padding

X = Quant(FixedType(8, 8, signed=False), Rounding.RND, Overflow.SAT)
W4 = FixedType(4, 2)
OW = FixedType(6, 2)
OB = FixedType(10, 3)
BIAS = FixedType(12, 6)


def _graph(h, w, c, mode, stride, r, frac, rng, ob_value=None, ok=3):
    g = Graph("d")
    x = g.add_input("x", (h, w, c), X)
    k = {"regular": 0, "square": 1, "bilinear": 18}[mode]
    params = {
        "weight": Param(rng.integers(W4.min_int, W4.max_int + 1, (3, 3, c)), W4),
        "bias": Param(rng.integers(BIAS.min_int, BIAS.max_int + 1, c), BIAS),
    }
    if k:
        params["offset_weight"] = Param(rng.integers(-32, 32, (ok, ok, c, k)), OW)
        ob = rng.integers(-512, 512, k) if ob_value is None else np.full(k, ob_value)
        params["offset_bias"] = Param(ob, OB)
    y = g.add(
        "deform_conv2d", x, name="dc", params=params, mode=mode, stride=stride,
        max_offset=r, offset_frac=frac,
    )  # fmt: skip
    g.mark_output(y)
    return g


def _oracle(g: Graph, x: np.ndarray) -> np.ndarray:
    """Python ints and Fractions, one output at a time."""
    node = g.node("dc")
    mode, s, r, f = (node.attrs[k] for k in ("mode", "stride", "max_offset", "offset_frac"))
    w = node.params["weight"].data
    xf = X.type.frac
    n, h, wd, c = x.shape
    oh, top, _ = conv_padding(h, 3, s, "same")
    ow, left, _ = conv_padding(wd, 3, s, "same")

    def px(i, yy, xx, ch):
        return int(x[i, yy, xx, ch]) if 0 <= yy < h and 0 <= xx < wd else 0

    def offsets(i, oy, ox):
        owt, ob = node.params["offset_weight"], node.params["offset_bias"]
        ok = owt.data.shape[0]
        _, otop, _ = conv_padding(h, ok, s, "same")
        _, oleft, _ = conv_padding(wd, ok, s, "same")
        out = []
        for k in range(owt.data.shape[3]):
            acc = Fraction(int(ob.data[k]), 2**ob.type.frac)
            for ky in range(ok):
                for kx in range(ok):
                    for ch in range(c):
                        v = px(i, oy * s - otop + ky, ox * s - oleft + kx, ch)
                        acc += Fraction(v * int(owt.data[ky, kx, ch, k]), 2 ** (xf + OW.frac))
            q = (acc * 2**f + Fraction(1, 2)).__floor__()  # round half up to F bits
            lo = 0 if mode == "square" else -(r << f)
            out.append(min(max(q, lo), r << f))
        return out

    y = np.zeros((n, oh, ow, c), object)
    for i in range(n):
        for oy in range(oh):
            for ox in range(ow):
                cy, cx = oy * s - top + 1, ox * s - left + 1
                off = offsets(i, oy, ox) if mode != "regular" else None
                for ch in range(c):
                    acc = Fraction(int(node.params["bias"].data[ch]), 2**BIAS.frac)
                    for t in range(9):
                        ky, kx = t // 3 - 1, t % 3 - 1
                        if mode == "regular":
                            v = Fraction(px(i, cy + ky, cx + kx, ch))
                        elif mode == "square":
                            v = Fraction(px(i, cy + ky * off[0], cx + kx * off[0], ch))
                        else:
                            fy = Fraction(off[2 * t], 2**f) + cy + ky
                            fx = Fraction(off[2 * t + 1], 2**f) + cx + kx
                            y0, x0 = fy.__floor__(), fx.__floor__()
                            ay, ax = fy - y0, fx - x0
                            v = (
                                (1 - ay) * (1 - ax) * px(i, y0, x0, ch)
                                + (1 - ay) * ax * px(i, y0, x0 + 1, ch)
                                + ay * (1 - ax) * px(i, y0 + 1, x0, ch)
                                + ay * ax * px(i, y0 + 1, x0 + 1, ch)
                            )
                        acc += v * int(w[ky + 1, kx + 1, ch]) / 2 ** (xf + W4.frac)
                    y[i, oy, ox, ch] = acc
    acc_t = node.attrs["acc"]
    raw = np.vectorize(lambda v: int(v * 2**acc_t.frac))(y)
    assert all(v * 2**acc_t.frac == int(v * 2**acc_t.frac) for v in y.ravel())
    return raw.astype(np.int64)


@settings(max_examples=40, deadline=None)
@given(
    mode=st.sampled_from(["regular", "square", "bilinear"]),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    stride=st.sampled_from([1, 2]),
    r=st.integers(0, 4),
    frac=st.integers(0, 3),
    ok=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**16),
)
def test_reference_matches_loop_oracle(mode, h, w, stride, r, frac, ok, seed):
    rng = np.random.default_rng(seed)
    frac = 0 if mode != "bilinear" else frac
    g = _graph(h, w, 2, mode, stride, r, frac, rng, ok=ok)
    x = rng.integers(0, 256, (2, h, w, 2))
    x[0, 0, 0] = 255  # an extreme pixel
    assert np.array_equal(reference.predict(g, x), _oracle(g, x))


def test_square_with_unit_offsets_is_the_regular_conv():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (5, 9, 6, 8))
    for stride in (1, 2):
        sq = _graph(9, 6, 8, "square", stride, 7, 0, np.random.default_rng(2), ob_value=1 << 3)
        reg = _graph(9, 6, 8, "regular", stride, 0, 0, np.random.default_rng(2))
        sq.node("dc").params["offset_weight"].data[:] = 0
        assert np.array_equal(reference.predict(sq, x), reference.predict(reg, x))


def test_regular_mode_is_a_depthwise_conv2d():
    rng = np.random.default_rng(3)
    reg = _graph(8, 8, 4, "regular", 2, 0, 0, rng)
    node = reg.node("dc")
    dense_w = np.zeros((3, 3, 4, 4), np.int64)
    for ch in range(4):
        dense_w[:, :, ch, ch] = node.params["weight"].data[:, :, ch]
    g = Graph("c")
    x = g.add_input("x", (8, 8, 4), X)
    y = g.add(
        "conv2d", x, name="c", stride=2, padding="same",
        params={"weight": Param(dense_w, W4), "bias": node.params["bias"]},
    )  # fmt: skip
    g.mark_output(y)
    xs = rng.integers(0, 256, (6, 8, 8, 4))
    assert np.array_equal(reference.predict(reg, xs), reference.predict(g, xs))


@pytest.mark.parametrize("ob_value, want", [(-512, 0), (511, 3)])
def test_square_offsets_clip_to_the_range(ob_value, want):
    g = _graph(6, 6, 2, "square", 1, 3, 0, np.random.default_rng(4), ob_value=ob_value)
    g.node("dc").params["offset_weight"].data[:] = 0
    node = g.node("dc")
    x = np.random.default_rng(5).integers(0, 256, (2, 6, 6, 2))
    off = reference.deform_offsets(node, x, g.tensors["x"])
    assert off.shape == (2, 6, 6, 1) and np.all(off == want)


@pytest.mark.parametrize(
    "attrs, params, match",
    [
        ({"mode": "wobbly"}, {}, "mode must be one of"),
        ({"mode": "square", "offset_frac": 2}, {}, "offset_frac must be"),
        ({"mode": "square", "max_offset": 99}, {}, "max_offset must be"),
        ({"stride": 3}, {}, "stride must be 1 or 2"),
        ({}, {"weight": Param(np.zeros((3, 3, 3), np.int64), W4)}, r"weight must be \(3, 3, 2\)"),
        ({"mode": "bilinear"}, {}, r"offset_weight \(3, 3, 2, 18\) or \(1, 1, 2, 18\)"),
    ],
)
def test_bad_nodes_are_one_line_errors(attrs, params, match):
    g = Graph("d")
    x = g.add_input("x", (4, 4, 2), X)
    ps = {"weight": Param(np.zeros((3, 3, 2), np.int64), W4), **params}
    with pytest.raises(AccelError, match=match):
        g.add("deform_conv2d", x, name="dc", params=ps, **attrs)


def test_save_load_round_trip(tmp_path):
    from accel.ir import load, save

    g = _graph(6, 5, 2, "bilinear", 2, 3, 2, np.random.default_rng(6))
    save(g, tmp_path / "d")
    g2 = load(tmp_path / "d")
    assert g2.node("dc").attrs == g.node("dc").attrs
    x = np.random.default_rng(7).integers(0, 256, (4, 6, 5, 2))
    assert np.array_equal(reference.predict(g, x), reference.predict(g2, x))
