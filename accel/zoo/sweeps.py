"""The networks a sweep evaluates, built for a point's parameters (and cached per process).

The autoencoder at other bit widths is the shipped encoder with its trained
weights requantized to fewer bits (round half up, saturate: ``AP_RND, AP_SAT``,
like every requantization in the model), and its input and hidden activations
quantized to fewer bits, keeping their integer bits. At the shipped widths
(weights 6, input 10, activations 11) the graph is the zoo's, node for node.
"""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np

from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding, requantize
from accel.ir import Graph, Param

AE_WEIGHT_BITS, AE_INPUT_BITS, AE_ACT_BITS = 6, 10, 11
AE_QUALITY_SEED = 987654321  # the README's held-out set


def _narrow(t: FixedType, bits: int, what: str) -> FixedType:
    """``t`` with ``bits`` total bits, the same integer bits (fewer fraction bits)."""
    if not 2 <= bits <= t.width:
        raise AccelError(f"{what} must be between 2 and {t.width} bits, got {bits}")
    return FixedType(bits, t.frac - (t.width - bits), t.signed)


@lru_cache(maxsize=64)
def autoencoder(
    weight_bits: int = AE_WEIGHT_BITS,
    input_bits: int = AE_INPUT_BITS,
    act_bits: int = AE_ACT_BITS,
) -> Graph:
    """The ECON-T encoder with weights/biases, input and conv output narrowed to these widths."""
    from accel.zoo.autoencoder import model

    w_type = _narrow(model.WEIGHT, weight_bits, "weight_bits")
    q_w = Quant(w_type, Rounding.RND, Overflow.SAT)
    weights = {
        k: requantize(np.asarray(v, np.int64), model.WEIGHT.frac, q_w)
        for k, v in model.load_weights().items()
    }
    inp = Quant(_narrow(model.INPUT.type, input_bits, "input_bits"), Rounding.RND, Overflow.SAT)
    act = Quant(_narrow(model.CONV_OUT.type, act_bits, "act_bits"), Rounding.RND, Overflow.SAT)

    from accel.zoo.autoencoder.geometry import ARRANGE

    def wb(layer: str) -> dict[str, Param]:
        return {
            "weight": Param(weights[f"{layer}_w"], w_type),
            "bias": Param(weights[f"{layer}_b"], w_type),
        }

    g = Graph("autoencoder")
    g.meta = {"family": "autoencoder", "bits": [weight_bits, input_bits, act_bits]}
    x = g.add_input("charges", (model.N_CELLS,), inp)
    x = g.add("gather", x, name="arrange", index=np.asarray(ARRANGE), shape=(8, 8, 1))
    x = g.add("conv2d", x, name="conv", stride=2, padding="same", params=wb("conv"))
    x = g.add("relu", x, name="conv_relu")
    x = g.add("requantize", x, name="conv_q", quant=act)
    x = g.add("reshape", x, name="flatten", shape=(128,))
    x = g.add("dense", x, name="dense", params=wb("dense"))
    x = g.add("relu", x, name="dense_relu")
    x = g.add("requantize", x, name="latent", quant=model.LATENT)
    g.mark_output(x)
    return g


@lru_cache(maxsize=4)
def _ae_eval_set(n: int) -> np.ndarray:
    from accel.zoo.autoencoder.data import make_modules

    return make_modules(n, AE_QUALITY_SEED)["normalized"]


@lru_cache(maxsize=1)
def _decoder():
    try:
        from accel.training.autoencoder import WEIGHTS_DIR, load_decoder
    except ImportError:
        raise AccelError("autoencoder quality needs torch: pip install 'accel[train]'") from None
    return load_decoder(WEIGHTS_DIR / "decoder.npz")


@lru_cache(maxsize=64)
def autoencoder_quality(weight_bits: int, input_bits: int, act_bits: int, n: int) -> float:
    """Energy-weighted reconstruction error (lower is better) of the integer encoder at these
    widths with the shipped float decoder, on ``n`` held-out modules (the README's metric)."""
    import torch

    from accel import reference
    from accel.training.autoencoder import quality

    g = autoencoder(weight_bits, input_bits, act_bits)
    x = _ae_eval_set(n)
    raw = reference.predict(g, reference.quantize_inputs(g, g.inputs[0], x))
    z = raw.astype(np.float64) * g.tensors[g.outputs[0]].type.lsb
    with torch.no_grad():
        x_hat = _decoder()(torch.from_numpy(z)).numpy() * (x.sum(1, keepdims=True) > 0)
    return quality(x, x_hat)["energy_weighted_error"]


@lru_cache(maxsize=32)
def nm_sparse(net: str, pattern: str, method: str | None) -> Graph:
    from accel.zoo.nm_sparse.model import build

    return build(net=net, pattern=pattern, method=method)


@lru_cache(maxsize=1)
def _nm_metrics() -> list[dict]:
    from accel.zoo.nm_sparse.model import WEIGHTS_DIR

    return json.loads((WEIGHTS_DIR / "metrics.json").read_text())["rows"]


def nm_sparse_accuracy(net: str, pattern: str, method: str | None) -> float | None:
    """Held-out accuracy of the shipped weights, from ``metrics.json`` (None if not listed)."""
    from accel.zoo.nm_sparse.model import resolve

    _, p, method = resolve(net, pattern, method)
    want = (net, str(p) if p else "dense", method)
    for row in _nm_metrics():
        if (row["net"], row["pattern"], row["method"]) == want:
            return float(row["accuracy"])
    return None


@lru_cache(maxsize=8)
def nm_sparse_inputs(net: str, n: int, seed: int) -> np.ndarray:
    """``n`` raw test-set inputs (the inference batch a sweep times)."""
    from accel import reference
    from accel.zoo.nm_sparse.data import make_inputs

    g = nm_sparse(net, "dense", None)
    return reference.quantize_inputs(g, g.inputs[0], make_inputs(n, seed, net))
