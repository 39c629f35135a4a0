"""The reference's float fast path against its int64 path: identical integers, every tensor."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accel import reference, zoo
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.ir import Graph, Param


def _same_everywhere(g: Graph, x: np.ndarray) -> None:
    fast = reference.run(g, x)
    ints = reference.run(g, x, exact_ints=True)
    assert fast.keys() == ints.keys()
    for name in fast:
        assert fast[name].dtype == np.int64, name
        assert np.array_equal(fast[name], ints[name]), name
    assert np.array_equal(reference.predict(g, x), ints[g.outputs[0]])


def _inputs(t: FixedType, shape, rng, n=40) -> np.ndarray:
    x = rng.integers(t.min_int, t.max_int + 1, size=(n, *shape))
    x[0], x[1], x[2] = t.max_int, t.min_int, 0
    x[3] = np.resize([t.max_int, t.min_int], shape)
    return x


@st.composite
def dot_graphs(draw):
    """A dense or conv2d node (extreme or random weights), optional relu, a requantize."""
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    signed = draw(st.booleans())
    xw = draw(st.integers(2, 40))
    xt = FixedType(xw, draw(st.integers(-4, 12)), signed)
    wt = FixedType(draw(st.integers(2, 20)), draw(st.integers(0, 10)))
    conv = draw(st.booleans())
    g = Graph("fast")
    if conv:
        shape = (draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 3)))
        k = draw(st.sampled_from([1, 2, 3]))
        wshape = (k, k, shape[2], draw(st.integers(1, 4)))
    else:
        shape = (draw(st.integers(1, 20)),)
        wshape = (shape[0], draw(st.integers(1, 6)))
    extreme = draw(st.booleans())
    if extreme:
        w = rng.choice([wt.min_int, 0, wt.max_int], size=wshape)
    else:
        w = rng.integers(wt.min_int, wt.max_int + 1, size=wshape)
    bt = FixedType(draw(st.integers(2, 16)), draw(st.integers(0, wt.frac + max(xt.frac, 0))))
    params = {"weight": Param(w, wt)}
    if draw(st.booleans()) and bt.frac <= wt.frac + xt.frac:
        params["bias"] = Param(rng.integers(bt.min_int, bt.max_int + 1, size=wshape[-1]), bt)
    x = g.add_input("x", shape, Quant(xt))
    attrs = {}
    if draw(st.booleans()):  # an explicit accumulator, possibly too narrow (it wraps)
        attrs["acc"] = FixedType(draw(st.integers(4, 62)), wt.frac + xt.frac)
    try:
        if conv:
            y = g.add(
                "conv2d",
                x,
                params=params,
                stride=draw(st.sampled_from([1, 2])),
                padding=draw(st.sampled_from(["same", "valid"])),
                **attrs,
            )
        else:
            y = g.add("dense", x, params=params, **attrs)
    except Exception:
        return None  # a shape or type the IR refuses (valid padding larger than the input...)
    if draw(st.booleans()):
        y = g.add("relu", y)
    src = g.tensors[y].type
    qt = FixedType(
        draw(st.integers(2, 40)),
        src.frac + draw(st.integers(-30, 3)),
        draw(st.booleans()),
    )
    q = Quant(qt, draw(st.sampled_from(list(Rounding))), draw(st.sampled_from(list(Overflow))))
    try:
        y = g.add("requantize", y, quant=q)
    except Exception:
        return None
    g.mark_output(y)
    return g, _inputs(xt, shape, rng)


@settings(max_examples=300, deadline=None)
@given(dot_graphs())
def test_fast_path_equals_int64_path(case):
    if case is None:
        return
    g, x = case
    _same_everywhere(g, x)


@pytest.mark.parametrize("name", ["autoencoder", "nm_sparse", "deform_det"])
def test_zoo_models_fast_path_equals_int64_path(name):
    model = zoo.get(name)
    g = model.build()
    x = reference.quantize_inputs(g, g.inputs[0], model.make_inputs(64, 3))
    _same_everywhere(g, x)


def test_rounding_ties_and_saturation_on_the_fast_path():
    g = Graph("ties")
    x = g.add_input("x", (8,), Quant(FixedType(12, 0)))
    outs = []
    for r in Rounding:
        for o in Overflow:
            outs.append(g.add("requantize", x, quant=Quant(FixedType(4, -2), r, o)))
    g.mark_output(*outs)
    raw = np.array([[-2048, -10, -6, -2, 2, 6, 10, 2047]])  # every tie of a 2-bit shift
    fast, ints = reference.run(g, raw), reference.run(g, raw, exact_ints=True)
    for name in outs:
        assert np.array_equal(fast[name], ints[name]), name


def test_the_fast_path_runs_on_floats():
    """The autoencoder's chain stays in float32 (so the benchmark measures the fast path)."""
    model = zoo.get("autoencoder")
    g = model.build()
    x = reference.quantize_inputs(g, g.inputs[0], model.make_inputs(8, 0))
    values = reference._execute(g, x, False, False)
    assert all(v.dtype == np.float32 for v in values.values())
