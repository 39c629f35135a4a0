"""Quality and speed of the integer ViT blocks (accel.intops) against float; prints JSON.

    python benchmarks/bench_intops.py [--rows N] [--seed S]

Error: the integer op on quantized inputs against float64 softmax / GELU /
LayerNorm of the *same* quantized inputs, so only the integer algorithm's cost
is measured (not input quantization). Inputs are typical 8-bit activations,
``ap_fixed<8,4>`` (1/16 steps in [-8, 8)), drawn as ViT-Ti-sized tensors:

* softmax: attention rows of 197 tokens, logits ~ N(row offset, 1.5^2);
* GELU: MLP pre-activations ~ N(0, 1.5^2) rows of 768;
* LayerNorm: rows of 192 channels ~ N(row mean, per-row std 0.5-2), gamma in
  [0.5, 1.5] (``ap_fixed<8,2>``), beta in [-0.5, 0.5] (``ap_fixed<8,2>``).

Throughput: elements per second of the numpy reference (best of 3, one core;
the machine's load average is printed with it).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from scipy.special import erf
from timing import best_of

from accel import intops
from accel.fixed import FixedType, Overflow, Quant, Rounding, quantize

X = Quant(FixedType(8, 4), Rounding.RND, Overflow.SAT)
P8 = Quant(FixedType(8, 6), Rounding.RND, Overflow.SAT)


def errors(got: np.ndarray, want: np.ndarray, lsb: float) -> dict:
    err = np.abs(got - want)
    return {
        "max_abs_error": float(f"{err.max():.3g}"),
        "mean_abs_error": float(f"{err.mean():.3g}"),
        "max_error_in_output_lsbs": float(f"{err.max() / lsb:.3g}"),
    }


def softmax(rng, rows: int) -> dict:
    n = 197
    logits = rng.normal(0, 1.5, (rows, n)) + rng.normal(0, 2, (rows, 1))
    x = quantize(logits, X)
    v = x / 16
    p = np.exp(v - v.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    got = intops.shiftmax(x, 4, 8)
    span = intops.softmax_span(X.type.min_int, X.type.max_int, 4)
    online = intops.shiftmax_online(x, 4, 8, span=span, chunk=16)
    assert np.array_equal(online, got)
    got12 = intops.shiftmax(x, 4, 12)
    t2 = best_of(lambda: intops.shiftmax(x, 4, 8, span=span))
    t1 = best_of(lambda: intops.shiftmax_online(x, 4, 8, span=span, chunk=16))
    return {
        "input": str(X),
        "output": "ap_ufixed<8,0> (saturated at 255/256)",
        "row": n,
        **errors(got / 256, p, 2**-8),
        "mean_abs_row_sum_error": float(f"{np.abs(got.sum(-1) / 256 - 1).mean():.3g}"),
        "float_rounded_to_8_bits_mean_abs_row_sum_error": float(
            f"{np.abs(np.floor(p * 256 + 0.5).sum(-1) / 256 - 1).mean():.3g}"
        ),
        "output_12_bits": {
            **errors(got12 / 4096, p, 2**-12),
            "mean_abs_row_sum_error": float(f"{np.abs(got12.sum(-1) / 4096 - 1).mean():.3g}"),
        },
        "online_equals_two_pass": True,
        "sum_register_bits": intops.softmax_widths(n, 4, span, 8)["sum"],
        "elements_per_s": round(x.size / t2),
        "online_chunk16_elements_per_s": round(x.size / t1),
    }


def gelu(rng, rows: int) -> dict:
    x = quantize(rng.normal(0, 1.5, (rows, 768)), X)
    v = x / 16
    exact = 0.5 * v * (1 + erf(v / np.sqrt(2)))
    sig_form = v / (1 + np.exp(-1.702 * v))
    got = intops.shiftgelu(x, 4, 8) / 2**12
    t = best_of(lambda: intops.shiftgelu(x, 4, 8))
    return {
        "input": str(X),
        "output": str(intops.gelu_out_type(X.type, 8)),
        **errors(got, exact, 2**-4),
        "vs_x_sigmoid_1.702x": errors(got, sig_form, 2**-4),
        "note": "output LSB counted at the input's 1/16 (the next requantize)",
        "elements_per_s": round(x.size / t),
    }


def layernorm(rng, rows: int) -> dict:
    c = 192
    xf = rng.normal(0, 1, (rows, c)) * rng.uniform(0.5, 2, (rows, 1)) + rng.normal(0, 1, (rows, 1))
    x = quantize(xf, X)
    gamma = quantize(rng.uniform(0.5, 1.5, c), P8)
    beta = quantize(rng.uniform(-0.5, 0.5, c), P8)
    gt = bt = P8.type
    got = intops.layernorm(x, X.type, gamma, beta, gt, bt, 8, 4) / 2**14
    v = x / 16
    want = (v - v.mean(-1, keepdims=True)) / v.std(-1, keepdims=True) * (gamma / 64) + beta / 64
    t = best_of(lambda: intops.layernorm(x, X.type, gamma, beta, gt, bt, 8, 4))
    return {
        "input": str(X),
        "gamma_beta": str(P8.type),
        "norm_frac": 8,
        "sqrt_guard": 4,
        "mean_frac": 4,
        "output": str(intops.layernorm_out_type(c, 8, gt, bt)),
        "row": c,
        **errors(got, want, 2**-4),
        "note": "output LSB counted at the input's 1/16 (the next requantize)",
        "elements_per_s": round(x.size / t),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    result = {
        "rows": args.rows,
        "seed": args.seed,
        "softmax_int": softmax(rng, args.rows),
        "gelu_int": gelu(rng, args.rows),
        "layernorm_int": layernorm(rng, args.rows),
    }
    a = rng.integers(-128, 128, (max(args.rows // 100, 1), 3, 197, 64))
    t = best_of(lambda: intops.matmul(a, np.swapaxes(a, -1, -2), X.type, X.type, FixedType(23, 8)))
    result["matmul"] = {
        "shape": "(3, 197, 64) x (3, 64, 197) per sample, 8-bit x 8-bit",
        "error": "exact",
        "macs_per_s": round(a.size * 197 / t),
    }
    result["load_average_1min"] = round(os.getloadavg()[0], 2)  # throughput is load-sensitive
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
