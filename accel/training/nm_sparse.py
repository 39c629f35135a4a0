"""N:M sparse, quantization-aware training in torch: dense, SR-STE and SAT's BDWP.

Masks follow :mod:`accel.nm` exactly. A layer's weight is seen as the matrix
``(K, C)`` accel computes with: ``nn.Linear``'s ``(out, in)`` weight transposed,
``nn.Conv2d``'s ``(Cout, Cin, KH, KW)`` permuted to ``(KH, KW, Cin, Cout)`` and
flattened to ``(KH*KW*Cin, Cout)``. The forward mask keeps the ``N`` largest
magnitudes in every group of ``M`` consecutive rows (along the reduction K),
ties to the lower index; the backward mask is the same rule along ``C`` (the
pattern of W^T). :func:`nm_mask` equals ``accel.nm.mask`` on the same numbers.
Masks are recomputed from the (fake-quantized) weight magnitudes every step, so
the exported integer weights times the mask are ``accel.nm.mask`` of themselves.

Methods (``NMLinear``/``NMConv2d``, or :func:`sparsify` for any module tree):

- ``dense``: no mask (the baseline);
- ``srste`` (SR-STE, Zhou et al. 2021): the forward uses ``W * mask``; the
  gradient reaches all of ``W`` straight through, plus SR-STE's decay
  ``lambda * (1 - mask) * W`` on the pruned weights;
- ``bdwp`` (SAT's bidirectional weight pruning): the forward GEMM uses ``W``
  masked N:M along its input (reduction) axis, the backward input-gradient GEMM
  uses ``W`` masked N:M along its output axis (the N:M mask of W^T, which is
  what that GEMM reduces over), and the weight-gradient GEMM is dense. Custom
  autograd functions make the backward pass really use the W^T-masked weight
  (``F.linear`` / ``F.conv2d`` forward, ``torch.nn.grad.conv2d_input`` backward).

Quantization-aware: weights and biases go through ``fake_quant`` (which is
``accel.fixed.quantize``), activations after each ReLU are requantized RND/SAT,
all straight-through. The network runs in float64, where every product and sum
of these short fixed-point numbers is exact, so its forward pass equals the
integer Graph bit for bit.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from accel import nm as nmlib
from accel import reference
from accel.errors import AccelError
from accel.fixed import Overflow, Quant, Rounding
from accel.ir.ops import conv_padding
from accel.training.qfx import LearnedPoint, khot_option
from accel.training.quant import fake_quant, quantize_raw
from accel.training.threads import single_thread
from accel.zoo.nm_sparse import data
from accel.zoo.nm_sparse import model as zm

WEIGHT_QUANT = Quant(zm.WEIGHT, Rounding.RND_CONV, Overflow.SAT)
BIAS_QUANT = Quant(zm.BIAS, Rounding.RND_CONV, Overflow.SAT)
SRSTE_DECAY = 2e-4  # lambda_W of SR-STE
EPOCHS = {"mlp": 60, "cnn": 60}
BATCH, LR = 64, 3e-3
# The shipped table: every net at dense, BDWP at three patterns, SR-STE at the same three.
TABLE = [("dense", None), *((m, p) for m in ("bdwp", "srste") for p in ("2:4", "2:8", "1:4"))]


# -- masks ---------------------------------------------------------------------


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The ``(K, C)`` matrix accel computes with, from a Linear or Conv2d weight."""
    if weight.ndim == 2:  # nn.Linear (out, in)
        return weight.T
    if weight.ndim == 4:  # nn.Conv2d (Cout, Cin, KH, KW) -> (KH, KW, Cin, Cout)
        return weight.permute(2, 3, 1, 0).reshape(-1, weight.shape[0])
    raise AccelError(f"N:M masks need a Linear or Conv2d weight, got shape {tuple(weight.shape)}")


def from_matrix(matrix: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`as_matrix` for a weight of ``shape``."""
    if len(shape) == 2:
        return matrix.T
    cout, cin, kh, kw = shape
    return matrix.reshape(kh, kw, cin, cout).permute(3, 2, 0, 1)


def nm_mask(w2: torch.Tensor, pattern: nmlib.NM, axis: int = 0) -> torch.Tensor:
    """``accel.nm.mask`` in torch: keep the N largest |w| per group of M along ``axis``."""
    a = w2 if axis == 0 else w2.T
    if a.shape[0] % pattern.m:
        raise AccelError(f"M={pattern.m} does not divide the group dimension ({a.shape[0]})")
    g = a.reshape(a.shape[0] // pattern.m, pattern.m, a.shape[1])
    order = torch.argsort(-g.abs(), dim=1, stable=True)  # largest first, lower index on ties
    keep = torch.zeros(g.shape, dtype=torch.bool, device=w2.device)
    keep.scatter_(1, order[:, : pattern.n], True)
    keep = keep.reshape(a.shape)
    return keep if axis == 0 else keep.T


def forward_mask(weight: torch.Tensor, pattern: nmlib.NM) -> torch.Tensor:
    """N:M along the reduction axis, in the weight's own layout."""
    return from_matrix(nm_mask(as_matrix(weight), pattern, 0), weight.shape)


def backward_mask(weight: torch.Tensor, pattern: nmlib.NM) -> torch.Tensor:
    """N:M along the output axis (the forward pattern of W^T), in the weight's own layout."""
    return from_matrix(nm_mask(as_matrix(weight), pattern, 1), weight.shape)


# -- autograd functions -----------------------------------------------------------


class _SRSTE(torch.autograd.Function):
    """Forward ``w_q * mask``; backward: dense straight-through + decay on the pruned ``w``."""

    @staticmethod
    def forward(ctx, w_q, w, mask, decay):
        ctx.save_for_backward(w, mask)
        ctx.decay = decay
        return w_q * mask

    @staticmethod
    def backward(ctx, grad):
        w, mask = ctx.saved_tensors
        return grad, ctx.decay * (~mask) * w, None, None


class _BDWPLinear(torch.autograd.Function):
    """y = x (W*mask_f)^T + b; dx = dy (W*mask_t); dW = dy^T x (dense)."""

    @staticmethod
    def forward(ctx, x, w, mask_f, mask_t, bias):
        ctx.save_for_backward(x, w * mask_t)
        ctx.has_bias = bias is not None
        return F.linear(x, w * mask_f, bias)

    @staticmethod
    def backward(ctx, grad):
        x, w_t = ctx.saved_tensors
        gx = grad @ w_t if ctx.needs_input_grad[0] else None
        g2 = grad.reshape(-1, grad.shape[-1])
        gw = g2.T @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None
        gb = g2.sum(0) if ctx.has_bias and ctx.needs_input_grad[4] else None
        return gx, gw, None, None, gb


class _BDWPConv2d(torch.autograd.Function):
    """conv2d with W*mask_f forward; input gradient with W*mask_t; dense weight gradient."""

    @staticmethod
    def forward(ctx, x, w, mask_f, mask_t, bias, stride, padding, dilation):
        ctx.save_for_backward(x, w * mask_t)
        ctx.conf = (stride, padding, dilation)
        ctx.w_shape = w.shape
        ctx.has_bias = bias is not None
        return F.conv2d(x, w * mask_f, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad):
        x, w_t = ctx.saved_tensors
        stride, padding, dilation = ctx.conf
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.nn.grad.conv2d_input(x.shape, w_t, grad, stride, padding, dilation)
        if ctx.needs_input_grad[1]:
            gw = torch.nn.grad.conv2d_weight(x, ctx.w_shape, grad, stride, padding, dilation)
        if ctx.has_bias and ctx.needs_input_grad[4]:
            gb = grad.sum((0, 2, 3))
        return gx, gw, None, None, gb, None, None, None


# -- layers ------------------------------------------------------------------------


@dataclass(frozen=True)
class NMConfig:
    """How a layer is sparsified and quantized while training."""

    pattern: nmlib.NM | None = None
    method: str = "dense"
    decay: float = SRSTE_DECAY  # SR-STE's lambda (srste only)
    weight_quant: Quant | None = None
    bias_quant: Quant | None = None

    def __post_init__(self) -> None:
        if self.method not in zm.METHODS:
            known = ", ".join(zm.METHODS)
            raise AccelError(f"unknown method {self.method!r} (choose from {known})")
        if self.method != "dense" and self.pattern is None:
            raise AccelError(f"method {self.method} needs an N:M pattern")

    @property
    def sparse(self) -> bool:
        return self.method != "dense" and self.pattern is not None


class _NMMixin:
    """Shared by NMLinear and NMConv2d: quantized, masked weights for the current step."""

    nm: NMConfig
    weight: nn.Parameter
    bias: nn.Parameter | None

    def quantized(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        points = getattr(self, "points", None)  # learned binary points (QFX), if any
        if points is not None:
            b = None if self.bias is None else points["b"](self.bias)
            return points["w"](self.weight), b
        c = self.nm
        w = fake_quant(self.weight, c.weight_quant) if c.weight_quant else self.weight
        b = self.bias
        if b is not None and c.bias_quant is not None:
            b = fake_quant(b, c.bias_quant)
        return w, b

    def masks(self, w_q: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(forward, backward) masks of the (quantized) weight ``w_q``, or None if dense."""
        if not self.nm.sparse:
            return None
        w = (self.quantized()[0] if w_q is None else w_q).detach()
        return forward_mask(w, self.nm.pattern), backward_mask(w, self.nm.pattern)

    def inference_weight(self) -> torch.Tensor:
        """The weight inference uses: quantized, times the forward mask."""
        with torch.no_grad():
            w = self.quantized()[0]
            m = self.masks(w)
            return w if m is None else w * m[0]

    def _weights(self, bdwp_apply, x):
        """(BDWP output, None, None), or (None, weight, bias) for a plain forward GEMM."""
        w_q, b = self.quantized()
        masks = self.masks(w_q)
        if masks is None:
            return None, w_q, b
        mask_f, mask_t = masks
        if self.nm.method == "srste":
            return None, _SRSTE.apply(w_q, self.weight, mask_f, self.nm.decay), b
        return bdwp_apply(x, w_q, mask_f, mask_t, b), None, None


class NMLinear(_NMMixin, nn.Linear):
    """``nn.Linear`` trained N:M sparse (forward groups along ``in_features``)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        config: NMConfig | None = None,
        **kw,
    ) -> None:
        super().__init__(in_features, out_features, bias, **kw)
        self.nm = config or NMConfig()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, w, b = self._weights(_BDWPLinear.apply, x)
        return y if y is not None else F.linear(x, w, b)


class NMConv2d(_NMMixin, nn.Conv2d):
    """``nn.Conv2d`` trained N:M sparse (forward groups along K = (KH, KW, Cin) flattened)."""

    def __init__(self, *args, config: NMConfig | None = None, **kw) -> None:
        super().__init__(*args, **kw)
        if self.groups != 1 or isinstance(self.padding, str) or self.padding_mode != "zeros":
            raise AccelError("NMConv2d supports groups=1 and numeric zero padding only")
        self.nm = config or NMConfig()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def bdwp(x, w, mf, mt, b):
            return _BDWPConv2d.apply(x, w, mf, mt, b, self.stride, self.padding, self.dilation)

        y, w, b = self._weights(bdwp, x)
        if y is not None:
            return y
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation)


def sparsify(module: nn.Module, config: NMConfig) -> nn.Module:
    """Replace every ``nn.Linear`` / ``nn.Conv2d`` in ``module`` by its N:M twin (weights kept)."""
    for name, child in module.named_children():
        if isinstance(child, _NMMixin):
            child.nm = config
            continue
        if isinstance(child, nn.Linear):
            new = NMLinear(
                child.in_features,
                child.out_features,
                child.bias is not None,
                config=config,
                dtype=child.weight.dtype,
            )
        elif isinstance(child, nn.Conv2d):
            new = NMConv2d(
                child.in_channels,
                child.out_channels,
                child.kernel_size,
                child.stride,
                child.padding,
                child.dilation,
                child.groups,
                child.bias is not None,
                config=config,
                dtype=child.weight.dtype,
            )
        else:
            sparsify(child, config)
            continue
        new.load_state_dict(child.state_dict())
        setattr(module, name, new)
    return module


# -- the zoo networks ------------------------------------------------------------------


POINTS = ("fixed", "learned")


class DigitNet(nn.Module):
    """A zoo net (``model.NETS``) in torch: its forward pass equals the integer Graph.

    ``points``: ``fixed``, the module's types; ``learned``, the same widths with each
    layer's weight, bias and ReLU output binary point learned (QFX,
    :mod:`accel.training.qfx`). ``k``: weights with at most ``k`` signed power-of-two
    digits. The input and the logits keep their types (the interfaces).
    """

    def __init__(
        self,
        net: str,
        pattern: nmlib.NM | None = None,
        method: str = "dense",
        points: str = "fixed",
        k: int | None = None,
    ) -> None:
        super().__init__()
        if points not in POINTS:
            raise AccelError(f"points must be one of {', '.join(POINTS)}, got {points!r}")
        self.spec = zm.get_net(net)
        self.layers = nn.ModuleDict()
        self.acts = nn.ModuleDict()
        self.qfx = points == "learned" or k is not None
        for layer in self.spec.layers:
            config = NMConfig(
                pattern if layer.sparse and method != "dense" else None,
                method if layer.sparse else "dense",
                weight_quant=WEIGHT_QUANT,
                bias_quant=BIAS_QUANT,
            )
            if layer.op == "dense":
                mod = NMLinear(layer.cin, layer.cout, config=config, dtype=torch.float64)
            else:
                mod = NMConv2d(
                    layer.cin, layer.cout, layer.k, layer.stride, config=config, dtype=torch.float64
                )
            self.layers[layer.name] = mod
            if self.qfx:
                learn = points == "learned"
                w, b, a = WEIGHT_QUANT, BIAS_QUANT, zm.ACT
                tw, tb = w.type, b.type
                mod.points = nn.ModuleDict(
                    {
                        "w": LearnedPoint(tw.width, True, tw.frac, w.rounding, k=k, learn=learn),
                        "b": LearnedPoint(tb.width, True, tb.frac, b.rounding, learn=learn),
                    }
                )
                if layer.relu:
                    self.acts[layer.name] = LearnedPoint(
                        a.type.width, False, a.type.frac, a.rounding, learn=learn
                    )

    def _caps(self) -> None:
        """A bias cannot have more fraction bits than its accumulator (input + weight)."""
        frac = zm.INPUT.type.frac
        for layer in self.spec.layers:
            points = self.layers[layer.name].points
            points["b"].cap = frac + points["w"].frac
            if layer.relu:
                frac = self.acts[layer.name].frac

    def types(self) -> dict | None:
        """The exported graph's learned types (None with the module's own)."""
        if not self.qfx:
            return None
        self._caps()
        out = {}
        for layer in self.spec.layers:
            points = self.layers[layer.name].points
            out[f"{layer.name}_w"] = points["w"].type.to_json()
            out[f"{layer.name}_b"] = points["b"].type.to_json()
            if layer.relu:
                out[f"{layer.name}_act"] = self.acts[layer.name].quant.to_json()
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Real inputs (n, *input_shape) -> logits (n, 10) on the ``LOGITS`` grid."""
        if self.qfx:
            self._caps()
        x = fake_quant(x, zm.INPUT)
        if x.ndim == 4:
            x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW
        for layer in self.spec.layers:
            mod = self.layers[layer.name]
            if layer.name == self.spec.flatten_before:
                x = x.permute(0, 2, 3, 1).reshape(len(x), -1)  # accel flattens (h, w, c)
            if layer.op == "conv2d":
                _, top, bottom = conv_padding(x.shape[2], layer.k, layer.stride, "same")
                _, left, right = conv_padding(x.shape[3], layer.k, layer.stride, "same")
                x = F.pad(x, (left, right, top, bottom))
            x = mod(x)
            if layer.relu and self.qfx:
                x = self.acts[layer.name](F.relu(x))
            elif layer.relu:
                t = zm.ACT.type
                # The clamp changes nothing forward (SAT) but stops gradients past saturation.
                x = fake_quant(F.relu(x).clamp(max=t.max_int * t.lsb), zm.ACT)
        return fake_quant(x, zm.LOGITS)

    def export_int(self) -> dict[str, np.ndarray]:
        """Raw integer weights (forward mask applied) and biases in accel layouts."""
        out = {}
        if self.qfx:
            self._caps()
        for layer in self.spec.layers:
            mod = self.layers[layer.name]
            w = as_matrix(mod.inference_weight()).reshape(layer.weight_shape)
            if self.qfx:  # already on the learned grid: the raws are exact
                p = mod.points
                out[f"{layer.name}_w"] = np.rint(w.numpy() * 2.0 ** p["w"].frac).astype(np.int64)
                out[f"{layer.name}_b"] = p["b"].raw(mod.bias)
                continue
            out[f"{layer.name}_w"] = quantize_raw(w, WEIGHT_QUANT).numpy()
            out[f"{layer.name}_b"] = quantize_raw(mod.bias.detach(), BIAS_QUANT).numpy()
        return out


# -- training ------------------------------------------------------------------------


def accuracy(g, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """Accuracy of the integer Graph (accel.reference) on real inputs: (fraction, correct)."""
    raw = reference.quantize_inputs(g, g.inputs[0], x)
    correct = int((reference.predict(g, raw).argmax(1) == y).sum())
    return correct / len(y), correct


def fit(
    net: str,
    pattern: nmlib.NM | None,
    method: str,
    epochs: int,
    seed: int,
    n_train: int | None = None,
    progress: bool = False,
    points: str = "fixed",
    k: int | None = None,
) -> tuple[DigitNet, float]:
    """Train from a seeded init in a seeded batch order; returns the net and the last loss."""
    x, y = data.load("train", net)
    if n_train is not None:
        x, y = x[:n_train], y[:n_train]
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(seed)
    model = DigitNet(net, pattern, method, points, k)
    steps = epochs * -(-len(x) // BATCH)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    order = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    for epoch in range(epochs):
        for idx in torch.randperm(len(x), generator=order).split(BATCH):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if progress and ((epoch + 1) % 10 == 0 or epoch + 1 == epochs):
            print(
                f"  {zm.tag(net, pattern, method)} epoch {epoch + 1}/{epochs} "
                f"loss {loss.item():.4f}",
                file=sys.stderr,
            )
    return model, loss.item()


def train_row(
    net: str,
    pattern: nmlib.NM | None,
    method: str,
    epochs: int,
    seed: int,
    n_train: int | None = None,
    progress: bool = False,
    points: str = "fixed",
    k: int | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Train one validated row; (its metrics, its raw integer weights); the learned
    types, if any, are the row's ``types``."""
    start = time.perf_counter()
    with single_thread():
        model, loss = fit(net, pattern, method, epochs, seed, n_train, progress, points, k)
        weights, types = model.export_int(), model.types()
    g = zm.graph(net, weights, pattern, method, types)
    x_test, y_test = data.load("test", net)
    acc, correct = accuracy(g, x_test, y_test)
    row = {
        "net": net,
        "pattern": str(pattern) if pattern else "dense",
        "method": method,
        "file": f"{zm.tag(net, pattern, method)}.npz",
        "accuracy": acc,
        "correct": correct,
        "n_test": len(y_test),
        "final_train_loss": loss,
        "layers": _layer_stats(g),
        "epochs": epochs,
        "seed": seed,
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    if types is not None:
        row.update(points=points, khot=k, types=types)
    return row, weights


def train(
    epochs: int | None = None,
    n_train: int | None = None,
    seed: int = 0,
    out_dir: Path | None = None,
    progress: bool = True,
    nm: str | None = None,
    net: str = zm.DEFAULT_NET,
    method: str | None = None,
    points: str = "fixed",
    khot: int | str | None = None,
) -> dict:
    """Train one (net, pattern, method) row; with ``out_dir`` write its weights and metrics.

    ``nm`` is "N:M" (default 2:8) or "dense"; ``method`` defaults to bdwp
    (dense without a pattern). Accuracy is the integer Graph's (``accel.reference``) on the
    held-out split. Deterministic for a given seed.
    """
    if nm is None:
        nm = "dense" if method == "dense" else zm.DEFAULT_PATTERN
    spec, pattern, method = zm.resolve(net, nm, method)
    epochs = EPOCHS[spec.name] if epochs is None else epochs
    if epochs < 1 or (n_train is not None and n_train < 1):
        raise AccelError("epochs and n_train must be positive")
    k = khot_option(khot, zm.WEIGHT.width)
    if points not in POINTS:
        raise AccelError(f"--points must be one of {', '.join(POINTS)}, got {points!r}")
    row, weights = train_row(spec.name, pattern, method, epochs, seed, n_train, progress, points, k)
    doc = {"settings": settings(epochs, seed, n_train), "rows": [row]}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        zm.save_weights(
            out_dir / row["file"], spec.name, pattern, method, weights, row.get("types")
        )
        (out_dir / "metrics.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def _json(pattern: nmlib.NM | None) -> list[int] | None:
    return None if pattern is None else pattern.to_json()


def _layer_stats(g) -> dict[str, dict]:
    """Per dot layer: weights, non-zeros, declared patterns."""
    out = {}
    for node in g.nodes:
        if node.op in ("dense", "conv2d"):
            w = node.params["weight"].data
            out[node.name] = {
                "weights": int(w.size),
                "nonzero": int(np.count_nonzero(w)),
                "nm": _json(node.attrs.get("nm")),
                "nm_t": _json(node.attrs.get("nm_t")),
            }
    return out


def settings(epochs: int | dict, seed: int, n_train: int | None = None) -> dict:
    x, _ = data.load("train")
    return {
        "data": "scikit-learn load_digits, pixel / 16; stratified split, seed "
        f"{data.SPLIT_SEED}, {data.TEST_FRACTION:.0%} held out",
        "n_train": n_train or len(x),
        "epochs": epochs,
        "seed": seed,
        "batch_size": BATCH,
        "optimizer": f"Adam lr {LR}, cosine decay to 0, cross-entropy",
        "srste_decay": SRSTE_DECAY,
        "weights": f"{zm.WEIGHT.ap()} (training: RND_CONV, SAT), biases {zm.BIAS.ap()}",
        "activations": f"input {zm.INPUT.ap()}, ReLU outputs {zm.ACT.ap()}, "
        f"logits {zm.LOGITS.ap()}",
        "accuracy": "integer Graph (accel.reference.predict) on the held-out split",
    }


def train_all(out_dir: Path = zm.WEIGHTS_DIR, seed: int = 0, progress: bool = False) -> dict:
    """Every row of ``TABLE`` for both nets into ``out_dir`` (the shipped weights and table)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for net in zm.NETS:
        dense_acc = None
        for method, text in TABLE:
            _, pattern, _ = zm.resolve(net, text or "dense", method)
            row, weights = train_row(net, pattern, method, EPOCHS[net], seed, None, progress)
            dense_acc = row["accuracy"] if method == "dense" else dense_acc
            row["loss_vs_dense_pp"] = round(100 * (dense_acc - row["accuracy"]), 2)
            zm.save_weights(out_dir / row["file"], net, pattern, method, weights)
            rows.append(row)
            print(
                f"{row['file']}: accuracy {row['accuracy']:.4f} ({row['train_seconds']} s)",
                file=sys.stderr,
            )
    doc = {"settings": settings(dict(EPOCHS), seed), "rows": rows}
    (out_dir / "metrics.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def seed_spread(seeds: list[int]) -> list[dict]:
    """Integer accuracy of every ``TABLE`` row over several seeds (nothing is written)."""
    out = []
    for net in zm.NETS:
        for method, text in TABLE:
            _, pattern, _ = zm.resolve(net, text or "dense", method)
            accs = [train_row(net, pattern, method, EPOCHS[net], s)[0]["accuracy"] for s in seeds]
            out.append(
                {
                    "net": net,
                    "pattern": text or "dense",
                    "method": method,
                    "seeds": seeds,
                    "accuracy": accs,
                    "mean": float(np.mean(accs)),
                }
            )
            print(json.dumps(out[-1]), file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m accel.training.nm_sparse``: retrain the shipped weights and metrics.json;
    ``--seeds 0 1 2 3 4`` instead trains every row with each seed and records the
    accuracies as ``seed_study`` in the existing metrics.json (weights untouched)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m accel.training.nm_sparse")
    p.add_argument("-o", "--out", type=Path, default=zm.WEIGHTS_DIR)
    p.add_argument("--seeds", type=int, nargs="+", help="seed study into OUT/metrics.json")
    args = p.parse_args(argv)
    if not args.seeds:
        train_all(args.out)
        return
    study = seed_spread(args.seeds)
    path = args.out / "metrics.json"
    doc = json.loads(path.read_text())
    doc["seed_study"] = study
    path.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
