"""Fake quantization for torch, bit-exact with ``accel.fixed.quantize``.

The forward pass *is* ``accel.fixed.quantize`` (CPU tensors and numpy arrays
share memory), so a float64 model using it reproduces the integer hardware bit
for bit and the rounding rules live in one place. The backward pass is the
straight-through estimator: the gradient passes unchanged (clip inputs
beforehand if a zero gradient outside the range is wanted).
"""

from __future__ import annotations

import numpy as np
import torch

from accel.fixed import FixedType, Overflow, Quant, Rounding, quantize


def quantize_raw(x: torch.Tensor, quant: Quant) -> torch.Tensor:
    """Raw int64 integers of ``quant`` for real ``x``; equals ``accel.fixed.quantize``."""
    return torch.from_numpy(quantize(x.detach().to(torch.float64).cpu().numpy(), quant))


class _FakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, quant: Quant) -> torch.Tensor:
        raw = quantize_raw(x, quant).to(torch.float64)
        return (raw * 2.0**-quant.type.frac).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def fake_quant(x: torch.Tensor, quant: Quant) -> torch.Tensor:
    """``x`` rounded to ``quant``'s grid (value ``raw * 2**-frac``), straight-through gradient."""
    return _FakeQuant.apply(x, quant)


def best_frac(
    t: torch.Tensor,
    bits: int,
    fracs: range,
    signed: bool = True,
    zero: int = 0,
    max_values: int | None = None,
) -> int:
    """The fraction bits (from ``fracs``) of a ``bits``-wide type (RND, SAT) with the least
    mean squared error on ``t``; ``zero`` if ``t`` is all zeros. ``max_values`` subsamples
    (seeded) a large tensor."""
    v = t.detach().to(torch.float64).cpu().numpy().ravel()
    if max_values is not None and len(v) > max_values:
        v = v[np.random.default_rng(0).choice(len(v), max_values, replace=False)]
    if not np.any(v):
        return zero
    err = []
    for f in fracs:
        q = Quant(FixedType(bits, f, signed), Rounding.RND, Overflow.SAT)
        err.append(float(np.mean((np.ldexp(quantize(v, q).astype(np.float64), -f) - v) ** 2)))
    return fracs[int(np.argmin(err))]


def bias_frac(t: torch.Tensor, acc_frac: int, bits: int) -> int:
    """As many fraction bits as the accumulator has, while twice ``max |t|`` still fits
    ``bits`` signed bits."""
    m = float(t.detach().abs().max())
    if m == 0:
        return acc_frac
    limit = int(np.floor(np.log2((2 ** (bits - 1) - 1) / (2 * m))))
    return min(acc_frac, limit)
