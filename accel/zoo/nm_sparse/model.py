"""The N:M sparse digit classifiers as accel Graphs.

Two networks on the 8x8 digits (``data``):

- ``mlp``: 64 -> dense 128 -> ReLU -> dense 128 -> ReLU -> dense 10;
- ``cnn``: 8x8x1 -> conv 3x3x16 -> ReLU -> conv 3x3x32 stride 2 -> ReLU -> conv 3x3x32
  stride 2 -> ReLU -> flatten 2x2x32 = 128 -> dense 10 (TensorFlow 'same' padding).

Engine-friendly numerics: inputs ``ap_ufixed<8,1>`` (``pixel / 16``, exact),
weights ``ap_fixed<8,2>`` (8-bit signed), biases ``ap_fixed<16,6>``, every ReLU
output requantized ``AP_RND, AP_SAT`` to ``ap_ufixed<8,3>`` (8-bit unsigned),
logits ``ap_fixed<16,8,AP_RND,AP_SAT>``. Accumulators are derived by the IR.

Sparsity, as SAT does it: a layer is N:M sparse when M divides both its
reduction size K (the forward pattern, attribute ``nm``) and its output count
(the pattern on W^T that BDWP's backward pass uses). The MLP's sparse
layers are fc1 (K=64) and fc2 (K=128); the CNN's are conv2
(K=144) and conv3 (K=288). The CNN's first conv (K=9) and both 10-way
classifiers (10 outputs: no W^T groups of 4 or 8) stay dense. Inference weights
carry the forward mask only; ``nm_t`` is declared on a layer only if its
weights happen to satisfy the transposed pattern too (``accel.nm.check``).

Weights files ``weights/{net}_{pattern}_{method}.npz`` (``mlp_2-8_bdwp``,
``cnn_dense``, ...) hold raw integers ``{layer}_w`` in accel layouts (dense
(in, out), conv (KH, KW, Cin, Cout)), ``{layer}_b``, and the strings ``net``,
``pattern`` ("dense" or "N:M") and ``method``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from accel import nm
from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.ir import Graph, Param

INPUT = Quant(FixedType(8, 7, signed=False), Rounding.RND, Overflow.SAT)
WEIGHT = FixedType(8, 6)
BIAS = FixedType(16, 10)
ACT = Quant(FixedType(8, 5, signed=False), Rounding.RND, Overflow.SAT)
LOGITS = Quant(FixedType(16, 8), Rounding.RND, Overflow.SAT)
WEIGHTS_DIR = Path(__file__).parent / "weights"
METHODS = ("dense", "srste", "bdwp")
DEFAULT_NET, DEFAULT_PATTERN = "mlp", "2:8"


@dataclass(frozen=True)
class Layer:
    """One dot-product layer; ``relu`` adds ReLU + requantize to ``ACT`` after it."""

    name: str
    op: str  # "dense" or "conv2d"
    cin: int
    cout: int
    k: int = 1  # conv kernel size
    stride: int = 1
    relu: bool = True
    sparse: bool = True  # N:M capable (SAT keeps the first conv and the classifier dense)

    @property
    def fan_in(self) -> int:
        """The reduction size K: the forward pattern's group axis."""
        return self.cin if self.op == "dense" else self.k * self.k * self.cin

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.op == "dense":
            return (self.cin, self.cout)
        return (self.k, self.k, self.cin, self.cout)


@dataclass(frozen=True)
class Net:
    name: str
    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]
    flatten_before: str | None = None  # the dense layer that reads the flattened conv output


NETS = {
    "mlp": Net(
        "mlp",
        (64,),
        (
            Layer("fc1", "dense", 64, 128),
            Layer("fc2", "dense", 128, 128),
            Layer("out", "dense", 128, 10, relu=False, sparse=False),
        ),
    ),
    "cnn": Net(
        "cnn",
        (8, 8, 1),
        (
            Layer("conv1", "conv2d", 1, 16, k=3, sparse=False),
            Layer("conv2", "conv2d", 16, 32, k=3, stride=2),
            Layer("conv3", "conv2d", 32, 32, k=3, stride=2),
            Layer("out", "dense", 128, 10, relu=False, sparse=False),
        ),
        flatten_before="out",
    ),
}


def get_net(net: str) -> Net:
    try:
        return NETS[net]
    except KeyError:
        raise AccelError(f"unknown net {net!r} (choose from {', '.join(NETS)})") from None


def parse_pattern(pattern: str | nm.NM | None) -> nm.NM | None:
    """``"2:8"`` -> NM(2, 8); ``"dense"``/None -> None (no sparsity)."""
    if pattern is None or (isinstance(pattern, str) and pattern.strip().lower() == "dense"):
        return None
    return nm.NM.parse(pattern)


def check_pattern(net: Net, pattern: nm.NM | None) -> None:
    """One-line error unless ``pattern``'s M divides K and the outputs of every sparse layer."""
    if pattern is None:
        return
    for layer in net.layers:
        if not layer.sparse:
            continue
        for what, size in (("reduction K", layer.fan_in), ("output count", layer.cout)):
            if size % pattern.m:
                raise AccelError(
                    f"N:M pattern {pattern}: M={pattern.m} does not divide the {what} "
                    f"({size}) of {net.name} layer {layer.name}"
                )


def resolve(
    net: str, pattern: str | nm.NM | None, method: str | None
) -> tuple[Net, nm.NM | None, str]:
    """Validate (net, pattern, method); the method defaults to bdwp (dense without a pattern)."""
    spec = get_net(net)
    p = parse_pattern(pattern)
    if method is None:
        method = "dense" if p is None else "bdwp"
    if method not in METHODS:
        raise AccelError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    if method == "dense" and p is not None:
        raise AccelError(f"method dense takes no N:M pattern (got {p}); use --nm dense")
    if method != "dense" and p is None:
        raise AccelError(f"method {method} needs an N:M pattern such as 2:8")
    check_pattern(spec, p)
    return spec, p, method


def tag(net: str, pattern: nm.NM | None, method: str) -> str:
    """The row's file stem: ``mlp_2-8_bdwp``, ``cnn_dense``."""
    if pattern is None:
        return f"{net}_dense"
    return f"{net}_{pattern.n}-{pattern.m}_{method}"


def _pads_attrs(layer: Layer) -> dict:
    return {"stride": layer.stride, "padding": "same"} if layer.op == "conv2d" else {}


def layer_types(net: str, types: dict | None = None) -> dict:
    """Per layer ``{name}_w``, ``{name}_b`` (FixedType) and ``{name}_act`` (the ReLU's
    Quant) from the JSON a trainer with learned binary points writes; the module's
    types where ``types`` says nothing (``None``: all of them)."""
    spec, types = get_net(net), types or {}
    out: dict = {}
    for layer in spec.layers:
        out[f"{layer.name}_w"], out[f"{layer.name}_b"] = WEIGHT, BIAS
        if layer.relu:
            out[f"{layer.name}_act"] = ACT
    for k, v in types.items():
        if k not in out:
            raise AccelError(f"unknown {net} type {k!r}")
        out[k] = Quant.from_json(v) if k.endswith("_act") else FixedType.from_json(v)
    return out


def graph(
    net: str,
    weights: dict[str, np.ndarray],
    pattern: nm.NM | None,
    method: str = "bdwp",
    types: dict | None = None,
) -> Graph:
    """The integer network from raw weights (of ``types``, see :func:`layer_types`);
    sparse layers declare ``nm`` (checked by the IR)."""
    spec = get_net(net)
    t = layer_types(net, types)
    g = Graph(f"nm_sparse_{tag(net, pattern, method)}".replace("-", "_"))
    g.meta = {
        "family": "N:M sparse training",
        "after": "SAT: bidirectional weight pruning (BDWP) for N:M sparse training",
        "net": net,
        "pattern": str(pattern) if pattern else "dense",
        "method": method,
        "input": "8x8 digit image, pixel / 16",
    }
    x = g.add_input("image", spec.input_shape, INPUT)
    for layer in spec.layers:
        if layer.name == spec.flatten_before:
            x = g.add("reshape", x, name="flatten", shape=(layer.cin,))
        w = np.asarray(weights[f"{layer.name}_w"])
        if w.shape != layer.weight_shape:
            raise AccelError(
                f"{net} layer {layer.name}: weight shape {w.shape}, expected {layer.weight_shape}"
            )
        attrs = _pads_attrs(layer)
        if pattern is not None and layer.sparse:
            attrs["nm"] = pattern.to_json()
            if nm.violations(w.reshape(-1, layer.cout), pattern, 1) == 0:
                attrs["nm_t"] = pattern.to_json()
        params = {
            "weight": Param(w, t[f"{layer.name}_w"]),
            "bias": Param(np.asarray(weights[f"{layer.name}_b"]), t[f"{layer.name}_b"]),
        }
        x = g.add(layer.op, x, name=layer.name, params=params, **attrs)
        if layer.relu:
            x = g.add("relu", x, name=f"{layer.name}_relu")
            x = g.add("requantize", x, name=f"{layer.name}_q", quant=t[f"{layer.name}_act"])
    x = g.add("requantize", x, name="logits", quant=LOGITS)
    g.mark_output(x)
    return g


def save_weights(
    path: Path,
    net: str,
    pattern: nm.NM | None,
    method: str,
    weights: dict,
    types: dict | None = None,
) -> None:
    """Raw weights as int8 (biases int16), compressed, with the row's identity (and its
    learned ``types``, if any)."""
    arrays = {
        k: np.asarray(v).astype(np.int8 if k.endswith("_w") else np.int16)
        for k, v in weights.items()
    }
    for k, v in weights.items():
        if not np.array_equal(arrays[k], v):
            raise AccelError(f"weight {k} does not fit its storage type")
    meta = {"net": net, "pattern": str(pattern) if pattern else "dense", "method": method}
    if types:
        meta["types"] = json.dumps(types)
    np.savez_compressed(path, **arrays, **{k: np.array(v) for k, v in meta.items()})


def load_weights(path: Path) -> tuple[str, nm.NM | None, str, dict[str, np.ndarray]]:
    """(net, pattern, method, raw int64 weights) from a file written by ``save_weights``."""
    path = Path(path)
    if not path.is_file():
        raise AccelError(f"nm_sparse weights {path} not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            net, pattern, method = (str(f[k]) for k in ("net", "pattern", "method"))
            weights = {k: f[k].astype(np.int64) for k in f.files if k[-2:] in ("_w", "_b")}
    except (KeyError, ValueError, OSError) as e:
        raise AccelError(f"{path} is not an nm_sparse weights file ({e})") from None
    spec, p, method = resolve(net, pattern, method)
    return spec.name, p, method, weights


def load_types(path: Path) -> dict | None:
    """The learned types stored with the weights, if any."""
    with np.load(path, allow_pickle=False) as f:
        return json.loads(str(f["types"])) if "types" in f.files else None


def available() -> list[str]:
    """Stems of the shipped weight files."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.npz"))


def build(
    net: str = DEFAULT_NET,
    pattern: str | nm.NM | None = DEFAULT_PATTERN,
    method: str | None = None,
    weights_path: Path | None = None,
) -> Graph:
    """A shipped model: ``build()`` is the MLP at 2:8 (BDWP).

    ``build(net="cnn", pattern="1:4")``, ``build(pattern="2:8", method="srste")``,
    ``build(net="mlp", pattern="dense")``; ``weights_path`` loads a trained file
    instead (its net, pattern and method are stored in it).
    """
    if weights_path is not None:
        net_, p, method_, weights = load_weights(weights_path)
        return graph(net_, weights, p, method_, load_types(weights_path))
    spec, p, method = resolve(net, pattern, method)
    path = WEIGHTS_DIR / f"{tag(spec.name, p, method)}.npz"
    if not path.is_file():
        raise AccelError(
            f"no shipped nm_sparse weights for {tag(spec.name, p, method)} "
            f"(shipped: {', '.join(available()) or 'none'}); train them with "
            "'accel train nm_sparse'"
        )
    return build(weights_path=path)
