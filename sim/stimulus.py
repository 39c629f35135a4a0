"""Stimulus shared by the CLI and the regression: edge values and stall patterns."""

from __future__ import annotations

import numpy as np

from accel.ir import Graph


def edge_inputs(graph: Graph) -> np.ndarray:
    """All-zero, all-max, all-min (max negative), alternating extremes, a lone max value."""
    t = graph.tensors[graph.inputs[0]]
    lo, hi, n = t.type.min_int, t.type.max_int, t.size
    rows = [
        np.zeros(n),
        np.full(n, hi),
        np.full(n, lo),
        np.resize([hi, lo], n),
        np.eye(1, n)[0] * hi,
    ]
    return np.array(rows, dtype=np.int64).reshape(len(rows), *t.shape)


def random_inputs(graph: Graph, n: int, seed: int) -> np.ndarray:
    """Uniform raw values over the input type's whole range."""
    t = graph.tensors[graph.inputs[0]]
    rng = np.random.default_rng(seed)
    return rng.integers(t.type.min_int, t.type.max_int + 1, size=(n, *t.shape))


def backpressure(seed: int, p_valid: float = 0.7, p_ready: float = 0.6) -> tuple:
    """Random source-valid and sink-ready patterns (4096 cycles, repeating)."""
    rng = np.random.default_rng(seed)
    return rng.random(4096) < p_valid, rng.random(4096) < p_ready
