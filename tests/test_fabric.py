"""Multiplier-free dataflow layers: da4ml's shared adder graphs, pipelined, as RTL that is
bit-exact with the reference and cycle-exact with the model, with and without
back-pressure."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_uart import tiny_graph

from accel import backends, reference
from accel.compiler import cmvm
from accel.compiler.dataflow import lower
from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.ir import Graph, Param
from accel.sim import stimulus


@settings(max_examples=25, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 12), st.integers(1, 6)),
    bits=st.integers(2, 7),
    signed=st.booleans(),
    seed=st.integers(0, 2**16),
    share=st.integers(0, 4),
    block=st.integers(0, 5),
)
def test_adder_graph_is_the_matrix_product(shape, bits, signed, seed, share, block):
    """Whole, or solved in tiles of ``block`` inputs by ``share`` outputs (merged into one
    graph, each output's partial sums added by a tree)."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), shape)
    w[rng.random(shape) < 0.3] = 0
    t = FixedType(8, 3, signed)
    g = cmvm.solve(w, t, share, block)  # also checks itself on the type's corners
    if 0 < block < shape[0]:
        assert all(a.lo <= a.hi for a in g.adds)
    x = np.concatenate([np.full((1, shape[0]), t.min_int), np.full((1, shape[0]), t.max_int),
                        rng.integers(t.min_int, t.max_int + 1, (50, shape[0]))])  # fmt: skip
    assert np.array_equal(g.evaluate(x), x @ w)


def test_adder_graph_of_a_column_selection():
    """da4ml reads its matrix as row-major: an F-ordered selection of columns (as a tile's
    nonzero outputs are taken) gave another matrix's graph before it was made C-ordered."""
    w = np.array([[16, -1, 0, 0, 16, 16, 0, 0], [8, 0, 0, 0, 16, -1, 0, 0]]).T
    wide = np.concatenate([np.zeros((8, 3), np.int64), w], axis=1)
    sel = wide[:, [3, 4]]
    assert sel.flags.f_contiguous and not sel.flags.c_contiguous
    t = FixedType(10, 6)
    x = np.random.default_rng(1).integers(t.min_int, t.max_int + 1, (64, 8))
    assert np.array_equal(cmvm.solve(sel, t).evaluate(x), x @ w)


def test_blocked_adder_graph_ranges_are_exact():
    """A tile's partial sums cover disjoint inputs, so the tree's ranges are attained."""
    rng = np.random.default_rng(3)
    w = rng.integers(-16, 16, (12, 3))
    t = FixedType(6, 2)
    g = cmvm.solve(w, t, 0, 4)
    top = [g.outputs[o].index - g.n_in for o in range(3)]
    for o, k in enumerate(top):
        lo = sum(min(c * t.min_int, c * t.max_int) for c in w[:, o])
        hi = sum(max(c * t.min_int, c * t.max_int) for c in w[:, o])
        a = g.adds[k]
        assert (a.lo, a.hi) == (lo << a.frac, hi << a.frac)


def two_layers() -> Graph:
    """dense 6 -> 5 (ReLU, requantize), dense 5 -> 3: signed input, negative weights."""
    rng = np.random.default_rng(4)
    g = Graph("fabric2")
    x = g.add_input("x", (6,), Quant(FixedType(7, 3), Rounding.RND, Overflow.SAT))
    w1, b1 = rng.integers(-32, 32, (6, 5)), rng.integers(-32, 32, 5)
    w1[0, 0] = w1[1, 1] = 0
    x = g.add("dense", x, params={"weight": Param(w1, FixedType(6, 4)),
                                  "bias": Param(b1, FixedType(6, 4))})  # fmt: skip
    x = g.add("relu", x)
    x = g.add("requantize", x, quant=Quant(FixedType(8, 4, False), Rounding.RND, Overflow.SAT))
    w2, b2 = rng.integers(-32, 32, (5, 3)), rng.integers(-32, 32, 3)
    x = g.add("dense", x, params={"weight": Param(w2, FixedType(6, 4)),
                                  "bias": Param(b2, FixedType(6, 4))})  # fmt: skip
    x = g.add("requantize", x, quant=Quant(FixedType(9, 2), Rounding.RND, Overflow.SAT))
    g.mark_output(x)
    return g


@pytest.mark.parametrize(
    ("name", "mult", "levels", "budget", "reuse", "share", "block"),
    [
        ("fabric-1", "fabric", 1, None, 1, 0, 0),
        ("fabric-2", "fabric", 2, None, 1, 0, 0),
        ("fabric-share-2", "fabric", 2, None, 1, 2, 0),
        # tiles of 2 inputs x 2 outputs in the first layer, 2-input blocks in the second
        ("fabric-tiles", "fabric", 1, None, 1, {"dense0": 2}, 2),
        ("auto", "auto", 1, 20, 1, 0, 0),
        ("auto-reuse-2", "auto", 2, 10, 2, 0, 0),
    ],
)
def test_fabric_layers_bit_and_cycle_exact(name, mult, levels, budget, reuse, share, block):
    g = two_layers()
    plan = lower(g, reuse, mult, budget, share, block)
    for s in plan.stages:
        s.levels_per_stage = levels
    if mult == "auto":
        # 30 products fit a budget of 20 only in the second layer's 15; at reuse 2, the
        # first layer's 15 multipliers miss a budget of 10, so it runs multiplier-free at
        # reuse 1, and the second's 8 take DSP blocks at reuse 2
        assert [s.fabric for s in plan.stages] == [True, False]
        assert plan.reuse == [1, reuse] and plan.timing().ii == reuse
    x = np.concatenate([stimulus.edge_inputs(g), stimulus.random_inputs(g, 400, 7)])
    for pats in [(None, None), stimulus.backpressure(3)]:
        run = backends.run_rtl(g, x, 1, *pats, plan=plan)
        assert np.array_equal(run.outputs, reference.predict(g, x))
        for k, predicted in run.predicted.items():
            assert np.array_equal(run.measured[k], predicted), (name, k)
    assert run.timing.latency == sum(s.reuse - 1 + s.pipeline for s in plan.stages)


def test_the_tiny_network_on_the_fabric_has_no_multipliers():
    plan = lower(tiny_graph(), 1, "fabric")
    assert sum(s.n_mult for s in plan.stages) == 0 and plan.stages[0].adders.adds


def test_fabric_needs_reuse_one():
    with pytest.raises(AccelError, match="runs at reuse 1, not 2"):
        lower(tiny_graph(), 2, "fabric")
    with pytest.raises(AccelError, match="multiplier style must be one of"):
        lower(tiny_graph(), 1, "luts")


@pytest.mark.slow
def test_autoencoder_on_the_fabric_under_backpressure(trained_graph):
    """The ECON-T encoder fully multiplier-free, in the tiles a board build uses (8 inputs
    by 8 outputs): II 1, every stamp as modelled."""
    plan = lower(trained_graph, 1, "fabric", None, 8, 8)
    x = np.concatenate(
        [stimulus.edge_inputs(trained_graph), stimulus.random_inputs(trained_graph, 3000, 1)]
    )
    for pats in [(None, None), stimulus.backpressure(5)]:
        run = backends.run_rtl(trained_graph, x, 1, *pats, plan=plan)
        assert np.array_equal(run.outputs, reference.predict(trained_graph, x))
        assert run.cycles_match


def test_share_and_block_name_layers():
    with pytest.raises(AccelError, match="block given for unknown layer"):
        lower(two_layers(), 1, "fabric", None, 0, {"conv": 4})


def test_a_board_build_is_multiplier_free_when_it_fits():
    """On a board, the default is a sample every cycle without multipliers while the
    estimate (two measured routed builds, accel.targets.dataflow) stays within the fullest
    design that routed; else multipliers at the smallest reuse that fits."""
    from accel import zoo
    from accel.targets.dataflow import DataflowConfig, DataflowDesign, DataflowTarget, fabric_comb

    t = DataflowTarget()
    ae = zoo.get("autoencoder").build()
    c = t.configure(ae, {}, {}, "ulx3s-85f")
    assert (c.mult, c.reuse, c.share, c.block) == ("fabric", 1, 8, 8)
    design = t.compile(ae, c)
    assert design.multipliers == 0 and design.model.ii == 1
    assert design.place_and_route() == {"router": "router2"}
    assert fabric_comb(design) == pytest.approx(62_525, abs=10)  # measured: 62,525
    assert t.configure(ae, {"reuse": 4}, {}, "ulx3s-85f").mult == "dsp"  # asked for reuse
    assert t.configure(ae, {}, {}, None).mult == "dsp"  # simulation keeps the default
    big = zoo.get("autoencoder@khot2").build()  # 96 % of the part: multipliers
    assert t.configure(big, {}, {}, "ulx3s-85f").mult == "dsp"
    with pytest.raises(AccelError, match=r"multiplier-free .* does not fit ulx3s-12f: .*LUT"):
        t.fit(DataflowDesign(ae, DataflowConfig(mult="fabric")), "ulx3s-12f", build=True)
