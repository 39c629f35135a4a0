"""The ECON-T encoder (variant 8x8_c8_S2) as an accel Graph.

Numerics follow the public ECON-T training configuration ``8x8_c8_S2``:
inputs ap_fixed<10,4> (qkeras quantized_bits(10, 3)), weights and biases
ap_fixed<6,2> (6 bits, 1 integer bit plus sign), conv output
ap_ufixed<11,3> (quantized_relu(11, 3)), latent ap_ufixed<9,1>
(quantized_relu(9, 1): 9 bits, the 5-e-link setting). Rounding and
saturation are ours to state, since qkeras leaves them implicit: RND + SAT.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.ir import Graph, Param

INPUT = Quant(FixedType(10, 6, signed=True), Rounding.RND, Overflow.SAT)
WEIGHT = FixedType(6, 4, signed=True)
CONV_OUT = Quant(FixedType(11, 8, signed=False), Rounding.RND, Overflow.SAT)
LATENT = Quant(FixedType(9, 8, signed=False), Rounding.RND, Overflow.SAT)
N_CELLS, LATENT_DIM = 48, 16
WEIGHTS_DIR = Path(__file__).parent / "weights"


def weight_types(types: dict | None = None) -> dict:
    """The encoder's weight and bias types and its hidden activation's quant, from the JSON
    a trainer with learned binary points writes (``None``: the ECON-T types)."""
    out = {k: WEIGHT for k in ("conv_w", "conv_b", "dense_w", "dense_b")}
    out["conv_act"] = CONV_OUT
    for k, v in (types or {}).items():
        if k not in out:
            raise AccelError(f"unknown autoencoder type {k!r}")
        out[k] = Quant.from_json(v) if k == "conv_act" else FixedType.from_json(v)
    return out


def encoder_graph(
    weights: dict[str, np.ndarray], arrange: np.ndarray | None = None, types: dict | None = None
) -> Graph:
    """Build the integer encoder from raw weights ``conv_w, conv_b, dense_w, dense_b`` (of
    ``types``, see :func:`weight_types`)."""
    t = weight_types(types)

    def wb(layer: str) -> dict[str, Param]:
        return {
            "weight": Param(weights[f"{layer}_w"], t[f"{layer}_w"]),
            "bias": Param(weights[f"{layer}_b"], t[f"{layer}_b"]),
        }

    if arrange is None:
        from accel.zoo.autoencoder.geometry import ARRANGE as arrange
    g = Graph("autoencoder")
    g.meta = {
        "family": "autoencoder",
        "after": "CMS HGCAL ECON-T on-detector autoencoder, variant 8x8_c8_S2",
        "input": "48 trigger-cell charges, normalized to the module sum",
    }
    x = g.add_input("charges", (N_CELLS,), INPUT)
    x = g.add("gather", x, name="arrange", index=np.asarray(arrange), shape=(8, 8, 1))
    x = g.add("conv2d", x, name="conv", stride=2, padding="same", params=wb("conv"))
    x = g.add("relu", x, name="conv_relu")
    x = g.add("requantize", x, name="conv_q", quant=t["conv_act"])
    x = g.add("reshape", x, name="flatten", shape=(128,))
    x = g.add("dense", x, name="dense", params=wb("dense"))
    x = g.add("relu", x, name="dense_relu")
    x = g.add("requantize", x, name="latent", quant=LATENT)
    g.mark_output(x)
    return g


def load_weights(path: Path | None = None) -> dict[str, np.ndarray]:
    path = path or WEIGHTS_DIR / "encoder_int.npz"
    if not path.is_file():
        raise AccelError(f"autoencoder weights {path} not found; run 'accel train autoencoder'")
    with np.load(path) as f:
        return {k: f[k] for k in ("conv_w", "conv_b", "dense_w", "dense_b")}


def load_types(path: Path | None = None) -> dict | None:
    """The learned types stored beside the weights (``types.json`` in the npz), if any."""
    path = path or WEIGHTS_DIR / "encoder_int.npz"
    with np.load(path) as f:
        return json.loads(str(f["types"])) if "types" in f.files else None


def available() -> list[str]:
    """The shipped variants: ``encoder_int_<variant>.npz`` (e.g. khot2, learned)."""
    return sorted(
        p.stem.removeprefix("encoder_int_") for p in WEIGHTS_DIR.glob("encoder_int_*.npz")
    )


def build(weights_path: Path | None = None, variant: str | None = None) -> Graph:
    """The zoo model with its shipped (or given) trained weights; ``variant``: a shipped
    variant's weights and learned types."""
    if variant is not None:
        if variant not in available():
            raise AccelError(
                f"autoencoder has no variant {variant!r} (shipped: {', '.join(available())})"
            )
        weights_path = WEIGHTS_DIR / f"encoder_int_{variant}.npz"
    return encoder_graph(load_weights(weights_path), types=load_types(weights_path))
