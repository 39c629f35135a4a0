"""cocotb + Verilator regression of the dataflow RTL.

Every output is compared bit-exactly with the numpy reference, and four cycle
stamps per sample (offered, accepted, output valid, output taken) must equal
the cycle model exactly, with and without back-pressure. Builds are cached, so
each design compiles once per machine.
"""

import numpy as np
import pytest
from conftest import random_weights

from accel import backends, reference
from accel.compiler.dataflow import lower
from accel.sim import stimulus
from accel.zoo.autoencoder.model import encoder_graph


def check(graph, x, reuse, pats=(None, None)):
    run = backends.run_rtl(graph, x, reuse, *pats)
    want = reference.predict(graph, x)
    bad = np.flatnonzero((run.outputs != want).any(axis=1))
    assert bad.size == 0, f"{bad.size} mismatching samples, first at {bad[:5]}"
    for k, predicted in run.predicted.items():
        assert np.array_equal(run.measured[k], predicted), f"{k} cycles differ from the model"
    return run


def stimulus_for(graph, n_real: int, seed: int) -> np.ndarray:
    from accel import zoo

    real = reference.quantize_inputs(
        graph, "charges", zoo.get("autoencoder").make_inputs(n_real, seed)
    )
    return np.concatenate(
        [stimulus.edge_inputs(graph), real, stimulus.random_inputs(graph, n_real // 2, seed)]
    )


# reuse 4 builds a design no other default test shares (79 s cold); II > 1 under
# back-pressure stays in the default run through test_extreme_weights_per_layer_reuse
@pytest.mark.parametrize("reuse", [1, pytest.param(4, marks=pytest.mark.slow)])
def test_trained_autoencoder(trained_graph, reuse):
    x = stimulus_for(trained_graph, 4000, seed=reuse)
    run = check(trained_graph, x, reuse)
    # each layer: its phases, then its pipeline (operands, products, the phase sum's
    # tree, the accumulator, the queue)
    latency = sum(s.reuse - 1 + s.pipeline for s in lower(trained_graph, reuse).stages)
    assert run.timing.latency == latency and run.timing.ii == reuse
    assert run.measured["valid"][0] - run.measured["present"][0] == latency
    assert np.diff(run.measured["accept"]).max() == reuse
    again = check(trained_graph, x[:3000], reuse, stimulus.backpressure(seed=7))
    assert again.build_s == 0  # the same design is never compiled twice


def test_extreme_weights_per_layer_reuse():
    """Weights only at their limits saturate both requantizers; layers run at different II."""
    graph = encoder_graph(random_weights(11, extreme=True))
    x = np.concatenate([stimulus.edge_inputs(graph), stimulus.random_inputs(graph, 3000, 3)])
    out = reference.predict(graph, x)
    assert (out == 511).any() and (out == 0).any()  # the stimulus reaches saturation
    reuse = {"conv": 3, "dense": 5}
    run = check(graph, x, reuse)
    # conv: 2 phases + 8 registers (447 taps on 149 lanes, up to 4 per output: one tree
    # register); dense: 4 + 12 (1,375 taps on 283 lanes that share their inputs: a pick
    # and a copy register; up to 43 per output: three tree registers, two levels each)
    assert run.timing.latency == 27 and run.timing.ii == 5
    check(graph, x, reuse, stimulus.backpressure(seed=1, p_valid=0.3, p_ready=0.2))


def test_empty_batch(trained_graph):
    run = backends.run_rtl(trained_graph, np.zeros((0, 48), np.int64))
    assert run.outputs.shape == (0, 16) and run.cycles_match


def test_amaranth_simulator_agrees(random_graph):
    x = np.concatenate(
        [stimulus.edge_inputs(random_graph), stimulus.random_inputs(random_graph, 8, 0)]
    )
    want = reference.predict(random_graph, x)
    for reuse in (1, 2):
        assert np.array_equal(backends.predict(random_graph, x, "amaranth", reuse), want)
