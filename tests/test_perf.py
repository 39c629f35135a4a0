"""The dataflow cycle model: closed forms, and invariants of the schedule."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.errors import AccelError
from accel.perf import DataflowTiming, credits_needed


@given(st.lists(st.integers(1, 9), min_size=1, max_size=4))
def test_unstalled_pipeline_has_closed_form(reuse):
    t = DataflowTiming(tuple(reuse))
    s = t.schedule(100)
    assert s["valid"][0] - s["present"][0] == t.latency == sum(reuse) + len(reuse)
    # a faster first stage runs ahead until the registers behind it fill; then one per II
    assert set(np.diff(s["accept"])[-20:].tolist()) == {t.ii} == {max(reuse)}
    assert np.diff(s["accept"]).max() == t.ii
    assert set(np.diff(s["taken"]).tolist()) == {max(reuse)}
    assert np.array_equal(s["valid"], s["taken"])  # the sink never stalls


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(1, 6), min_size=1, max_size=3),
    st.lists(st.booleans(), min_size=8, max_size=8).filter(any),
    st.lists(st.booleans(), min_size=8, max_size=8).filter(any),
)
def test_stalled_schedule_invariants(reuse, vp, rp):
    t = DataflowTiming(tuple(reuse))
    s = t.schedule(40, np.array(vp), np.array(rp))
    assert (s["present"] <= s["accept"]).all()
    assert (s["accept"] - s["present"] >= reuse[0] - 1).all()
    assert (s["valid"] - s["accept"] >= sum(reuse[1:]) + len(reuse) + 1).all()
    assert (s["valid"] <= s["taken"]).all()
    assert (np.diff(s["taken"]) >= 1).all() and (np.diff(s["accept"]) >= 1).all()
    # in the long run no faster than the II (a stall can let one result queue up per stage)
    assert s["taken"][-1] - s["taken"][0] >= (len(s["taken"]) - 1 - len(reuse)) * max(reuse)
    assert all(rp[c % 8] for c in s["taken"])  # handshakes only where the sink is ready
    assert all(vp[c % 8] for c in s["present"])  # offers start only where the source is valid


def test_back_pressure_adds_cycles():
    t = DataflowTiming((2, 3))
    free = t.schedule(100)
    slow = t.schedule(100, sink_ready=np.array([1, 0, 0, 0, 0, 0, 0, 0], bool))
    assert slow["taken"][-1] > free["taken"][-1]
    assert (np.diff(slow["taken"]) >= 8).all()  # the sink takes one per 8 cycles


def test_pattern_with_no_cycle_set_is_refused():
    with pytest.raises(AccelError, match="at least one cycle"):
        DataflowTiming((1,)).schedule(3, sink_ready=np.zeros(4, bool))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([1, 2, 3, 4, 5, 8, 16, 17]), min_size=1, max_size=4),
    st.lists(st.integers(2, 25), min_size=4, max_size=4),
    st.lists(st.integers(0, 3), min_size=4, max_size=4),
)
def test_credits_needed_keep_the_rate_and_are_the_fewest(reuse, pipe, delay):
    """Each stage holding ``credits_needed`` samples (credits returned ``delay`` cycles
    after the take) runs the chain at its II with the idle-pipe latency; one credit
    fewer, where the stage pair sets the II, slows it."""
    n = len(reuse)
    cons, pipe, delay = [*reuse[1:], 1], tuple(pipe[:n]), tuple(delay[:n])
    d = [credits_needed(reuse[k], pipe[k], cons[k], delay[k]) for k in range(n)]
    t = DataflowTiming(tuple(reuse), pipe, tuple(d), delay)
    s = t.schedule(60)
    assert set(np.diff(s["taken"])[-20:].tolist()) == {t.ii}
    assert s["valid"][0] - s["present"][0] == t.latency
    for k in range(n):
        if max(reuse[k], cons[k]) == t.ii and d[k] > 1:
            fewer = (*d[:k], d[k] - 1, *d[k + 1 :])
            s2 = DataflowTiming(tuple(reuse), pipe, fewer, delay).schedule(60)
            assert np.diff(s2["taken"])[-20:].max() > t.ii


def test_credits_at_reuse_one_are_the_pipeline_plus_one():
    assert credits_needed(1, 9) == 10
    assert credits_needed(16, 9, 16) == 3  # the autoencoder's conv layer at reuse 16
    assert credits_needed(16, 9, 16, delay=2) == 3
    assert credits_needed(1, 9, delay=2) == 12
