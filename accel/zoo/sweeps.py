"""What a design-space sweep may vary in each zoo model, and how it scores a point.

A :class:`SweepSpec` names a model's own sweep parameters (beside the hardware
target's knobs and the device), builds the graph for a point (cached per
process), gives the raw inputs a point is timed and checked on, and its
quality columns: ``accuracy`` (higher is better: held-out accuracy, AP50,
mIoU) or ``quality`` (an error, lower is better), plus columns of its own
(``density``, the N:M fraction of kept weights). A zoo model without a spec is
swept as it is, with no parameters of its own and no quality.

The autoencoder at other bit widths is the shipped encoder with its trained
weights requantized to fewer bits (round half up, saturate: ``AP_RND, AP_SAT``,
like every requantization in the model), and its input and hidden activations
quantized to fewer bits, keeping their integer bits. At the shipped widths
(weights 6, input 10, activations 11) the graph is the zoo's, node for node.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding, requantize
from accel.ir import Graph, Param

AE_WEIGHT_BITS, AE_INPUT_BITS, AE_ACT_BITS = 6, 10, 11
AE_QUALITY_SEED = 987654321  # the README's held-out set


@dataclass(frozen=True)
class SweepSpec:
    # name -> (type, default) of the model's own parameters
    params: dict[str, tuple[type, Any]]
    build: Callable[..., Graph]  # keyword arguments: the params
    # raw inputs: (params, n, seed) -> (n, ...) integers of the graph's input type
    inputs: Callable[[dict[str, Any], int, int], np.ndarray]
    # (params, quality_samples) -> {"accuracy": ..., "quality": ..., other columns}
    score: Callable[[dict[str, Any], int], dict[str, Any]] = field(default=lambda p, n: {})


def _quantized(graph: Graph, x: np.ndarray) -> np.ndarray:
    from accel import reference

    return reference.quantize_inputs(graph, graph.inputs[0], x)


# -- autoencoder ---------------------------------------------------------------------
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
    raw = reference.predict(g, _quantized(g, x))
    z = raw.astype(np.float64) * g.tensors[g.outputs[0]].type.lsb
    with torch.no_grad():
        x_hat = _decoder()(torch.from_numpy(z)).numpy() * (x.sum(1, keepdims=True) > 0)
    return quality(x, x_hat)["energy_weighted_error"]


def _ae_inputs(p: dict, n: int, seed: int) -> np.ndarray:
    from accel.zoo.autoencoder.data import make_modules

    return _quantized(autoencoder(**p), make_modules(n, seed)["normalized"])


AUTOENCODER = SweepSpec(
    params={
        "weight_bits": (int, AE_WEIGHT_BITS),
        "input_bits": (int, AE_INPUT_BITS),
        "act_bits": (int, AE_ACT_BITS),
    },
    build=autoencoder,
    inputs=_ae_inputs,
    score=lambda p, n: {"quality": round(autoencoder_quality(**p, n=n), 5)},
)


# -- nm_sparse -----------------------------------------------------------------------
def _method(method: str) -> str | None:
    return None if method == "default" else method


@lru_cache(maxsize=32)
def nm_sparse(net: str, pattern: str, method: str = "default") -> Graph:
    from accel.zoo.nm_sparse.model import build

    return build(net=net, pattern=pattern, method=_method(method))


@lru_cache(maxsize=1)
def _nm_metrics() -> list[dict]:
    from accel.zoo.nm_sparse.model import WEIGHTS_DIR

    return json.loads((WEIGHTS_DIR / "metrics.json").read_text())["rows"]


def nm_sparse_accuracy(net: str, pattern: str, method: str = "default") -> float | None:
    """Held-out accuracy of the shipped weights, from ``metrics.json`` (None if not listed)."""
    from accel.zoo.nm_sparse.model import resolve

    _, p, m = resolve(net, pattern, _method(method))
    want = (net, str(p) if p else "dense", m)
    for row in _nm_metrics():
        if (row["net"], row["pattern"], row["method"]) == want:
            return float(row["accuracy"])
    return None


@lru_cache(maxsize=8)
def nm_sparse_inputs(net: str, n: int, seed: int) -> np.ndarray:
    """``n`` raw test-set inputs (the inference batch a sweep times)."""
    from accel.zoo.nm_sparse.data import make_inputs

    return _quantized(nm_sparse(net, "dense"), make_inputs(n, seed, net))


def _nm_score(p: dict, n: int) -> dict[str, Any]:
    from accel.nm import NM

    dense = p["pattern"].strip().lower() == "dense"
    pattern = None if dense else NM.parse(p["pattern"])
    return {
        "accuracy": nm_sparse_accuracy(**p),
        "density": 1.0 if pattern is None else pattern.n / pattern.m,
    }


NM_SPARSE = SweepSpec(
    params={"net": (str, "mlp"), "pattern": (str, "2:8"), "method": (str, "default")},
    build=nm_sparse,
    inputs=lambda p, n, seed: nm_sparse_inputs(p["net"], n, seed),
    score=_nm_score,
)


# -- deform_det ----------------------------------------------------------------------
def _stored(metrics_dir, match: Callable[[dict], bool]) -> dict | None:
    rows = json.loads((metrics_dir / "metrics.json").read_text())["rows"]
    return next((r for r in rows if match(r)), None)


@lru_cache(maxsize=8)
def deform_det(variant: str) -> Graph:
    from accel.zoo.deform_det.model import build

    return build(variant=variant)


def _deform_inputs(p: dict, n: int, seed: int) -> np.ndarray:
    from accel.zoo.deform_det.data import make_inputs

    return _quantized(deform_det(**p), make_inputs(n, seed))


def _deform_score(p: dict, n: int) -> dict[str, Any]:
    from accel.zoo.deform_det.model import WEIGHTS_DIR

    row = _stored(WEIGHTS_DIR, lambda r: r["variant"] == p["variant"])
    return {"accuracy": None if row is None else row["quantized_ap50"]}


DEFORM_DET = SweepSpec(
    params={"variant": (str, "square")},
    build=deform_det,
    inputs=_deform_inputs,
    score=_deform_score,
)


# -- moe_vit -------------------------------------------------------------------------
@lru_cache(maxsize=8)
def moe_vit(task: str, variant: str, all_experts: str) -> Graph:
    from accel.zoo.moe_vit.model import build

    if all_experts not in ("no", "yes"):
        raise AccelError(f"all_experts must be yes or no, got {all_experts!r}")
    return build(task=task, variant=variant, all_experts=all_experts == "yes")


def _moe_inputs(p: dict, n: int, seed: int) -> np.ndarray:
    from accel.zoo.moe_vit.data import make_inputs

    return _quantized(moe_vit(**p), make_inputs(n, seed))


def _moe_score(p: dict, n: int) -> dict[str, Any]:
    """The stored integer-graph quality of the task: seg mIoU (higher is better) as
    ``accuracy``, depth RMSE (lower is better) as ``quality``; gated experts only."""
    from accel.zoo.moe_vit.model import WEIGHTS_DIR

    row = _stored(WEIGHTS_DIR, lambda r: r["variant"] == p["variant"])
    if row is None or p["all_experts"] == "yes":
        return {}
    q = row["tasks"][p["task"]]["integer"]
    return {"accuracy": q["miou"]} if "miou" in q else {"quality": q["rmse"]}


MOE_VIT = SweepSpec(
    params={"task": (str, "seg"), "variant": (str, "moe"), "all_experts": (str, "no")},
    build=moe_vit,
    inputs=_moe_inputs,
    score=_moe_score,
)

SPECS = {
    "autoencoder": AUTOENCODER,
    "nm_sparse": NM_SPARSE,
    "deform_det": DEFORM_DET,
    "moe_vit": MOE_VIT,
}


def spec(name: str) -> SweepSpec:
    """The sweep spec of zoo model ``name``; a model without one (a variant ``MODEL@V``)
    is swept as built, with no parameters of its own."""
    if name in SPECS:
        return SPECS[name]
    from accel import zoo

    model = zoo.get(name)
    return SweepSpec(
        params={},
        build=model.build,
        inputs=lambda p, n, seed: _quantized(model.build(), model.make_inputs(n, seed)),
    )
