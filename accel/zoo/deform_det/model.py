"""The deformable detector (after CoDeNet) as an accel Graph: a chain of layers.

32x32x1 image (``ap_ufixed<8,0,AP_RND,AP_SAT>``: pixel in [0, 1) times 256)
-> ``stem`` conv 3x3 stride 2, 1 -> 16, ReLU (16x16x16)
-> block A: ``a_dw`` deformable depthwise 3x3 stride 1 (16), ReLU, ``a_pw`` 1x1 16 -> 32, ReLU
-> block B: ``b_dw`` deformable depthwise 3x3 stride 2 (32), ReLU, ``b_pw`` 1x1 32 -> 32, ReLU
   (8x8)
-> block C: ``c_dw`` deformable depthwise 3x3 stride 1 (32), ReLU, ``c_pw`` 1x1 32 -> 32, ReLU
-> ``head`` conv 1x1 32 -> 8: 4 class heatmap logits, box size (w, h) / 4, centre offset (x, y)
-> ``ap_fixed<16,8,AP_RND,AP_SAT>``.

All convolutions use TensorFlow 'same' padding. The three depthwise layers are
``deform_conv2d`` nodes whose ``mode`` is the variant: ``regular`` (no
offsets), ``bilinear`` (two offsets per tap, ``BILINEAR_FRAC`` fraction bits,
within +-``BILINEAR_R`` pixels, bilinear sampling) or ``square`` (CoDeNet's
square shape: one integer dilation 0..``SQUARE_R`` per output pixel);
``square1x1`` is ``square`` with 1x1 offset convolutions (a ninth of the 3x3
ones' MACs) instead of 3x3 ones.

Numerics (W4A8): every conv and depthwise weight is 4-bit signed, the offset
convolutions' weights 8-bit signed, all biases 16-bit signed, every ReLU
output is requantized ``AP_RND, AP_SAT`` to 8-bit unsigned. Each layer has its
own power-of-two scales (the fraction bits), chosen by the trainer and stored
with the weights. Accumulators are derived by the IR.

A weights file ``weights/{variant}.npz`` holds raw integers ``{layer}_w``,
``{layer}_b`` (and ``{layer}_ow``, ``{layer}_ob`` for offset convs) in accel
layouts (conv (KH, KW, Cin, Cout), depthwise (3, 3, C)), the JSON string
``fracs`` (per layer the fraction bits of ``w``, ``b``, ``ow``, ``ob`` and
of its ReLU output ``act``) and the strings ``variant``, ``mode``, plus the
ints ``max_offset``, ``offset_frac`` and ``offset_k`` (the offset conv's
kernel; absent, 3).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.ir import Graph, Param
from accel.zoo.deform_det.data import N_CLASSES, SIZE

INPUT = Quant(FixedType(8, 8, signed=False), Rounding.RND, Overflow.SAT)
OUTPUT = Quant(FixedType(16, 8), Rounding.RND, Overflow.SAT)
W_BITS, OFFSET_W_BITS, BIAS_BITS, ACT_BITS = 4, 8, 16, 8
N_OUT = N_CLASSES + 4
# every variant get_variant knows; each shipped, with a row in weights/metrics.json
VARIANTS = ("square", "bilinear", "regular", "square1x1")
DEFAULT_VARIANT = "square"
SQUARE_R = 7
BILINEAR_R, BILINEAR_FRAC = 4, 4
WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class Layer:
    name: str
    op: str  # "conv2d" or "deform_conv2d" (depthwise 3x3)
    cin: int
    cout: int
    k: int = 1
    stride: int = 1
    relu: bool = True


LAYERS = (
    Layer("stem", "conv2d", 1, 16, k=3, stride=2),
    Layer("a_dw", "deform_conv2d", 16, 16, k=3),
    Layer("a_pw", "conv2d", 16, 32),
    Layer("b_dw", "deform_conv2d", 32, 32, k=3, stride=2),
    Layer("b_pw", "conv2d", 32, 32),
    Layer("c_dw", "deform_conv2d", 32, 32, k=3),
    Layer("c_pw", "conv2d", 32, 32),
    Layer("head", "conv2d", 32, N_OUT, relu=False),
)


@dataclass(frozen=True)
class Variant:
    name: str
    mode: str
    max_offset: int
    offset_frac: int
    offset_k: int = 3  # the offset convolution's kernel: 3x3 or 1x1

    @property
    def n_offsets(self) -> int:
        return {"regular": 0, "square": 1, "bilinear": 18}[self.mode]


def get_variant(name: str) -> Variant:
    """The settings of variant ``name``: regular, bilinear, square or square1x1."""
    if name == "regular":
        return Variant(name, "regular", 0, 0)
    if name == "square":
        return Variant(name, "square", SQUARE_R, 0)
    if name == "bilinear":
        return Variant(name, "bilinear", BILINEAR_R, BILINEAR_FRAC)
    if name == "square1x1":
        return Variant(name, "square", SQUARE_R, 0, offset_k=1)
    names = ", ".join(VARIANTS)
    raise AccelError(f"deform_det has no variant {name!r} (choose from {names})")


def weight_type(bits: int, frac: int) -> FixedType:
    return FixedType(bits, int(frac))


def act_quant(frac: int) -> Quant:
    return Quant(FixedType(ACT_BITS, int(frac), signed=False), Rounding.RND, Overflow.SAT)


def graph(v: Variant, weights: dict[str, np.ndarray], fracs: dict[str, dict[str, int]]) -> Graph:
    """The integer detector from raw weights and per-layer fraction bits."""
    g = Graph(f"deform_det_{v.name}")
    g.meta = {
        "family": "deformable convolution",
        "after": "CoDeNet: deformable convolution with a square sampling shape",
        "variant": v.name,
        "input": "32x32 grey image, pixel in [0, 1)",
        "output": "8x8 grid: 4 class heatmap logits, box size (w, h) / 4, centre offset (x, y)",
    }
    x = g.add_input("image", (SIZE, SIZE, 1), INPUT)
    for layer in LAYERS:
        f = fracs[layer.name]
        w = np.asarray(weights[f"{layer.name}_w"])
        params = {
            "weight": Param(w, weight_type(W_BITS, f["w"])),
            "bias": Param(np.asarray(weights[f"{layer.name}_b"]), weight_type(BIAS_BITS, f["b"])),
        }
        if layer.op == "conv2d":
            shape = (layer.k, layer.k, layer.cin, layer.cout)
            attrs = {"stride": layer.stride, "padding": "same"}
        else:
            shape = (3, 3, layer.cin)
            attrs = {
                "mode": v.mode,
                "stride": layer.stride,
                "max_offset": v.max_offset,
                "offset_frac": v.offset_frac,
            }
            if v.n_offsets:
                ow = np.asarray(weights[f"{layer.name}_ow"])
                k = v.offset_k
                if ow.shape != (k, k, layer.cin, v.n_offsets):
                    raise AccelError(
                        f"deform_det layer {layer.name}: offset weight shape {ow.shape}, "
                        f"not {(k, k, layer.cin, v.n_offsets)}"
                    )
                params["offset_weight"] = Param(ow, weight_type(OFFSET_W_BITS, f["ow"]))
                params["offset_bias"] = Param(
                    np.asarray(weights[f"{layer.name}_ob"]), weight_type(BIAS_BITS, f["ob"])
                )
        if w.shape != shape:
            raise AccelError(f"deform_det layer {layer.name}: weight shape {w.shape}, not {shape}")
        x = g.add(layer.op, x, name=layer.name, params=params, **attrs)
        if layer.relu:
            x = g.add("relu", x, name=f"{layer.name}_relu")
            x = g.add("requantize", x, name=f"{layer.name}_q", quant=act_quant(f["act"]))
    x = g.add("requantize", x, name="out", quant=OUTPUT)
    g.mark_output(x)
    return g


def save_weights(path: Path, v: Variant, weights: dict, fracs: dict) -> None:
    """Raw weights as int8 (biases int16), compressed, with the fractions and the variant."""
    arrays = {
        k: np.asarray(val).astype(np.int8 if k.endswith(("_w", "_ow")) else np.int16)
        for k, val in weights.items()
    }
    for k, val in weights.items():
        if not np.array_equal(arrays[k], val):
            raise AccelError(f"weight {k} does not fit its storage type")
    np.savez_compressed(
        path,
        **arrays,
        fracs=np.array(json.dumps(fracs, sort_keys=True)),
        variant=np.array(v.name),
        mode=np.array(v.mode),
        max_offset=np.array(v.max_offset),
        offset_frac=np.array(v.offset_frac),
        offset_k=np.array(v.offset_k),
    )


def load_weights(path: Path) -> tuple[Variant, dict[str, np.ndarray], dict]:
    """(variant, raw int64 weights, fracs) from a file written by ``save_weights``."""
    path = Path(path)
    if not path.is_file():
        raise AccelError(f"deform_det weights {path} not found; run 'accel train deform_det'")
    try:
        with np.load(path, allow_pickle=False) as f:
            # files from before 1x1 offset convs have no offset_k: 3x3
            k = int(f["offset_k"]) if "offset_k" in f.files else 3
            v = Variant(
                str(f["variant"]), str(f["mode"]), int(f["max_offset"]), int(f["offset_frac"]), k
            )
            fracs = json.loads(str(f["fracs"]))
            weights = {
                k: f[k].astype(np.int64) for k in f.files if k.endswith(("_w", "_b", "_ow", "_ob"))
            }
    except (KeyError, ValueError, OSError) as e:
        raise AccelError(f"{path} is not a deform_det weights file ({e})") from None
    return v, weights, fracs


def available() -> list[str]:
    """The shipped variants (weights files)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.npz"))


def build(variant: str = DEFAULT_VARIANT, weights_path: Path | None = None) -> Graph:
    """A shipped variant (``square`` by default), or the weights file ``weights_path``."""
    if weights_path is None:
        get_variant(variant)  # a one-line error for an unknown name
        weights_path = WEIGHTS_DIR / f"{variant}.npz"
        if not weights_path.is_file():
            raise AccelError(
                f"no shipped deform_det weights for {variant}; train them with "
                f"'accel train deform_det --variant {variant}'"
            )
    v, weights, fracs = load_weights(weights_path)
    return graph(v, weights, fracs)
