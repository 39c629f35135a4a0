"""The deformable detector (after CoDeNet) in torch: float training, then QAT, then export.

The network is ``accel.zoo.deform_det.model.LAYERS`` (a chain), NCHW inside.
The depthwise layers mimic the IR's ``deform_conv2d`` (``accel.deform``)
exactly: the offsets come from a 3x3 'same' convolution of the layer's input
with the same stride, are clipped to ``[0, R]`` (square) or ``[-R, R]``
(bilinear) and rounded half up to ``F`` fraction bits (square: integers); the
samples are read with zero padding outside the image, bilinear ones
interpolated from the four neighbours (in float64 the interpolation weights,
multiples of ``2^-2F``, are exact). The sampler is plain torch (``gather``).
Rounding of offsets is straight-through: forward the rounded value, backward
the identity; the sample's gradient with respect to its position is the
bilinear one, so a square layer's integer dilation still learns (its
gradient is the one-sided difference of the neighbouring pixels).

Training, per variant (``train_variant``):

1. float: ``FLOAT_EPOCHS`` epochs (no fixed point; a square layer keeps its
   integer dilation, a bilinear one its offsets unrounded), CenterNet's loss
   (penalty-reduced focal loss on the heatmaps, L1 on size and offset at the
   centre cells), Adam with cosine decay (the offset convolutions at a tenth
   of the learning rate), He initialisation. Square dilations stay at d = 1
   here and are learned in QAT only (``FROZEN_FLOAT``): learned from the start
   they cost AP. Its AP50 is the "float" number.
2. calibration: per layer the power-of-two scales (fraction bits) of the
   4-bit weights, 8-bit offset-conv weights and 8-bit unsigned ReLU outputs
   that minimise the quantization MSE on the float weights / on the
   activations of ``CALIB`` training images; 16-bit biases get as many
   fraction bits as the accumulator has and twice their magnitude allows.
3. QAT: ``QAT_EPOCHS`` more epochs with everything fake-quantized
   (``accel.training.quant.fake_quant``, i.e. ``accel.fixed.quantize``,
   straight-through).
4. export to raw integers, the integer Graph (``model.graph``), and its AP50
   on the held-out images run through ``accel.reference`` (the "quantized"
   number).

A float64 copy of the trained network (:meth:`Detector.from_int`) reproduces
the integer Graph's output bit for bit (a test checks it).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from accel import reference
from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.ir.ops import conv_padding
from accel.training.quant import best_frac, bias_frac, fake_quant, quantize_raw
from accel.training.threads import single_thread
from accel.zoo.deform_det import data, evaluate
from accel.zoo.deform_det import model as zm

N_TRAIN = 5000
FLOAT_EPOCHS, QAT_EPOCHS = 24, 6
BATCH, LR, QAT_LR = 32, 1e-2, 2e-3
OFFSET_LR = 0.1  # the offset convolutions learn 10x slower (as deformable ConvNets do)
# Square dilations stay at d = 1 (the regular conv) through float training and are
# learned in QAT only: learning them from the start cost AP (see the README).
FROZEN_FLOAT = {"regular": False, "bilinear": False, "square": True, "square1x1": True}
ZERO_OFFSET_FRAC = 10  # offset weights still all zero at calibration: steps of 2^-10
CALIB = 256
SIZE_WEIGHT, OFFSET_WEIGHT = 1.0, 1.0
HEAT_PRIOR = -2.19  # CenterNet's heatmap bias init: sigmoid = 0.1
HEAD_INIT_SCALE = 0.1  # He init (no normalisation layers), the head's weights scaled down
FRACS = range(-4, 24)  # fraction bits the calibration may choose from


def weight_quant(bits: int, frac: int) -> Quant:
    return Quant(FixedType(bits, int(frac)), Rounding.RND_CONV, Overflow.SAT)


class _RoundHalfUp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.floor(x + 0.5)

    @staticmethod
    def backward(ctx, grad):
        return grad


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    """``floor(x + 1/2)`` with a straight-through gradient."""
    return _RoundHalfUp.apply(x)


def pad_same(x: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    """TensorFlow 'same' zero padding of an NCHW tensor."""
    _, top, bottom = conv_padding(x.shape[2], k, stride, "same")
    _, left, right = conv_padding(x.shape[3], k, stride, "same")
    return F.pad(x, (left, right, top, bottom))


def sample(x: torch.Tensor, off: torch.Tensor, stride: int, mode: str) -> torch.Tensor:
    """The 9 taps' samples (N, C, 9, OH, OW) of ``x`` (N, C, H, W) at deformed positions.

    ``off`` is (N, 1, OH, OW) integer dilations (square) or (N, 18, OH, OW)
    offsets ``(dy, dx)`` per tap in pixels (bilinear). Positions outside read 0.
    """
    n, c, h, w = x.shape
    oh, top, _ = conv_padding(h, 3, stride, "same")
    ow, left, _ = conv_padding(w, 3, stride, "same")
    dev, dt = x.device, x.dtype
    cy = (torch.arange(oh, device=dev) * stride - top + 1).to(dt).view(1, 1, oh, 1)
    cx = (torch.arange(ow, device=dev) * stride - left + 1).to(dt).view(1, 1, 1, ow)
    k = torch.arange(9, device=dev)
    ky = (k // 3 - 1).to(dt).view(1, 9, 1, 1)
    kx = (k % 3 - 1).to(dt).view(1, 9, 1, 1)
    if mode == "square":
        py, px = cy + ky * off, cx + kx * off
    else:
        py, px = cy + ky + off[:, 0::2], cx + kx + off[:, 1::2]
    y0, x0 = torch.floor(py).detach(), torch.floor(px).detach()
    fy, fx = py - y0, px - x0
    flat = x.reshape(n, c, h * w)
    out = 0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            idx = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).long()
            v = flat.gather(2, idx.reshape(n, 1, -1).expand(n, c, -1))
            out = out + v.view(n, c, 9, oh, ow) * (wy * wx * inside).unsqueeze(1)
    return out


def _quantized(
    w: torch.Tensor, b: torch.Tensor, w_bits: int, fracs: dict | None, wk: str, bk: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight and bias as the float pass (``fracs`` None) or QAT (fake-quantized) uses them."""
    if fracs is None:
        return w, b
    return (
        fake_quant(w, weight_quant(w_bits, fracs[wk])),
        fake_quant(b, weight_quant(zm.BIAS_BITS, fracs[bk])),
    )


class QConv(nn.Module):
    """A 'same' conv2d whose weights and bias are fake-quantized when ``qat``."""

    def __init__(self, layer: zm.Layer) -> None:
        super().__init__()
        self.layer = layer
        self.weight = nn.Parameter(torch.empty(layer.cout, layer.cin, layer.k, layer.k))
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")
        self.bias = nn.Parameter(torch.zeros(layer.cout))

    def params(self, fracs: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
        return _quantized(self.weight, self.bias, zm.W_BITS, fracs, "w", "b")

    def forward(self, x: torch.Tensor, fracs: dict | None) -> torch.Tensor:
        w, b = self.params(fracs)
        s = self.layer.stride
        return F.conv2d(pad_same(x, self.layer.k, s), w, b, s)

    def export(self, fracs: dict) -> dict[str, np.ndarray]:
        w, b = (t.detach() for t in self.params(fracs))
        return {
            "w": quantize_raw(w.permute(2, 3, 1, 0), weight_quant(zm.W_BITS, fracs["w"])).numpy(),
            "b": quantize_raw(b, weight_quant(zm.BIAS_BITS, fracs["b"])).numpy(),
        }

    def load(self, raw: dict[str, np.ndarray], fracs: dict) -> None:
        with torch.no_grad():
            w = np.ldexp(raw["w"].astype(np.float64), -fracs["w"]).transpose(3, 2, 0, 1)
            self.weight.copy_(torch.from_numpy(w))
            self.bias.copy_(torch.from_numpy(np.ldexp(raw["b"].astype(np.float64), -fracs["b"])))


class QDeform(nn.Module):
    """Depthwise 3x3 (deformable per the variant), as ``accel.deform`` computes it."""

    def __init__(self, layer: zm.Layer, v: zm.Variant) -> None:
        super().__init__()
        self.layer, self.v = layer, v
        c = layer.cin
        self.weight = nn.Parameter(torch.empty(c, 1, 3, 3))
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")
        self.bias = nn.Parameter(torch.zeros(c))
        if v.n_offsets:
            k = v.offset_k
            self.offset_weight = nn.Parameter(torch.zeros(v.n_offsets, c, k, k))
            start = 1.0 if v.mode == "square" else 0.0  # square: d = 1, the regular conv
            self.offset_bias = nn.Parameter(torch.full((v.n_offsets,), start))

    def params(self, fracs: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
        return _quantized(self.weight, self.bias, zm.W_BITS, fracs, "w", "b")

    def offset_params(self, fracs: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
        w, b = self.offset_weight, self.offset_bias
        return _quantized(w, b, zm.OFFSET_W_BITS, fracs, "ow", "ob")

    def offsets(self, x: torch.Tensor, fracs: dict | None) -> torch.Tensor:
        """(N, K, OH, OW): clipped, and rounded to F fraction bits (always for square)."""
        ow, ob = self.offset_params(fracs)
        s = self.layer.stride
        acc = F.conv2d(pad_same(x, self.v.offset_k, s), ow, ob, s)
        r = self.v.max_offset
        if self.v.mode == "square":
            return round_half_up(acc.clamp(0, r))
        acc = acc.clamp(-r, r)
        if fracs is None:
            return acc
        one = 2.0**self.v.offset_frac
        return round_half_up(acc * one) / one

    def forward(self, x: torch.Tensor, fracs: dict | None) -> torch.Tensor:
        w, b = self.params(fracs)
        s, c = self.layer.stride, self.layer.cin
        if self.v.mode == "regular":
            return F.conv2d(pad_same(x, 3, s), w, b, s, groups=c)
        taps = sample(x, self.offsets(x, fracs), s, self.v.mode)
        return (taps * w.view(1, c, 9, 1, 1)).sum(2) + b.view(1, c, 1, 1)

    def export(self, fracs: dict) -> dict[str, np.ndarray]:
        w, b = (t.detach() for t in self.params(fracs))
        out = {
            "w": quantize_raw(w[:, 0].permute(1, 2, 0), weight_quant(zm.W_BITS, fracs["w"])),
            "b": quantize_raw(b, weight_quant(zm.BIAS_BITS, fracs["b"])),
        }
        if self.v.n_offsets:
            ow, ob = (t.detach() for t in self.offset_params(fracs))
            out["ow"] = quantize_raw(
                ow.permute(2, 3, 1, 0), weight_quant(zm.OFFSET_W_BITS, fracs["ow"])
            )
            out["ob"] = quantize_raw(ob, weight_quant(zm.BIAS_BITS, fracs["ob"]))
        return {k: v.numpy() for k, v in out.items()}

    def load(self, raw: dict[str, np.ndarray], fracs: dict) -> None:
        def real(key):
            return torch.from_numpy(np.ldexp(raw[key].astype(np.float64), -fracs[key]))

        with torch.no_grad():
            self.weight.copy_(real("w").permute(2, 0, 1).unsqueeze(1))
            self.bias.copy_(real("b"))
            if self.v.n_offsets:
                self.offset_weight.copy_(real("ow").permute(3, 2, 0, 1))
                self.offset_bias.copy_(real("ob"))


class Detector(nn.Module):
    """The zoo detector; ``fracs`` set (after calibration) switches on fake quantization."""

    def __init__(self, variant: str | zm.Variant = zm.DEFAULT_VARIANT) -> None:
        super().__init__()
        self.v = variant if isinstance(variant, zm.Variant) else zm.get_variant(variant)
        self.layers = nn.ModuleDict()
        for layer in zm.LAYERS:
            mod = QConv(layer) if layer.op == "conv2d" else QDeform(layer, self.v)
            self.layers[layer.name] = mod
        with torch.no_grad():  # a small head, heatmaps starting at CenterNet's prior
            self.layers["head"].weight.mul_(HEAD_INIT_SCALE)
            self.layers["head"].bias[: data.N_CLASSES] = HEAT_PRIOR
        self.fracs: dict[str, dict[str, int]] | None = None

    def forward(self, x: torch.Tensor, record: dict | None = None) -> torch.Tensor:
        """Images (N, 32, 32, 1) -> head output (N, 8, 8, 8); on the integer grid when quantized.

        ``record`` (float mode) collects every ReLU output by layer name, for calibration.
        """
        q = self.fracs is not None
        x = x.permute(0, 3, 1, 2)
        if q:
            x = fake_quant(x, zm.INPUT)
        for layer in zm.LAYERS:
            f = self.fracs[layer.name] if q else None
            x = self.layers[layer.name](x, f)
            if layer.relu:
                x = F.relu(x)
                if q:
                    a = zm.act_quant(f["act"])
                    # The clamp changes nothing forward (SAT) but stops gradients past it.
                    x = fake_quant(x.clamp(max=a.type.max_int * a.type.lsb), a)
                if record is not None:
                    record[layer.name] = x.detach()
        if q:
            x = fake_quant(x, zm.OUTPUT)
        return x.permute(0, 2, 3, 1)

    # -- calibration and export ------------------------------------------------
    def calibrate(self, x: torch.Tensor) -> dict[str, dict[str, int]]:
        """Choose every layer's fraction bits from the float net (weights, and activations
        on the images ``x``); switches on fake quantization."""
        record: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            self.fracs = None
            self(x, record)
        fracs: dict[str, dict[str, int]] = {}
        x_frac = zm.INPUT.type.frac
        for layer in zm.LAYERS:
            mod = self.layers[layer.name]
            f = {"w": best_frac(mod.weight, zm.W_BITS, FRACS)}
            extra = 2 * self.v.offset_frac if layer.op == "deform_conv2d" else 0
            f["b"] = bias_frac(mod.bias, x_frac + extra + f["w"], zm.BIAS_BITS)
            if getattr(mod, "offset_weight", None) is not None:
                # Still-zero offset weights (square, frozen in float) get a fine grid to learn on.
                f["ow"] = best_frac(
                    mod.offset_weight, zm.OFFSET_W_BITS, FRACS, zero=ZERO_OFFSET_FRAC
                )
                f["ob"] = bias_frac(mod.offset_bias, x_frac + f["ow"], zm.BIAS_BITS)
            if layer.relu:
                f["act"] = best_frac(record[layer.name], zm.ACT_BITS, FRACS, signed=False)
                x_frac = f["act"]
            fracs[layer.name] = f
        self.fracs = fracs
        return fracs

    def export_int(self) -> dict[str, np.ndarray]:
        """Raw integer weights in accel layouts, ``{layer}_{w,b,ow,ob}``."""
        if self.fracs is None:
            raise AccelError("calibrate the detector before exporting it")
        out = {}
        for layer in zm.LAYERS:
            for k, v in self.layers[layer.name].export(self.fracs[layer.name]).items():
                out[f"{layer.name}_{k}"] = v
        return out

    def graph(self):
        return zm.graph(self.v, self.export_int(), self.fracs)

    @classmethod
    def from_int(cls, v: zm.Variant, weights: dict[str, np.ndarray], fracs: dict) -> Detector:
        """A float64 detector holding exported integer weights: its forward pass is the
        integer Graph's output (times 2^-8)."""
        det = cls(v).to(torch.float64)
        for layer in zm.LAYERS:
            raw = {k: weights[f"{layer.name}_{k}"] for k in ("w", "b", "ow", "ob")
                   if f"{layer.name}_{k}" in weights}  # fmt: skip
            det.layers[layer.name].load(raw, fracs[layer.name])
        det.fracs = fracs
        return det


def dilation_share(det: Detector, images: np.ndarray) -> dict[str, float]:
    """Per square deformable layer, the share of its output pixels (all images) whose
    dilation d is above 1; on the integer grid when ``det`` is quantized (e.g.
    :meth:`Detector.from_int`: the integer Graph's dilations)."""
    if det.v.mode != "square":
        return {}
    above: dict[str, list[int]] = {}

    def hook(mod, args, _out):
        d = mod.offsets(*args)
        n = above.setdefault(mod.layer.name, [0, 0])
        n[0] += int((d > 1).sum())
        n[1] += d.numel()

    dt = next(det.parameters()).dtype
    handles = [m.register_forward_hook(hook) for m in det.layers.values()
               if isinstance(m, QDeform)]  # fmt: skip
    try:
        with torch.no_grad():
            for x in np.array_split(images, max(1, len(images) // 125)):
                det(torch.from_numpy(x).to(dt))
    finally:
        for h in handles:
            h.remove()
    return {k: round(n / total, 5) for k, (n, total) in above.items()}


# -- loss, data, evaluation ---------------------------------------------------------


def loss_fn(out: torch.Tensor, tgt: dict[str, torch.Tensor]) -> torch.Tensor:
    """CenterNet: penalty-reduced focal loss (alpha 2, beta 4) + L1 size and offset."""
    k = data.N_CLASSES
    z = out[..., :k].clamp(-30, 30)
    gt = tgt["heatmap"]
    pos = gt == 1
    p = torch.sigmoid(z)
    pos_loss = -F.logsigmoid(z) * (1 - p) ** 2
    neg_loss = -F.logsigmoid(-z) * p**2 * (1 - gt) ** 4
    n = pos.sum().clamp(min=1)
    focal = (torch.where(pos, pos_loss, neg_loss)).sum() / n
    m = tgt["mask"].unsqueeze(-1)
    l_size = ((out[..., k : k + 2] - tgt["size"]).abs() * m).sum() / n
    l_off = ((out[..., k + 2 : k + 4] - tgt["offset"]).abs() * m).sum() / n
    return focal + SIZE_WEIGHT * l_size + OFFSET_WEIGHT * l_off


def training_set(n: int, seed: int = data.TRAIN_SEED) -> tuple[torch.Tensor, dict]:
    d = data.make_images(n, seed)
    t = data.targets(d["boxes"], d["classes"])
    x = torch.from_numpy(d["images"]).float()
    return x, {
        k: torch.from_numpy(v if v.dtype == bool else v.astype(np.float32)) for k, v in t.items()
    }


def test_set(n: int = data.N_TEST) -> dict[str, np.ndarray]:
    return data.make_images(n, data.TEST_SEED)


def torch_ap50(det: Detector, d: dict[str, np.ndarray]) -> dict:
    """AP50 of the torch net (float or fake-quantized) on the images of ``d``."""
    with torch.no_grad():
        out = torch.cat([det(torch.from_numpy(x).float()) for x in np.array_split(d["images"], 8)])
    return evaluate.ap50(evaluate.decode(out.double().numpy()), d["boxes"], d["classes"])


def graph_outputs(g, images: np.ndarray) -> np.ndarray:
    """The integer Graph's head output as real numbers (accel.reference)."""
    raw = reference.quantize_inputs(g, g.inputs[0], images)
    return np.ldexp(reference.predict(g, raw).astype(np.float64), -zm.OUTPUT.type.frac)


def graph_ap50(g, d: dict[str, np.ndarray]) -> dict:
    """AP50 of the integer Graph run through ``accel.reference`` on the images of ``d``."""
    return evaluate.ap50(evaluate.decode(graph_outputs(g, d["images"])), d["boxes"], d["classes"])


# -- training -------------------------------------------------------------------------


def _epochs(det, x, tgt, epochs, lr, seed, tag, progress, frozen=0, offset_lr=OFFSET_LR):
    """Adam with cosine decay over ``epochs``; the offset convs (at ``offset_lr`` times
    ``lr``) stay fixed for the first ``frozen``."""
    steps = epochs * -(-len(x) // BATCH)
    offsets = [p for name, p in det.named_parameters() if ".offset_" in name]
    rest = [p for name, p in det.named_parameters() if ".offset_" not in name]
    groups = [{"params": rest}, {"params": offsets, "lr": lr * offset_lr}] if offsets else rest
    opt = torch.optim.Adam(groups, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    order = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    for epoch in range(epochs):
        for p in offsets:
            p.requires_grad_(epoch >= frozen)
        total, count = 0.0, 0
        for idx in torch.randperm(len(x), generator=order).split(BATCH):
            loss = loss_fn(det(x[idx]), {k: v[idx] for k, v in tgt.items()})
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
        if progress:
            print(f"  {tag} epoch {epoch + 1}/{epochs} loss {total / count:.4f}", file=sys.stderr)
    return total / max(count, 1)


def train_variant(
    variant: str,
    float_epochs: int = FLOAT_EPOCHS,
    qat_epochs: int = QAT_EPOCHS,
    n_train: int = N_TRAIN,
    seed: int = 0,
    progress: bool = False,
    train_data: tuple[torch.Tensor, dict] | None = None,
    test: dict[str, np.ndarray] | None = None,
    frozen_float: int | None = None,
    offset_lr: float = OFFSET_LR,
) -> tuple[dict, dict[str, np.ndarray], dict]:
    """Float training, calibration, QAT, export; (metrics row, raw weights, fracs).

    ``frozen_float``: the float epochs the offset convs stay fixed (a square layer at
    d = 1) before they learn; by default all of them for square variants
    (``FROZEN_FLOAT``), none otherwise. ``offset_lr``: the offset convs' learning rate
    relative to the rest's, in both phases.
    """
    v = zm.get_variant(variant)
    start = time.perf_counter()
    x, tgt = train_data if train_data is not None else training_set(n_train)
    test = test if test is not None else test_set()
    with single_thread():
        torch.manual_seed(seed)
        det = Detector(v)
        if frozen_float is None:
            frozen = float_epochs if FROZEN_FLOAT[v.name] else 0
        else:
            frozen = min(max(frozen_float, 0), float_epochs)
        float_loss = _epochs(
            det, x, tgt, float_epochs, LR, seed, f"{v.name} float", progress, frozen, offset_lr
        )
        float_ap = torch_ap50(det, test)
        if progress:
            print(f"  {v.name} float AP50 {float_ap['mAP50']:.4f}", file=sys.stderr)
        fracs = det.calibrate(x[:CALIB])
        qat_loss = _epochs(
            det, x, tgt, qat_epochs, QAT_LR, seed + 1, f"{v.name} QAT", progress, 0, offset_lr
        )
        weights = det.export_int()
    train_seconds = time.perf_counter() - start
    g = zm.graph(v, weights, fracs)
    q_ap = graph_ap50(g, test)
    # the integer Graph's dilations (its float64 copy reproduces it bit for bit)
    shares = dilation_share(Detector.from_int(v, weights, fracs), test["images"])
    if progress:
        print(f"  {v.name} quantized AP50 {q_ap['mAP50']:.4f}", file=sys.stderr)
    row = {
        "variant": v.name,
        "mode": v.mode,
        "max_offset": v.max_offset,
        "offset_frac": v.offset_frac,
        "file": f"{v.name}.npz",
        "float_ap50": round(float_ap["mAP50"], 4),
        "quantized_ap50": round(q_ap["mAP50"], 4),
        "float_ap50_per_class": [round(a, 4) for a in float_ap["per_class"]],
        "quantized_ap50_per_class": [round(a, 4) for a in q_ap["per_class"]],
        "final_float_loss": round(float_loss, 4),
        "final_qat_loss": round(qat_loss, 4),
        "float_epochs": float_epochs,
        "offsets_frozen_epochs": frozen if v.n_offsets else None,
        "offset_kernel": v.offset_k if v.n_offsets else None,
        "offset_lr": offset_lr if v.n_offsets else None,
        "dilation_above_1": shares or None,
        "qat_epochs": qat_epochs,
        "n_train": len(x),
        "seed": seed,
        "parameters": g.n_params(),
        "train_seconds": round(train_seconds, 1),
    }
    return row, weights, fracs


def settings(n_train: int) -> dict:
    return {
        "data": f"accel.zoo.deform_det.data: {n_train} training images (seed "
        f"{data.TRAIN_SEED}), {data.N_TEST} held-out images (seed {data.TEST_SEED})",
        "classes": list(data.CLASSES),
        "batch_size": BATCH,
        "optimizer": f"Adam lr {LR} (float) then {QAT_LR} (QAT), cosine decay to 0 per phase; "
        f"offset convolutions at {OFFSET_LR}x",
        "loss": "CenterNet focal loss (alpha 2, beta 4) + L1 size + L1 offset",
        "numerics": f"weights {zm.W_BITS}-bit, offset-conv weights {zm.OFFSET_W_BITS}-bit, "
        f"biases {zm.BIAS_BITS}-bit, ReLU outputs {zm.ACT_BITS}-bit unsigned (AP_RND, AP_SAT), "
        f"per-layer power-of-two scales; input {zm.INPUT.ap()}, output {zm.OUTPUT.ap()}",
        "ap50": "decode: 3x3 max-pool peaks, top 10; per-class AP at IoU 0.5, VOC all-points, "
        "mean over the 4 classes",
        "float_ap50": "the float network (torch) before quantization",
        "quantized_ap50": "the exported integer Graph run through accel.reference",
    }


def train(
    epochs: int | None = None,
    n_train: int | None = None,
    seed: int = 0,
    out_dir: Path | None = None,
    progress: bool = True,
    variant: str | None = None,
) -> dict:
    """Train one variant (default square); with ``out_dir`` write its weights and metrics.

    ``epochs`` is the total: the last third (at least one) is QAT, the rest float.
    """
    variant = variant or zm.DEFAULT_VARIANT
    zm.get_variant(variant)
    if epochs is None:
        fe, qe = FLOAT_EPOCHS, QAT_EPOCHS
    else:
        if epochs < 2:
            raise AccelError("deform_det needs at least 2 epochs (float, then QAT)")
        qe = max(1, epochs // 3)
        fe = epochs - qe
    n_train = N_TRAIN if n_train is None else n_train
    if n_train < 1:
        raise AccelError("n_train must be positive")
    row, weights, fracs = train_variant(variant, fe, qe, n_train, seed, progress)
    doc = {"settings": settings(n_train), "rows": [row]}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        zm.save_weights(out_dir / row["file"], zm.get_variant(variant), weights, fracs)
        (out_dir / "metrics.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def train_all(out_dir: Path = zm.WEIGHTS_DIR, seed: int = 0, progress: bool = True) -> dict:
    """Every variant into ``out_dir``: the shipped weights and metrics.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_data, test = training_set(N_TRAIN), test_set()
    rows = []
    for name in ("regular", "bilinear", "square", "square1x1"):
        row, weights, fracs = train_variant(
            name, seed=seed, progress=progress, train_data=train_data, test=test
        )
        zm.save_weights(out_dir / row["file"], zm.get_variant(name), weights, fracs)
        rows.append(row)
        print(
            f"{name}: float AP50 {row['float_ap50']:.4f}, quantized {row['quantized_ap50']:.4f} "
            f"({row['train_seconds']} s)",
            file=sys.stderr,
        )
    doc = {"settings": settings(N_TRAIN), "rows": rows}
    (out_dir / "metrics.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def main(argv: list[str] | None = None) -> None:
    """``python -m accel.training.deform_det``: retrain the shipped weights and metrics.json."""
    from accel.training import retrain_main

    retrain_main("python -m accel.training.deform_det", zm.WEIGHTS_DIR, train_all, argv)


if __name__ == "__main__":
    main()
