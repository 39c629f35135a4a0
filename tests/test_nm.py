"""N:M patterns, masks, the compressed format, and reference execution from it."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from accel import nm, reference
from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.ir import Graph, Param

PATTERNS = [(1, 4), (2, 4), (2, 8), (1, 2), (3, 3), (4, 8)]


@st.composite
def sparse_weights(draw):
    n, m = draw(st.sampled_from(PATTERNS))
    groups, cols = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    w = draw(hnp.arrays(np.int64, (groups * m, cols), elements=st.integers(-128, 127)))
    return w * nm.mask(w, nm.NM(n, m)), nm.NM(n, m)


@settings(max_examples=150, deadline=None)
@given(sparse_weights(), st.sampled_from([0, 1]))
def test_compress_round_trips_exactly(wp, axis):
    w, pattern = wp
    w = w if axis == 0 else np.ascontiguousarray(w.T)
    c = nm.compress(w, pattern, axis)
    assert c.values.shape == c.index.shape == (w.shape[axis] // pattern.m, pattern.n, c.columns)
    assert (c.index >= 0).all() and (c.index < pattern.m).all()
    assert (np.diff(c.index, axis=1) > 0).all()  # distinct, ascending within a group
    np.testing.assert_array_equal(nm.decompress(c), w)


@settings(max_examples=100, deadline=None)
@given(sparse_weights(), st.integers(0, 2**31 - 1))
def test_compressed_matmul_equals_dense(wp, seed):
    w, pattern = wp
    x = np.random.default_rng(seed).integers(-128, 128, (7, w.shape[0]))
    x[0] = -128  # max negative
    np.testing.assert_array_equal(nm.matmul_compressed(x, nm.compress(w, pattern)), x @ w)


def test_mask_keeps_the_largest_and_respects_the_pattern():
    w = np.array([[5, -1], [-7, 2], [0, 3], [1, -3]])
    keep = nm.mask(w, nm.NM(2, 4))
    assert keep[:, 0].tolist() == [True, True, False, False]
    assert keep[:, 1].tolist() == [False, False, True, True]  # tie 3/-3: both largest
    rng = np.random.default_rng(0)
    for n, m in PATTERNS:
        w = rng.integers(-50, 50, (4 * m, 6 * m))
        for axis in (0, 1):
            k = nm.mask(w, nm.NM(n, m), axis)
            assert nm.violations(w * k, nm.NM(n, m), axis) == 0
            assert k.sum() == n * w.size // m


def test_bidirectional_mask_holds_both_patterns():
    """BDWP: the forward mask groups W's rows, the backward mask groups W^T's rows."""
    rng = np.random.default_rng(1)
    w = rng.integers(-9, 10, (16, 24))
    p = nm.NM(2, 8)
    fwd, bwd = w * nm.mask(w, p, 0), w * nm.mask(w, p, 1)
    assert nm.violations(fwd, p, 0) == 0 and nm.violations(bwd, p, 1) == 0
    assert nm.violations(bwd.T, p, 0) == 0
    np.testing.assert_array_equal(nm.decompress(nm.compress(bwd, p, 1)), bwd)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3:2", "N must not exceed M"),
        ("0:4", "N, M >= 1"),
        ("2-4", "must look like '2:8'"),
    ],
)
def test_bad_patterns(text, message):
    with pytest.raises(AccelError, match=message):
        nm.NM.parse(text)


def test_bad_weights_name_the_problem():
    with pytest.raises(AccelError, match=r"fc: M=8 does not divide the group dimension \(12"):
        nm.compress(np.zeros((12, 3), np.int64), nm.NM(2, 8), 0, "fc")
    w = np.ones((8, 2), np.int64)
    with pytest.raises(AccelError, match=r"fc: 4 group\(s\) have more than 2 non-zeros of 4"):
        nm.compress(w, nm.NM(2, 4), 0, "fc")


def _graph(w_dense, w_conv, pattern, pattern_t=None):
    q8 = Quant(FixedType(8, 4), Rounding.RND, Overflow.SAT)
    wt = FixedType(8, 6)
    g = Graph("nm")
    x = g.add_input("x", (6, 6, 8), q8)
    x = g.add(
        "conv2d",
        x,
        name="conv",
        nm=pattern,
        params={"weight": Param(w_conv, wt), "bias": Param(np.arange(4) - 2, wt)},
        padding="same",
    )
    x = g.add("relu", x)
    x = g.add("requantize", x, quant=q8)
    x = g.add("reshape", x, shape=(144,))
    x = g.add(
        "dense",
        x,
        name="fc",
        nm=pattern,
        nm_t=pattern_t,
        params={"weight": Param(w_dense, wt), "bias": Param(np.arange(8) * 3, wt)},
    )
    g.mark_output(x)
    return g


def test_reference_runs_from_compressed_weights():
    rng = np.random.default_rng(2)
    p = nm.NM(2, 8)
    wc = rng.integers(-128, 128, (3, 3, 8, 4))
    wc = wc * nm.mask(wc.reshape(-1, 4), p).reshape(wc.shape)
    wd = rng.integers(-128, 128, (144, 8))
    wd = wd * nm.mask(wd, p)
    g = _graph(wd, wc, "2:8")
    x = rng.integers(-128, 128, (50, 6, 6, 8))
    x[0], x[1] = -128, 127
    dense, comp = reference.run(g, x), reference.run(g, x, compressed=True)
    for name in dense:
        np.testing.assert_array_equal(dense[name], comp[name])
    assert g.node("fc").attrs["nm"] == nm.NM(2, 8)


def test_graph_refuses_weights_that_break_the_declared_pattern():
    rng = np.random.default_rng(3)
    wc = rng.integers(-128, 128, (3, 3, 8, 4))
    wc = wc * nm.mask(wc.reshape(-1, 4), nm.NM(2, 8)).reshape(wc.shape)
    wd = rng.integers(1, 5, (144, 8))  # dense: breaks 2:8
    with pytest.raises(AccelError, match=r"node fc \(nm 2:8\): 144 group"):
        _graph(wd, wc, "2:8")
    wd = wd * nm.mask(wd, nm.NM(2, 8))
    with pytest.raises(AccelError, match=r"node fc \(nm_t 1:4\): .* more than 1 non-zeros of 4"):
        _graph(wd, wc, "2:8", "1:4")
    with pytest.raises(AccelError, match="N must not exceed M"):
        _graph(wd, wc, "9:8")
