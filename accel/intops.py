"""Integer-only ViT non-linearities and attention arithmetic (after I-ViT), defined once.

These are the definitions the numpy reference, a later engine vector unit and
the RTL must match bit for bit. Everything works on raw ``int64`` integers of
fixed-point types with power-of-two scales (``value = raw * 2**-frac``); every
floor is ``>>`` (toward minus infinity) or ``//`` on integers, so an operation
is a short list of shifts, adds, compares and multiplies that a hardware
designer can copy.

Why I-ViT's shift-based algorithms: in FPGA logic a shift by a constant is
wiring, an add or compare is a carry chain, and a general multiplier or divider
is expensive. I-ViT (Li and Gu, ICCV 2023) computes softmax, GELU and LayerNorm
with shifts and adds plus one integer division (and, for LayerNorm, one integer
square root) per row, which is what a narrow vector unit beside a MAC array can
afford. Polynomial approximations (I-BERT) need squarings per element, lookup
tables need block RAM per lane.

**Shift exponential** (shared by softmax and GELU). For ``x`` with ``F``
fraction bits, ``t = x + (x >> 1) - (x >> 4)`` is ``x * log2(e)`` with
log2(e) ~ 1.4375 (floors included). ``k = t >> F`` and ``f = t & (2**F - 1)``
split it into an integer exponent and a fraction, and ``2**(t / 2**F) ~
2**k * (1 + f / 2**F)``, the chord of ``2**f`` on ``[0, 1)``. I-ViT writes the
same chord as ``2**r ~ 1 + r/2`` on ``r`` in ``(-1, 0]``. ``t`` and ``k`` never
decrease as ``x`` grows (each step of ``x`` adds 1, plus 0 or 1, minus 0 or 1).

**Shiftmax** (:func:`shiftmax`). ``K`` is the row's largest exponent (that of
its maximum). Each element contributes ``e = (2**F + f) * 2**(k - K)`` (scale
``2**-F``); ``S = sum(e)`` is accumulated *exactly*, as the integer ``(2**F +
f) << (k - K + D)`` with ``D`` at least the row's exponent span (for the IR,
derived from the input type). One small division per row: ``S`` (``L``
bits) rounded *up* to its top ``M = B + G + 2`` bits, ``S_top = ceil(S /
2**(L - M))`` (a leading-one detector, a shift and a sticky bit; ``G = 2``
guard bits), ``r = floor(2**(2B + 2G + 3) / S_top)`` (``B`` output fraction
bits: a ``2B + 2G + 4``-bit divider whatever the span); then per element
``out = ((2**F + f) * r + 2**(h - 1)) >> h`` with ``h = 1 + G + L - D + K -
k``, saturated to the output width. That is ``2**B e / s`` (``s`` the real
sum) less a deficit below 1/4 LSB (rounding ``S`` up and ``r`` down, 1/8 each),
rounded half up: ``round(2**B e / s)`` or 1 LSB below. I-ViT floors instead;
on rows of 197 small probabilities a floor to 8 bits drops a fifth of a row's
mass (float softmax of N(0, 2) logits: 19.7 %), rounding 5 %, as much as
rounding the float softmax itself.

Deviation from I-ViT: I-ViT subtracts the row maximum from ``x`` before the
``log2(e)`` shift-add and truncates every exponential to a fixed precision
below the maximum. Here the shift-add acts on ``x`` itself and only the integer exponent
``K`` is subtracted, and the sum is kept exact. Both are the same
approximation of ``exp(x - max)`` up to the shift-add's floors; ours makes the
sum independent of order and chunking, so Edge-MoE's single-pass form
(:func:`shiftmax_online`: running maximum exponent, running sum rescaled by
``>> (K_new - K_old)`` when the maximum grows) gives *identical* integers: each
term of the running sum is a multiple of ``2**(K_new - K_old)`` whenever
``D`` covers the span, so the shift drops no bits (asserted). The price is a
``F + 1 + D + log2(n)``-bit sum register (36 bits for ``ap_fixed<8,4>`` scores
over 197 tokens, 58 for ``ap_fixed<9,5>``); the divider and the per-element
multiply stay narrow. The input must be narrow enough (the op checks; ``D``
grows with the input's integer range): requantize attention scores first.

**ShiftGELU** (:func:`shiftgelu`). ``GELU(x) ~ x * sigmoid(1.702 x)``. With
``a = -|x|``: ``z = a + (a >> 1) + (a >> 3) + (a >> 4)`` (1.702 ~ 1.6875),
then the shift exponential of ``z`` gives ``E = ((2**F + f) << G) >> (F - k)``
~ ``2**G * exp(-1.702 |x|)`` in ``[0, 2**G]`` (``G`` = ``sig_bits``). Then
``sigmoid = floor((x >= 0 ? 2**G : E) * 2**G / (2**G + E))`` (G fraction bits;
``sigmoid(-v) = 1 - sigmoid(v)`` in the form ``E / (1 + E)``), and the output is
the exact product ``x * sigmoid`` with ``F + G`` fraction bits. Deviations from
I-ViT: I-ViT folds 1.702 into its float scaling factor; with power-of-two
scales it is the shift-add above. I-ViT evaluates the sigmoid relative to the
row maximum, which makes one element's GELU depend on its neighbours; ours is
element-wise, as GELU is. Like I-ViT, it takes one small division per element
(``G + 1`` quotient bits).

**I-LayerNorm** (:func:`layernorm`, over the last axis of ``C`` values, ``m``
= ``mean_frac`` extra bits of the mean, ``g`` = ``sqrt_guard``, ``P`` =
``norm_frac``, ``W`` the input width): ``mu = floor((2**(m+1) sum(x) + C) /
(2C))`` (the mean with ``m`` more fraction bits, rounded half up), ``y = (x <<
m) - mu``, ``V = sum(y**2)`` (exact), ``sigma = isqrt(C * V * 4**g)`` (exact
floor square root, :func:`isqrt`), one division per row ``r = floor(C *
2**(W + m + g + P) / sigma)`` (``r = 0`` when ``sigma = 0``: a constant row),
``n = (y * r) >> (W + m)`` ~ ``2**P (x - mean) / std`` (since ``y C /
sqrt(C V) = (x - mu) / sqrt(V / C)``), then the affine ``n * gamma + beta``
exactly (``P + gamma_frac`` fraction bits). Deviations: I-ViT rounds the mean
to the input's LSB (``m = 0``), which moves every output of a low-variance row
by up to half an input LSB over the standard deviation (0.06 at std 0.5 with
1/16 steps); ``m = 4`` costs 8 more bits in the row's square sum. I-ViT
divides ``V`` by ``C`` inside the square root with its float scale; ``C * V``
keeps it integer. LayerNorm's epsilon is left out: the integer mean and square
root are exact, and a constant row gives ``beta``.

**Integer square root** (:func:`isqrt`): the digit-by-digit (restoring) method,
one result bit per step with a compare, a subtract and shifts; exactly
``floor(sqrt(v))`` for ``0 <= v < 2**62``.
"""

from __future__ import annotations

import math

import numpy as np

from accel.errors import AccelError
from accel.fixed import MAX_WIDTH, FixedType
from accel.kernels import FLOAT_EXACT, finish

# -- the shift exponential ----------------------------------------------------


def log2e_shift(x: np.ndarray) -> np.ndarray:
    """``x * log2(e)`` as ``x + (x >> 1) - (x >> 4)`` (1.4375), floors included."""
    return x + (x >> 1) - (x >> 4)


def exp2_split(t: np.ndarray, frac: int) -> tuple[np.ndarray, np.ndarray]:
    """``2**(t / 2**frac) ~ 2**k * mant / 2**frac``: ``(k, mant)``, mant in [2**F, 2**(F+1))."""
    return t >> frac, (1 << frac) + (t & ((1 << frac) - 1))


def _exponent(x: np.ndarray, x_frac: int) -> tuple[np.ndarray, np.ndarray]:
    return exp2_split(log2e_shift(np.asarray(x, dtype=np.int64)), x_frac)


def _check_frac(x_frac: int, what: str) -> None:
    if not 0 <= x_frac <= 24:
        raise AccelError(f"{what} needs 0..24 input fraction bits, got {x_frac}")


# -- Shiftmax -----------------------------------------------------------------


def softmax_span(lo: int, hi: int, x_frac: int) -> int:
    """The largest exponent span ``K - k`` of a row whose raw values lie in [lo, hi]."""
    k = log2e_shift(np.array([lo, hi], dtype=np.int64)) >> x_frac
    return int(k[1] - k[0])


SOFTMAX_GUARD = 2  # guard bits of the normalization: its deficit stays below 1/4 LSB


def softmax_widths(n: int, x_frac: int, span: int, out_bits: int) -> dict[str, int]:
    """Bit widths of the hardware's registers for a row of ``n`` values."""
    b, g = out_bits, SOFTMAX_GUARD
    return {
        "sum": x_frac + 1 + span + int(n - 1).bit_length(),  # S < n * 2**(F + 1 + D)
        "dividend": 2 * b + 2 * g + 4,  # 2**(2B + 2G + 3)
        "recip": b + g + 3,  # r <= 2**(B + G + 2)
        "product": x_frac + b + g + 4,  # mant * r < 2**(F + 1 + B + G + 2)
    }


def _fits(n: int, x_frac: int, span: int, out_bits: int) -> None:
    w = softmax_widths(n, x_frac, span, out_bits)
    if max(w.values()) > MAX_WIDTH:
        raise AccelError(
            f"shiftmax needs a {max(w.values())}-bit sum (exponent span {span} over "
            f"{n} values); requantize the input to fewer integer bits"
        )


def bit_length(v: np.ndarray) -> np.ndarray:
    """``int.bit_length`` of non-negative int64 values (a leading-one detector)."""
    n = np.zeros_like(v)
    for sh in (32, 16, 8, 4, 2, 1):
        n = np.where((v >> (n + sh)) > 0, n + sh, n)
    return n + (v > 0)


def _data_span(k: np.ndarray) -> int:
    return int(k.max() - k.min()) if k.size else 0


def softmax_sum(x: np.ndarray, x_frac: int, span: int | None = None):
    """Two-pass statistics of each row (last axis): ``(K, S)``, keepdims.

    ``S`` is the exact sum at scale ``2**-(F + D)`` relative to ``2**K``.
    """
    k, mant = _exponent(x, x_frac)
    span = _data_span(k) if span is None else span
    big_k = k.max(axis=-1, keepdims=True)
    if (big_k - k).max(initial=0) > span:
        raise AccelError(f"shiftmax: a row spans more than {span} binary exponents")
    return big_k, (mant << (k - big_k + span)).sum(axis=-1, keepdims=True)


def softmax_sum_online(x: np.ndarray, x_frac: int, span: int, chunk: int):
    """Single-pass statistics over chunks of ``chunk`` values (Edge-MoE style).

    The running sum is rescaled by ``>> (K_new - K_old)`` when the running
    maximum exponent grows; the shift is exact, so ``(K, S)`` equal
    :func:`softmax_sum`'s.
    """
    k, mant = _exponent(x, x_frac)
    if chunk < 1:
        raise AccelError(f"shiftmax: chunk must be at least 1, got {chunk}")
    big_k = small_k = s = None
    for i in range(0, k.shape[-1], chunk):
        kc, mc = k[..., i : i + chunk], mant[..., i : i + chunk]
        kmax, kmin = kc.max(axis=-1, keepdims=True), kc.min(axis=-1, keepdims=True)
        if big_k is None:
            big_k, small_k, s = kmax, kmin, np.zeros_like(kmax)
        new_k, small_k = np.maximum(big_k, kmax), np.minimum(small_k, kmin)
        if np.any(new_k - small_k > span):  # never, when span comes from the input type
            raise AccelError(f"shiftmax: a row spans more than {span} binary exponents")
        drop = new_k - big_k
        # exactness: every term of s has at least `drop` trailing zeros
        assert not np.any(s & ((np.int64(1) << drop) - 1)), "online rescale dropped bits"
        s = (s >> drop) + (mc << (kc - new_k + span)).sum(axis=-1, keepdims=True)
        big_k = new_k
    return big_k, s


def softmax_normalize(
    x: np.ndarray,
    x_frac: int,
    big_k: np.ndarray,
    s: np.ndarray,
    span: int,
    out_bits: int,
    out_width: int,
) -> np.ndarray:
    """The second pass: one small division per row, a multiply and a shift per value.

    ``S`` (``L`` bits) is cut to its top ``M = B + G + 2`` bits rounding *up* (a
    leading-one detector, a shift and a sticky bit), so the divider is ``2B +
    2G + 4`` bits wide whatever the span: ``r = floor(2**(2B + 2G + 3) / S_top)``.
    """
    k, mant = _exponent(x, x_frac)
    g = SOFTMAX_GUARD
    m = out_bits + g + 2
    lead = bit_length(s)
    cut = lead - m
    dn = np.maximum(cut, 0)
    sticky = (s & ((np.int64(1) << dn) - 1)) != 0
    s_top = np.where(cut > 0, (s >> dn) + sticky, s << np.maximum(-cut, 0))
    recip = (np.int64(1) << (2 * out_bits + 2 * g + 3)) // s_top
    shift = np.minimum(1 + g + (lead - span) + (big_k - k), 62)  # L - D: free of the sizing D
    out = (mant * recip + (np.int64(1) << (shift - 1))) >> shift  # round half up
    return np.minimum(out, (1 << out_width) - 1)


def _softmax_args(x, x_frac, out_bits, out_width, span):
    _check_frac(x_frac, "shiftmax")
    if not 1 <= out_bits <= 30:
        raise AccelError(f"shiftmax: out_bits must be 1..30, got {out_bits}")
    out_width = out_bits if out_width is None else out_width
    if not 1 <= out_width <= out_bits + 1:
        raise AccelError(f"shiftmax: output width must be 1..{out_bits + 1}, got {out_width}")
    x = np.asarray(x, dtype=np.int64)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise AccelError("shiftmax needs rows of at least one value")
    if span is None:
        span = _data_span(_exponent(x, x_frac)[0])
    _fits(x.shape[-1], x_frac, span, out_bits)
    return x, out_width, span


def shiftmax(
    x: np.ndarray,
    x_frac: int,
    out_bits: int = 8,
    out_width: int | None = None,
    span: int | None = None,
) -> np.ndarray:
    """Integer softmax along the last axis (two passes: max and sum, then normalize).

    Returns unsigned raws with ``out_bits`` fraction bits, saturated to
    ``out_width`` bits (default ``out_bits``: 1.0 becomes ``1 - 2**-out_bits``).
    ``span`` (the register sizing ``D``) does not change the result; by default
    it is the data's.
    """
    x, out_width, span = _softmax_args(x, x_frac, out_bits, out_width, span)
    big_k, s = softmax_sum(x, x_frac, span)
    return softmax_normalize(x, x_frac, big_k, s, span, out_bits, out_width)


def shiftmax_online(
    x: np.ndarray,
    x_frac: int,
    out_bits: int = 8,
    out_width: int | None = None,
    span: int | None = None,
    chunk: int = 16,
) -> np.ndarray:
    """:func:`shiftmax` with single-pass statistics over chunks; identical integers."""
    x, out_width, span = _softmax_args(x, x_frac, out_bits, out_width, span)
    big_k, s = softmax_sum_online(x, x_frac, span, chunk)
    return softmax_normalize(x, x_frac, big_k, s, span, out_bits, out_width)


# -- ShiftGELU ----------------------------------------------------------------


def gelu_shift(x: np.ndarray) -> np.ndarray:
    """``1.702 x`` as ``x + (x >> 1) + (x >> 3) + (x >> 4)`` (1.6875)."""
    return x + (x >> 1) + (x >> 3) + (x >> 4)


def shift_sigmoid(x: np.ndarray, x_frac: int, sig_bits: int = 8) -> np.ndarray:
    """``sigmoid(1.702 x)`` with ``sig_bits`` fraction bits, in [0, 2**sig_bits]."""
    _check_frac(x_frac, "shiftgelu")
    if not 1 <= sig_bits <= 24:
        raise AccelError(f"shiftgelu: sig_bits must be 1..24, got {sig_bits}")
    x = np.asarray(x, dtype=np.int64)
    g = sig_bits
    k, mant = exp2_split(log2e_shift(gelu_shift(-np.abs(x))), x_frac)  # k <= 0
    e = (mant << g) >> np.minimum(x_frac - k, 63)  # ~ 2**g * exp(-1.702 |x|), in [0, 2**g]
    num = np.where(x >= 0, np.int64(1) << g, e)
    return (num << g) // ((1 << g) + e)


def shiftgelu(x: np.ndarray, x_frac: int, sig_bits: int = 8) -> np.ndarray:
    """``x * sigmoid(1.702 x)``, exact product: ``x_frac + sig_bits`` fraction bits."""
    x = np.asarray(x, dtype=np.int64)
    return x * shift_sigmoid(x, x_frac, sig_bits)


def gelu_out_type(x: FixedType, sig_bits: int) -> FixedType:
    """The exact output type: sigmoid <= 1/2 for x < 0 and <= 1 for x >= 0."""
    lo = min(x.min_int, 0) << (sig_bits - 1)
    hi = max(x.max_int, 0) << sig_bits
    return FixedType.covering(lo, hi, x.frac + sig_bits)


# -- integer square root and I-LayerNorm ---------------------------------------


def isqrt(v: np.ndarray) -> np.ndarray:
    """Exact ``floor(sqrt(v))`` of int64 values in [0, 2**62), digit by digit."""
    v = np.asarray(v, dtype=np.int64)
    if v.size and (v.min() < 0 or v.max() >= 1 << 62):
        raise AccelError("isqrt needs values in [0, 2**62)")
    top = int(v.max(initial=0)).bit_length()
    bit = np.int64(1) << (2 * ((top - 1) // 2)) if top else np.int64(0)
    rem, res = v.copy(), np.zeros_like(v)
    while bit:  # one result bit per step: compare, subtract, shift
        trial = res + bit
        take = rem >= trial
        rem = np.where(take, rem - trial, rem)
        res = np.where(take, (res >> 1) + bit, res >> 1)
        bit >>= 2
    return res


def layernorm_widths(
    x: FixedType, c: int, norm_frac: int, sqrt_guard: int, mean_frac: int
) -> dict[str, int]:
    """Bit widths of I-LayerNorm's row registers (unsigned magnitudes)."""
    y_max = (x.max_int - x.min_int) << mean_frac  # |y| <= span * 2**m
    v_max = c * y_max * y_max
    return {
        "sum_sq": v_max.bit_length(),
        "sqrt_in": (c * v_max << (2 * sqrt_guard)).bit_length(),
        "dividend": (c << (x.width + mean_frac + sqrt_guard + norm_frac)).bit_length(),
    }


def norm_bound(c: int, norm_frac: int) -> int:
    """A bound on ``|n|``: ``floor(2 sqrt(C) 2**P) + 1``.

    ``|y| <= sqrt(V)`` (``y**2`` is one of ``V``'s terms) and ``sigma + 1 >
    2**g sqrt(C V)``, so for ``sigma >= 1``: ``|y| C 2**g / sigma < sqrt(C)
    (sigma + 1) / sigma <= 2 sqrt(C)``; ``r`` is at most its exact value and
    the final floor adds less than 1. ``sigma = 0`` gives ``n = 0``.
    """
    return math.isqrt(c << (2 * norm_frac + 2)) + 1


def layernorm_normalized(
    x: np.ndarray, x_type: FixedType, norm_frac: int = 8, sqrt_guard: int = 4, mean_frac: int = 4
) -> np.ndarray:
    """``n ~ 2**norm_frac (x - mean) / std`` over the last axis (no affine)."""
    x = np.asarray(x, dtype=np.int64)
    c = x.shape[-1]
    w = layernorm_widths(x_type, c, norm_frac, sqrt_guard, mean_frac)
    if max(w.values()) > MAX_WIDTH:
        raise AccelError(
            f"layernorm needs {max(w.values())}-bit registers for {c} values of {x_type}; "
            "lower mean_frac, sqrt_guard or norm_frac, or narrow the input"
        )
    s = x.sum(axis=-1, keepdims=True)
    mu = ((s << (mean_frac + 1)) + c) // (2 * c)  # mean with m more bits, rounded half up
    y = (x << mean_frac) - mu
    v = (y * y).sum(axis=-1, keepdims=True)
    sigma = isqrt((c * v) << (2 * sqrt_guard))
    shift = x_type.width + mean_frac
    dividend = np.int64(c) << (shift + sqrt_guard + norm_frac)
    r = np.where(sigma > 0, dividend // np.maximum(sigma, 1), 0)
    return (y * r) >> shift


def layernorm(
    x: np.ndarray,
    x_type: FixedType,
    gamma: np.ndarray,
    beta: np.ndarray | None,
    gamma_type: FixedType,
    beta_type: FixedType | None,
    norm_frac: int = 8,
    sqrt_guard: int = 4,
    mean_frac: int = 4,
) -> np.ndarray:
    """I-LayerNorm over the last axis: ``n * gamma + beta``, exact, with
    ``norm_frac + gamma_type.frac`` fraction bits."""
    n = layernorm_normalized(x, x_type, norm_frac, sqrt_guard, mean_frac)
    out = n * np.asarray(gamma, dtype=np.int64)
    if beta is not None:
        shift = norm_frac + gamma_type.frac - beta_type.frac
        out = out + (np.asarray(beta, dtype=np.int64) << shift)
    return out


def layernorm_out_type(
    c: int, norm_frac: int, gamma: FixedType, beta: FixedType | None
) -> FixedType:
    nb = norm_bound(c, norm_frac)
    corners = [a * b for a in (-nb, nb) for b in (gamma.min_int, gamma.max_int)]
    lo, hi = min(corners), max(corners)
    frac = norm_frac + gamma.frac
    if beta is not None:
        lo += beta.min_int << (frac - beta.frac)
        hi += beta.max_int << (frac - beta.frac)
    return FixedType.covering(lo, hi, frac)


# -- activation x activation products and residual adds -------------------------


def matmul(
    a: np.ndarray, b: np.ndarray, a_type: FixedType, b_type: FixedType, acc: FixedType
) -> np.ndarray:
    """Batched ``a @ b`` (``(..., M, K) @ (..., K, N)``), exact, wrapped to ``acc``.

    float64 BLAS when the types bound every partial sum below 2**53, else int64.
    """
    k = a.shape[-1]
    mag = max(-a_type.min_int, a_type.max_int) * max(-b_type.min_int, b_type.max_int)
    if k * mag < FLOAT_EXACT:
        out = np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)
    else:
        out = np.matmul(a, b)
    return finish(out, None, acc)


def add_type(a: FixedType, b: FixedType) -> FixedType:
    """The exact type of ``a + b`` (aligned to the finer scale)."""
    frac = max(a.frac, b.frac)
    lo = (a.min_int << (frac - a.frac)) + (b.min_int << (frac - b.frac))
    hi = (a.max_int << (frac - a.frac)) + (b.max_int << (frac - b.frac))
    return FixedType.covering(lo, hi, frac)


def add(a: np.ndarray, b: np.ndarray, a_type: FixedType, b_type: FixedType) -> np.ndarray:
    frac = max(a_type.frac, b_type.frac)
    return (np.asarray(a, np.int64) << (frac - a_type.frac)) + (
        np.asarray(b, np.int64) << (frac - b_type.frac)
    )
