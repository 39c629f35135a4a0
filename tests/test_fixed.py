"""The fixed-point core against a slow oracle written with Fractions and Python ints."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding, quantize, requantize


def oracle(value: Fraction, q: Quant) -> int:
    """ap_fixed conversion by the book: round the scaled value, then fit the range."""
    t = q.type
    s = value * Fraction(2) ** t.frac
    fl = math.floor(s)
    rem = s - fl
    if q.rounding is Rounding.TRN:
        r = fl
    elif q.rounding is Rounding.RND:
        r = fl + (rem >= Fraction(1, 2))
    else:
        r = fl + (rem > Fraction(1, 2) or (rem == Fraction(1, 2) and fl % 2 == 1))
    if q.overflow is Overflow.SAT:
        return min(max(r, t.min_int), t.max_int)
    r %= 1 << t.width
    return r - (1 << t.width) if t.signed and r >= 1 << (t.width - 1) else r


types = st.builds(
    lambda w, f, s: FixedType(w + s, f, s),
    st.integers(1, 40),
    st.integers(-8, 40),
    st.booleans(),
)
quants = st.builds(Quant, types, st.sampled_from(list(Rounding)), st.sampled_from(list(Overflow)))


def edges(t: FixedType) -> list[int]:
    return [t.min_int, t.min_int + 1, -1, 0, 1, t.max_int - 1, t.max_int]


@settings(max_examples=400, deadline=None)
@given(src=types, q=quants, data=st.data())
def test_requantize_matches_oracle(src, q, data):
    raws = edges(src) + data.draw(st.lists(st.integers(src.min_int, src.max_int), max_size=20))
    raws = [r for r in raws if src.min_int <= r <= src.max_int]
    assume(src.width + max(q.type.frac - src.frac, 0) <= 62)
    got = requantize(np.array(raws, dtype=np.int64), src.frac, q)
    want = [oracle(Fraction(r) / Fraction(2) ** src.frac, q) for r in raws]
    assert got.tolist() == want
    assert q.type.contains(got)


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=400, deadline=None)
@given(q=quants, xs=st.lists(finite, min_size=1, max_size=20), data=st.data())
def test_quantize_float_matches_oracle(q, xs, data):
    t = q.type
    # exact ties and the values just around the range limits
    ties = [(r + 0.5) * t.lsb for r in (t.min_int, -1, 0, 1, t.max_int)]
    limits = [t.min_int * t.lsb, t.max_int * t.lsb, (t.max_int + 1) * t.lsb, -1e300, 1e300]
    xs = xs + ties + limits
    got = quantize(np.array(xs), q)
    assert got.tolist() == [oracle(Fraction(x), q) for x in xs]


@pytest.mark.parametrize("rounding", list(Rounding))
@pytest.mark.parametrize("frac", [-1, -3])
def test_quantize_subnormals_with_negative_frac(rounding, frac):
    """Scaling a subnormal down underflows in float64 (-5e-324 * 2**-1 is -0.0)."""
    q = Quant(FixedType(3, frac, signed=False), rounding, Overflow.WRAP)
    xs = [-5e-324, 5e-324, -1e-310, 1e-310, -2.2250738585072014e-308]
    assert quantize(np.array(xs), q).tolist() == [oracle(Fraction(x), q) for x in xs]


@pytest.mark.parametrize(
    ("x", "rounding", "want"),
    [
        (2.5, Rounding.RND, 3),
        (-2.5, Rounding.RND, -2),  # ties toward plus infinity
        (2.5, Rounding.RND_CONV, 2),
        (3.5, Rounding.RND_CONV, 4),
        (-2.5, Rounding.RND_CONV, -2),
        (-2.25, Rounding.TRN, -3),  # floor, not toward zero
        (0.49999999999999994, Rounding.RND, 0),  # floor(x + 0.5) in float would give 1
    ],
)
def test_rounding_known_values(x, rounding, want):
    assert quantize(np.array([x]), Quant(FixedType(8, 0), rounding, Overflow.SAT))[0] == want


def test_overflow_known_values():
    t = FixedType(4, 0)  # -8..7
    assert quantize(np.array([9.0, -9.0]), Quant(t, overflow=Overflow.SAT)).tolist() == [7, -8]
    assert quantize(np.array([9.0, -9.0]), Quant(t, overflow=Overflow.WRAP)).tolist() == [-7, 7]
    u = FixedType(4, 0, signed=False)
    assert quantize(np.array([-1.0, 17.0]), Quant(u, overflow=Overflow.SAT)).tolist() == [0, 15]
    assert quantize(np.array([-1.0, 17.0]), Quant(u, overflow=Overflow.WRAP)).tolist() == [15, 1]


def test_nan_and_inf_refused():
    q = Quant(FixedType(8, 4))
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(AccelError, match="NaN or infinity"):
            quantize(np.array([0.0, bad]), q)


@pytest.mark.parametrize(
    ("text", "t"),
    [
        ("ap_fixed<10,4>", FixedType(10, 6, True)),
        ("ap_ufixed<9,1>", FixedType(9, 8, False)),
        ("ap_int<8>", FixedType(8, 0, True)),
        ("ap_uint<3>", FixedType(3, 0, False)),
        ("ap_fixed<6,2,AP_RND,AP_SAT>", FixedType(6, 4, True)),
    ],
)
def test_parse_and_print_ap_types(text, t):
    assert FixedType.parse(text) == t
    assert FixedType.parse(t.ap()) == t


@given(types, st.sampled_from(list(Rounding)), st.sampled_from(list(Overflow)))
def test_json_round_trip(t, r, o):
    q = Quant(t, r, o)
    assert Quant.from_json(q.to_json()) == q
    assert q.ap().endswith(f"AP_{r},AP_{o}>")


@given(st.integers(-(2**40), 2**40), st.integers(-(2**40), 2**40))
def test_covering_is_the_narrowest_type(a, b):
    lo, hi = min(a, b), max(a, b)
    t = FixedType.covering(lo, hi, 0)
    assert t.min_int <= lo and hi <= t.max_int
    if t.width > 1 + t.signed:
        narrower = FixedType(t.width - 1, 0, t.signed)
        assert not (narrower.min_int <= lo and hi <= narrower.max_int)


@pytest.mark.parametrize("bad", [(0, 0, False), (63, 0, True), (1, 0, True)])
def test_invalid_widths(bad):
    with pytest.raises(AccelError):
        FixedType(*bad)
