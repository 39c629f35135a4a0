"""The numpy reference against naive per-MAC Python loops, and its input checks."""

import numpy as np
import pytest
from conftest import random_weights

from accel import kernels, reference
from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding, requantize
from accel.ir import Graph, Param
from accel.zoo.autoencoder.model import encoder_graph


def naive_encoder(w: dict, arrange: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The autoencoder by the definition: one Python multiply-add at a time."""
    out = []
    for row in x.tolist():
        grid = [
            [row[arrange[r * 8 + c]] if arrange[r * 8 + c] >= 0 else 0 for c in range(8)]
            for r in range(8)
        ]
        conv = []
        for oy in range(4):
            for ox in range(4):
                for co in range(8):
                    acc = int(w["conv_b"][co]) << 6
                    for ky in range(3):
                        for kx in range(3):
                            iy, ix = 2 * oy + ky, 2 * ox + kx  # 'same' pads bottom/right only
                            if iy < 8 and ix < 8:
                                acc += grid[iy][ix] * int(w["conv_w"][ky, kx, 0, co])
                    conv.append(acc)
        q1 = [min(max((max(a, 0) + 2) >> 2, 0), 2047) for a in conv]  # RND, SAT to u11
        lat = []
        for o in range(16):
            acc = (int(w["dense_b"][o]) << 8) + sum(
                q1[k] * int(w["dense_w"][k, o]) for k in range(128)
            )
            lat.append(min(max((max(acc, 0) + 8) >> 4, 0), 511))  # RND, SAT to u9 frac 8
        out.append(lat)
    return np.array(out)


@pytest.mark.parametrize("extreme", [False, True])
def test_encoder_matches_naive_loops(extreme):
    from accel.zoo.autoencoder.geometry import ARRANGE

    w = random_weights(3, extreme)
    g = encoder_graph(w)
    rng = np.random.default_rng(0)
    t = g.tensors["charges"].type
    x = rng.integers(t.min_int, t.max_int + 1, size=(60, 48))
    x[0] = t.max_int
    x[1], x[2], x[3] = t.min_int, 0, np.resize([t.max_int, t.min_int], 48)
    assert np.array_equal(reference.predict(g, x), naive_encoder(w, ARRANGE, x))


def test_blas_and_int64_paths_agree():
    rng = np.random.default_rng(5)
    xt, wt = FixedType(20, 0), FixedType(16, 0)
    x = rng.integers(xt.min_int, xt.max_int + 1, (50, 30))
    w = rng.integers(wt.min_int, wt.max_int + 1, (30, 7))
    assert kernels._bound(xt, wt, 30, 0) < kernels.FLOAT_EXACT
    exact = x @ w
    assert np.array_equal(kernels.matmul_exact(x, w, xt, wt), exact)
    big = FixedType(40, 0)  # too wide for float64: must take the int64 path
    xb = rng.integers(big.min_int, big.max_int + 1, (5, 30))
    assert np.array_equal(kernels.matmul_exact(xb, w, big, wt), xb @ w)


def test_accumulator_wraps_when_declared_narrow():
    g = Graph("narrow")
    x = g.add_input("x", (2,), Quant(FixedType(8, 0)))
    acc = FixedType(8, 0)
    y = g.add(
        "dense", x, params={"weight": Param(np.array([[100], [100]]), FixedType(8, 0))}, acc=acc
    )
    g.mark_output(y)
    out = reference.predict(g, np.array([[1, 1], [-1, 0]]))
    assert out[:, 0].tolist() == [-56, -100]  # 200 wraps to -56 in 8 bits


def test_derived_accumulator_never_overflows():
    g = encoder_graph(random_weights(0, extreme=True))
    conv_acc = g.node("conv").attrs["acc"]
    # the worst case the types allow: every input and weight at its extreme
    worst = 9 * 512 * 32 + (32 << 6)
    assert conv_acc.max_int >= worst - 1 and conv_acc.min_int <= -worst
    assert conv_acc.width == 19


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.zeros((3, 47), np.int64), r"expected shape \(N, 48\)"),
        (np.zeros(48, np.int64), r"expected shape \(N, 48\)"),
        (np.zeros((3, 48), np.float32), "expected integers"),
        (np.full((3, 48), 512), r"outside ap_fixed<10,4>"),
    ],
)
def test_bad_raw_inputs(random_graph, x, match):
    with pytest.raises(AccelError, match=match):
        reference.predict(random_graph, x)


def test_float_inputs_quantized_with_declared_mode(random_graph):
    x = np.array([[0.5 / 64] * 48, [100.0] * 48, [-100.0] * 48])  # tie, over, under
    raw = reference.quantize_inputs(random_graph, "charges", x)
    assert raw[:, 0].tolist() == [1, 511, -512]  # RND ties up; SAT both ends


def test_requantize_node_uses_its_modes():
    g = Graph("rq")
    x = g.add_input("x", (4,), Quant(FixedType(8, 2)))
    y = g.add("requantize", x, quant=Quant(FixedType(4, 0), Rounding.RND_CONV, Overflow.WRAP))
    g.mark_output(y)
    raw = np.array([[2, 6, -2, 40]])  # 0.5, 1.5, -0.5, 10.0
    want = requantize(raw, 2, Quant(FixedType(4, 0), Rounding.RND_CONV, Overflow.WRAP))
    assert reference.predict(g, raw).tolist() == want.tolist() == [[0, 2, 0, -6]]
