"""Fake quantization for torch, bit-exact with ``accel.fixed.quantize``.

The forward pass *is* ``accel.fixed.quantize`` (CPU tensors and numpy arrays
share memory), so a float64 model using it reproduces the integer hardware bit
for bit and the rounding rules live in one place. The backward pass is the
straight-through estimator: the gradient passes unchanged (clip inputs
beforehand if a zero gradient outside the range is wanted).
"""

from __future__ import annotations

import torch

from accel.fixed import Quant, quantize


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
