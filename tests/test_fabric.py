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
)
def test_adder_graph_is_the_matrix_product(shape, bits, signed, seed, share):
    """Whole or solved in groups of ``share`` outputs (merged into one graph)."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), shape)
    w[rng.random(shape) < 0.3] = 0
    t = FixedType(8, 3, signed)
    g = cmvm.solve(w, t, share)  # also checks itself on the type's corners
    x = np.concatenate([np.full((1, shape[0]), t.min_int), np.full((1, shape[0]), t.max_int),
                        rng.integers(t.min_int, t.max_int + 1, (50, shape[0]))])  # fmt: skip
    assert np.array_equal(g.evaluate(x), x @ w)


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
    ("name", "mult", "levels", "budget", "reuse", "share"),
    [
        ("fabric-1", "fabric", 1, None, 1, 0),
        ("fabric-2", "fabric", 2, None, 1, 0),
        ("fabric-share-2", "fabric", 2, None, 1, 2),
        ("auto", "auto", 1, 20, 1, 0),
        ("auto-reuse-2", "auto", 2, 10, 2, 0),
    ],
)
def test_fabric_layers_bit_and_cycle_exact(name, mult, levels, budget, reuse, share):
    g = two_layers()
    plan = lower(g, reuse, mult, budget, share)
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
    assert run.timing.latency == sum(s.pipeline if s.fabric else s.reuse + 1 for s in plan.stages)


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
    """The ECON-T encoder fully multiplier-free: II 1, every stamp as modelled."""
    plan = lower(trained_graph, 1, "fabric")
    x = np.concatenate(
        [stimulus.edge_inputs(trained_graph), stimulus.random_inputs(trained_graph, 3000, 1)]
    )
    for pats in [(None, None), stimulus.backpressure(5)]:
        run = backends.run_rtl(trained_graph, x, 1, *pats, plan=plan)
        assert np.array_equal(run.outputs, reference.predict(trained_graph, x))
        assert run.cycles_match
