import os

import numpy as np
import pytest
from hypothesis import settings

from accel.zoo.autoencoder.model import WEIGHT, encoder_graph

# A CI run must not depend on the luck of the draw: the examples are derived from
# each test's name, so every run checks the same (large) set. Explore further with
# HYPOTHESIS_PROFILE=explore.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def random_weights(seed: int, extreme: bool = False) -> dict[str, np.ndarray]:
    """Random encoder weights; ``extreme`` draws only the type's limits and zero."""
    rng = np.random.default_rng(seed)
    lo, hi = WEIGHT.min_int, WEIGHT.max_int
    shapes = {"conv_w": (3, 3, 1, 8), "conv_b": (8,), "dense_w": (128, 16), "dense_b": (16,)}
    if extreme:
        return {k: rng.choice([lo, 0, hi], size=s) for k, s in shapes.items()}
    return {k: rng.integers(lo, hi + 1, size=s) for k, s in shapes.items()}


@pytest.fixture(scope="session")
def trained_graph():
    from accel import zoo

    return zoo.get("autoencoder").build()


@pytest.fixture(scope="session")
def random_graph():
    return encoder_graph(random_weights(1))


@pytest.fixture(scope="session")
def engine_cfg():
    """The engine configuration the regression builds once (4 x 8 array, groups of 8)."""
    from accel.engine.config import EngineConfig

    return EngineConfig(rows=4, cols=8, group=8, a_depth=512, b_depth=4096, bias_depth=64)
