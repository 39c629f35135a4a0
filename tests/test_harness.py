"""Packing raw integers into the harness's hex words and back."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from accel.sim.harness import pack_hex, render, unpack_hex


@given(st.integers(1, 20), st.integers(0, 9), st.integers(1, 12), st.booleans(), st.integers(0, 99))
def test_pack_unpack_round_trip(width, n, count, signed, seed):
    rng = np.random.default_rng(seed)
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    if signed and width == 1:
        lo, hi = -1, 0
    raw = rng.integers(lo, hi + 1, (n, count))
    raw[:, 0] = hi if n else raw[:, 0]
    assert np.array_equal(unpack_hex(pack_hex(raw, width), width, count, signed), raw)


def test_element_zero_is_in_the_low_bits():
    assert pack_hex(np.array([[1, 0], [0, 1]]), 4) == ["01", "10"]
    assert pack_hex(np.array([[-1, 0]]), 3) == ["07"]  # two's complement in 3 bits


def test_harness_capacity_must_be_a_power_of_two():
    import pytest

    with pytest.raises(ValueError):
        render("dut", 8, 8, 1000, 4)
