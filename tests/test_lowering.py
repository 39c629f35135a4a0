"""Random conv/dense graphs: the reference against naive loops, and the lowered
tap tables (what the RTL is generated from) against the reference."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from accel import reference
from accel.compiler.dataflow import evaluate, lower
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.ir import Graph, Param
from accel.ir.ops import conv_padding


@st.composite
def conv_graphs(draw):
    h, w, c = draw(st.integers(1, 7)), draw(st.integers(1, 7)), draw(st.integers(1, 3))
    k = draw(st.integers(1, min(3, h, w)))
    stride = draw(st.integers(1, 2))
    padding = draw(st.sampled_from(["same", "valid"]))
    cout, n_dense = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    xt, wt = FixedType(draw(st.integers(3, 9)), 2), FixedType(draw(st.integers(2, 6)), 3)
    rq = Quant(
        FixedType(7, 2, draw(st.booleans())),
        draw(st.sampled_from(list(Rounding))),
        draw(st.sampled_from(list(Overflow))),
    )

    def weights(shape):
        vals = rng.integers(wt.min_int, wt.max_int + 1, shape)
        return np.where(rng.random(shape) < 0.3, 0, vals)  # zeros get pruned from the taps

    g = Graph("rand")
    x = g.add_input("x", (h * w * c + 2,), Quant(xt))
    index = rng.permutation(h * w * c + 2)[: h * w * c]
    index[rng.random(h * w * c) < 0.2] = -1  # masked positions
    x = g.add("gather", x, index=index, shape=(h, w, c))
    x = g.add(
        "conv2d",
        x,
        stride=stride,
        padding=padding,
        params={"weight": Param(weights((k, k, c, cout)), wt), "bias": Param(weights((cout,)), wt)},
    )
    if draw(st.booleans()):
        x = g.add("relu", x)
    x = g.add("requantize", x, quant=rq)
    x = g.add("reshape", x, shape=(g.tensors[x].size,))
    if draw(st.booleans()):  # a gather between layers, as an NCHW flatten imports
        n = g.tensors[x].size
        perm = rng.permutation(n)
        perm[rng.random(n) < 0.1] = -1
        x = g.add("gather", x, index=perm, shape=(n,))
    x = g.add("dense", x, params={"weight": Param(weights((g.tensors[x].size, n_dense)), wt)})
    g.mark_output(x)
    data = rng.integers(xt.min_int, xt.max_int + 1, (20, h * w * c + 2))
    data[0], data[1] = xt.max_int, xt.min_int
    return g, data


def naive_conv(g: Graph, data: np.ndarray) -> np.ndarray:
    node = g.node("conv2d0")
    xin = reference.run(g, data)[node.inputs[0]]
    wgt, b = node.params["weight"], node.params["bias"]
    kh, kw, cin, cout = wgt.data.shape
    h, w = xin.shape[1:3]
    s, p = node.attrs["stride"], node.attrs["padding"]
    oh, top, _ = conv_padding(h, kh, s, p)
    ow, left, _ = conv_padding(w, kw, s, p)
    acc_frac = node.attrs["acc"].frac
    out = np.zeros((len(xin), oh, ow, cout), np.int64)
    for n in range(len(xin)):
        for y in range(oh):
            for x in range(ow):
                for o in range(cout):
                    a = int(b.data[o]) << (acc_frac - b.type.frac)
                    for i in range(kh):
                        for j in range(kw):
                            iy, ix = y * s - top + i, x * s - left + j
                            if 0 <= iy < h and 0 <= ix < w:
                                a += sum(
                                    int(xin[n, iy, ix, ci]) * int(wgt.data[i, j, ci, o])
                                    for ci in range(cin)
                                )
                    out[n, y, x, o] = a
    return out


@settings(max_examples=60, deadline=None)
@given(conv_graphs())
def test_conv_reference_matches_naive_loops(case):
    g, data = case
    assert np.array_equal(reference.run(g, data)["conv2d0"], naive_conv(g, data))


@settings(max_examples=60, deadline=None)
@given(conv_graphs(), st.integers(1, 5), st.integers(1, 5))
def test_lowered_taps_match_reference(case, r1, r2):
    g, data = case
    plan = lower(g, {"conv2d0": r1, "dense0": r2})
    assert plan.reuse == [r1, r2]
    assert np.array_equal(evaluate(plan, data), reference.predict(g, data))


@settings(max_examples=60, deadline=None)
@given(conv_graphs(), st.integers(1, 17))
def test_lanes_take_every_tap_once(case, r):
    """However the taps are laid out on multiplier lanes, each is taken exactly once, a
    lane is at most ``reuse`` phases long, and an idle phase has weight 0."""
    g, _ = case
    for stage in lower(g, r).stages:
        lanes = stage.lanes()
        taken = sorted((o, i, w) for lane in lanes for o, i, w in lane if o >= 0)
        want = sorted(
            (o, int(i), int(w))
            for o in range(stage.n_out)
            for i, w in zip(stage.idx[o], stage.w[o], strict=True)
        )
        assert taken == want
        assert all(len(lane) <= r for lane in lanes)
        assert all(w == 0 for lane in lanes for o, _, w in lane if o < 0)
        assert stage.n_mult == len(lanes) >= -(-stage.n_taps // r)


def test_dense_lanes_share_their_inputs():
    """The autoencoder's dense layer at reuse 16: 8 blocks of 16 inputs, every lane of a
    block reads the same input in each phase (one multiplexer per block, not per lane),
    for 2 multipliers more than packing the taps."""
    from accel import zoo

    dense = lower(zoo.get("autoencoder").build(), 16).stages[1]
    lanes = dense.lanes()
    assert len({tuple(i for _, i, _ in lane) for lane in lanes}) == 8
    assert len(lanes) == 118 == -(-dense.n_taps // 16) + 2


def test_a_stages_memo_does_not_change_its_cache_key():
    """A stage remembers its lanes; the design cache's key must not see the memo."""
    from accel import zoo
    from accel.cache import fingerprint

    plan = lower(zoo.get("autoencoder").build(), 16)
    before = fingerprint(plan)
    plan.timing()  # computes and remembers every stage's lanes
    assert fingerprint(plan) == before
