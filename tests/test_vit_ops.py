"""ViT plumbing ops (patchify, add_const, concat) and dense over token axes: reference
kernels against Python-int loops, edge values, typing errors and save/load."""

import numpy as np
import pytest

from accel import reference
from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.ir import Graph, Param, load, save

S8 = FixedType(8, 4)
Q8 = Quant(S8, Rounding.RND, Overflow.SAT)


def _extremes(shape, t: FixedType, seed: int) -> np.ndarray:
    """A batch of 4: all minimum, all maximum, all zero, random."""
    rng = np.random.default_rng(seed)
    return np.stack(
        [
            np.full(shape, t.min_int),
            np.full(shape, t.max_int),
            np.zeros(shape, np.int64),
            rng.integers(t.min_int, t.max_int + 1, shape),
        ]
    ).astype(np.int64)


def test_patchify_order_and_edges():
    g = Graph("p")
    x = g.add_input("x", (8, 12, 2), Quant(FixedType(8, 8, signed=False)))
    y = g.add("patchify", x, name="pt", patch=4)
    g.mark_output(y)
    assert g.tensors[y].shape == (6, 32) and g.tensors[y].type == FixedType(8, 8, signed=False)
    xs = _extremes((8, 12, 2), FixedType(8, 8, signed=False), 1)
    out = reference.predict(g, xs)
    for n in range(len(xs)):
        for ty in range(2):
            for tx in range(3):
                tok = ty * 3 + tx
                want = [
                    int(xs[n, ty * 4 + py, tx * 4 + px, c])
                    for py in range(4)
                    for px in range(4)
                    for c in range(2)
                ]
                assert out[n, tok].tolist() == want


def test_patchify_errors():
    g = Graph("p")
    x = g.add_input("x", (10, 8, 1), Q8)
    with pytest.raises(AccelError, match="not a whole number of 4x4 patches"):
        g.add("patchify", x, patch=4)
    v = g.add_input("v", (16,), Q8)
    with pytest.raises(AccelError, match=r"patchify expects an \(H, W, C\) input"):
        g.add("patchify", v, patch=4)
    with pytest.raises(AccelError, match="patch must be an integer"):
        g.add("patchify", x, patch=0)


def _add_const_graph(xt: FixedType, vt: FixedType, value: np.ndarray) -> Graph:
    g = Graph("ac")
    x = g.add_input("x", value.shape, Quant(xt))
    y = g.add("add_const", x, name="pos", params={"value": Param(value, vt)})
    g.mark_output(y)
    return g


@pytest.mark.parametrize(
    "xt, vt", [(FixedType(8, 4), FixedType(8, 6)), (FixedType(8, 7), FixedType(8, 2))]
)
def test_add_const_is_exact_at_the_extremes(xt, vt):
    value = _extremes((3, 8), vt, 2)[3].copy()
    value[0] = vt.min_int  # max negative + max negative
    value[1] = vt.max_int
    g = _add_const_graph(xt, vt, value)
    out_t = g.tensors["pos"].type
    assert out_t.frac == max(xt.frac, vt.frac)
    xs = _extremes((3, 8), xt, 3)
    out = reference.predict(g, xs)
    assert out_t.contains(out)
    f = out_t.frac
    for n in range(len(xs)):
        for i in range(3):
            for j in range(8):
                want = (int(xs[n, i, j]) << (f - xt.frac)) + (int(value[i, j]) << (f - vt.frac))
                assert int(out[n, i, j]) == want
    assert out[2].tolist() == (value.astype(np.int64) << (f - vt.frac)).tolist()  # zero input


def test_add_const_requantize_saturates():
    vt = FixedType(8, 4)
    g = Graph("ac")
    x = g.add_input("x", (2, 8), Q8)
    y = g.add("add_const", x, params={"value": Param(np.full((2, 8), vt.max_int), vt)})
    y = g.add("requantize", y, name="q", quant=Q8)
    g.mark_output(y)
    xs = _extremes((2, 8), S8, 4)
    out = reference.predict(g, xs)
    assert (out[1] == 127).all()  # max + max saturates
    assert (out[0] == -1).all()  # -128 + 127, exact
    assert (out[2] == 127).all()


def test_add_const_errors():
    g = Graph("ac")
    x = g.add_input("x", (2, 8), Q8)
    with pytest.raises(AccelError, match=r"'value' parameter of shape \(2, 8\), got \(8,\)"):
        g.add("add_const", x, params={"value": Param(np.zeros(8, np.int64), S8)})
    with pytest.raises(AccelError, match="'value' parameter"):
        g.add("add_const", x)


def test_concat_of_heads():
    g = Graph("c")
    a = g.add_input("a", (4, 8), Q8)
    b = g.add_input("b", (4, 16), Q8)
    c = g.add_input("c", (4, 8), Q8)
    y = g.add("concat", [a, b, c], name="cat")
    g.mark_output(y)
    assert g.tensors[y].shape == (4, 32) and g.tensors[y].type == S8
    xa, xb, xc = (_extremes((4, k), S8, k) for k in (8, 16, 8))
    out = reference.run(g, {"a": xa, "b": xb, "c": xc})["cat"]
    for n in range(4):
        for t in range(4):
            assert out[n, t].tolist() == xa[n, t].tolist() + xb[n, t].tolist() + xc[n, t].tolist()
    one = Graph("one")
    z = one.add("concat", [one.add_input("z", (3, 8), Q8)])
    assert one.tensors[z].shape == (3, 8)


def test_concat_errors():
    g = Graph("c")
    a = g.add_input("a", (4, 8), Q8)
    b = g.add_input("b", (4, 8), Quant(FixedType(8, 3)))
    c = g.add_input("c", (5, 8), Q8)
    with pytest.raises(AccelError, match="concat needs inputs of one type"):
        g.add("concat", [a, b])
    with pytest.raises(AccelError, match="concat needs equal leading axes"):
        g.add("concat", [a, c])
    with pytest.raises(AccelError, match="concat needs at least one input"):
        g.add("concat", [])


def test_dense_over_tokens_equals_a_loop():
    wt, bt = FixedType(8, 6), FixedType(16, 10)
    rng = np.random.default_rng(5)
    w = rng.integers(wt.min_int, wt.max_int + 1, (8, 16))
    w[:, 0] = wt.min_int  # max negative weights on max negative inputs
    b = rng.integers(bt.min_int, bt.max_int + 1, 16)
    g = Graph("d")
    x = g.add_input("x", (5, 8), Q8)
    y = g.add("dense", x, name="fc", params={"weight": Param(w, wt), "bias": Param(b, bt)})
    g.mark_output(y)
    acc = g.node("fc").attrs["acc"]
    assert g.tensors[y].shape == (5, 16) and acc.frac == 10 and acc.width <= 32
    xs = _extremes((5, 8), S8, 6)
    out = reference.predict(g, xs)
    for n in range(len(xs)):
        for t in range(5):
            for o in range(16):
                want = sum(int(xs[n, t, k]) * int(w[k, o]) for k in range(8)) + int(b[o])
                assert int(out[n, t, o]) == want
    assert out[0, 0, 0] == 8 * 128 * 128 + int(b[0])  # (-128) * (-128) summed


def test_dense_vector_behaviour_unchanged():
    g = Graph("d")
    x = g.add_input("x", (8,), Q8)
    w = np.arange(16).reshape(8, 2) - 8
    y = g.add("dense", x, params={"weight": Param(w, FixedType(8, 0))})
    g.mark_output(y)
    assert g.tensors[y].shape == (2,)
    xs = _extremes((8,), S8, 7)
    np.testing.assert_array_equal(reference.predict(g, xs), xs @ w)
    with pytest.raises(AccelError, match=r"dense expects input shape \(8,\) or \(\.\.\., 8\)"):
        g.add("dense", g.add_input("z", (4, 7), Q8), params={"weight": Param(w, FixedType(8, 0))})


def test_save_load_round_trip(tmp_path):
    g = Graph("vit_bits")
    x = g.add_input("img", (8, 8, 1), Quant(FixedType(8, 8, signed=False), Rounding.RND))
    p = g.add("patchify", x, name="patch", patch=4)
    rng = np.random.default_rng(8)
    w = Param(rng.integers(-128, 128, (16, 8)), FixedType(8, 7))
    e = g.add("dense", p, name="embed", params={"weight": w})
    e = g.add("requantize", e, name="embed_q", quant=Q8)
    pos = Param(rng.integers(-128, 128, (4, 8)), FixedType(8, 5))
    e = g.add("add_const", e, name="pos", params={"value": pos})
    e = g.add("requantize", e, name="pos_q", quant=Q8)
    y = g.add("concat", [e, e], name="cat")
    g.mark_output(y)
    save(g, tmp_path / "g")
    h = load(tmp_path / "g")
    assert [(n.name, n.op, n.inputs, n.attrs) for n in h.nodes] == [
        (n.name, n.op, n.inputs, n.attrs) for n in g.nodes
    ]
    assert {k: (t.shape, t.type) for k, t in h.tensors.items()} == {
        k: (t.shape, t.type) for k, t in g.tensors.items()
    }
    xs = _extremes((8, 8, 1), FixedType(8, 8, signed=False), 9)
    np.testing.assert_array_equal(reference.predict(h, xs), reference.predict(g, xs))
