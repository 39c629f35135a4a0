"""Trainable fixed point (after QFX): learned binary points and multiplier-free weights.

Every tensor that a trainer quantizes gets a :class:`LearnedPoint`: its width
and signedness are the user's, its binary point (the fraction bits) is learned
with the network. The forward pass is exactly ``accel.fixed.quantize`` with the
tensor's rounding mode and saturation (the scale is a power of two, so
``x * 2**frac`` is exact in float64 and the rounding is done on exact values),
hence a float64 model built from these equals the integer graph it exports,
bit for bit. The backward pass is a straight-through estimator for the
rounding and, for the binary point, the learned-step-size gradient (LSQ,
Esser et al. 2020) of a step restricted to powers of two: the log2 of the step
is a float parameter, rounded to an integer in the forward pass.

Multiplier-free weights: with ``k`` set, a weight's raw integer is projected
onto the nearest value with at most ``k`` non-zero signed power-of-two digits
(canonical signed digits; ties go to the smaller magnitude), so a product is a
shift (``k = 1``) or a shift and ``k - 1`` adds. The projection is part of the
forward pass (straight-through backward) and of the export.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding


def csd_digits(v: int) -> int:
    """Non-zero digits of ``v`` in canonical signed-digit form (fewest +-2**i terms)."""
    v, n = abs(int(v)), 0
    while v:
        if v & 1:
            n += 1
            v = v - 1 if (v & 3) == 1 else v + 1  # ...01 -> take +1; ...11 -> take -1
        v >>= 1
    return n


@lru_cache(maxsize=64)
def khot_values(t: FixedType, k: int) -> np.ndarray:
    """Sorted raw integers of ``t`` with at most ``k`` signed power-of-two digits."""
    return np.array([v for v in range(t.min_int, t.max_int + 1) if csd_digits(v) <= k], np.int64)


def khot_project(raw: np.ndarray, t: FixedType, k: int) -> np.ndarray:
    """Each raw integer of ``t`` moved to the nearest ``k``-digit one (ties: smaller |v|)."""
    allowed = khot_values(t, k)
    raw = np.asarray(raw, np.int64)
    hi = np.clip(np.searchsorted(allowed, raw), 0, len(allowed) - 1)
    lo = np.clip(hi - 1, 0, len(allowed) - 1)
    a, b = allowed[lo], allowed[hi]
    da, db = np.abs(raw - a), np.abs(raw - b)
    pick_a = (da < db) | ((da == db) & (np.abs(a) <= np.abs(b)))
    return np.where(pick_a, a, b)


def khot_option(k: int | str | None, width: int) -> int | None:
    """The ``--khot`` option: None, or 1..``width`` digits (one-line error otherwise)."""
    if k is None:
        return None
    try:
        k = int(k)
    except ValueError:
        raise AccelError(f"--khot must be an integer, got {k!r}") from None
    if not 1 <= k <= width:
        raise AccelError(
            f"--khot {k}: a {width}-bit weight has 1..{width} signed power-of-two digits"
        )
    return k


def _round(v: torch.Tensor, mode: Rounding) -> torch.Tensor:
    """``accel.fixed``'s rounding of exact float64 values."""
    if mode is Rounding.TRN:
        return torch.floor(v)
    if mode is Rounding.RND:
        return torch.floor(v + 0.5)
    return torch.round(v)  # half to even: AP_RND_CONV


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v: torch.Tensor, mode: Rounding) -> torch.Tensor:
        return _round(v, mode)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class _KHotSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, raw: torch.Tensor, t: FixedType, k: int) -> torch.Tensor:
        out = khot_project(raw.detach().cpu().numpy().astype(np.int64), t, k)
        return torch.from_numpy(out).to(raw.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad, None, None


class LearnedPoint(nn.Module):
    """A ``width``-bit fixed-point type whose fraction bits are learned (within
    ``fracs``, a range); rounding as given, saturation always (training needs a
    monotone quantizer). ``k``: multiplier-free weights (see the module docstring)."""

    def __init__(
        self,
        width: int,
        signed: bool,
        frac: int,
        rounding: Rounding = Rounding.RND,
        fracs: range = range(-16, 33),
        k: int | None = None,
        learn: bool = True,
    ) -> None:
        super().__init__()
        if k is not None and not 1 <= k <= width:
            raise AccelError(f"k = {k} non-zero digits needs 1 <= k <= the width ({width} bits)")
        self.width, self.signed, self.rounding, self.fracs, self.k = (
            width,
            signed,
            rounding,
            fracs,
            k,
        )
        self.log2_lsb = nn.Parameter(torch.tensor(-float(frac), dtype=torch.float64))
        self.log2_lsb.requires_grad_(learn)
        self.cap: int | None = None  # an upper bound on frac set by the owner (bias vs acc)

    @property
    def frac(self) -> int:
        f = -round(float(self.log2_lsb.detach()))
        hi = self.fracs.stop - 1 if self.cap is None else min(self.fracs.stop - 1, self.cap)
        return int(min(max(f, self.fracs.start), hi))

    @property
    def type(self) -> FixedType:
        return FixedType(self.width, self.frac, self.signed)

    @property
    def quant(self) -> Quant:
        return Quant(self.type, self.rounding, Overflow.SAT)

    def raw(self, x: torch.Tensor) -> np.ndarray:
        """The raw integers the export stores for ``x`` (what :meth:`forward` represents)."""
        with torch.no_grad():
            return np.rint(self(x).numpy() * 2.0**self.frac).astype(np.int64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.type
        # the step 2**-frac exactly, with the LSQ gradient (scaled) flowing to log2_lsb
        g = 1.0 / float(np.sqrt(max(x.numel(), 1) * max(t.max_int, 1)))
        p = self.log2_lsb * g + (self.log2_lsb - self.log2_lsb * g).detach()
        step = torch.exp2(p + (float(-t.frac) - p).detach())
        v = torch.clamp(x / step, float(t.min_int), float(t.max_int))
        r = _RoundSTE.apply(v, self.rounding)
        if self.k is not None:
            r = _KHotSTE.apply(r, t, self.k)
        return r * step
