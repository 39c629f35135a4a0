"""Quantization-aware training of the ECON-T-style autoencoder (variant 8x8_c8_S2).

Encoder (what goes on the chip, bit-exact with the integer reference): the 48
normalized charges quantized to ap_fixed<10,4,RND,SAT>, arranged in an 8x8x1
image (``geometry.ARRANGE``), Conv2D 3x3x8 stride 2 'same' (TensorFlow padding:
none top/left, one row/column bottom/right), ReLU, ap_ufixed<11,3,RND,SAT>,
flatten (h, w, c), Dense 128->16, ReLU, ap_ufixed<9,1,RND,SAT>. Weights and
biases are ap_fixed<6,2> (trained with RND_CONV, SAT fake quantization). The
forward pass runs in float64, where every product and sum of these short
fixed-point numbers is exact, so it equals the integer arithmetic. The
convolution is a gather of 3x3 patches (zero padding and masked positions read
a constant zero) followed by a matmul, which yields the (h, w, c) layout directly.

Decoder (off-detector, float32): Dense 16->128 ReLU, reshape 8x4x4, ConvTranspose
3x3 stride 2 to 8x8x32 ReLU, Conv 3x3 to 8x8x1, keep the 48 real cells, softmax.
The softmax makes the output a normalized charge map like the input; ECON-T
sends the module sum next to the latent code, so an empty module (sum 0) is
reconstructed as all zeros by gating the output with ``sum > 0``.

Loss ("telescope", after ECON-T's multi-scale MSE): squared differences of the
cell values and of their sums over groups of neighbouring cells at three
coarser scales (``geometry.SCALES``: 36 overlapping 2x2 windows, 12 disjoint
2x2 blocks, the 3 rhombi), each averaged over groups and weighted by
``SCALE_WEIGHTS``. Coarse scales reward putting energy in the right
neighbourhood even when the exact cell is missed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from torch import nn

from accel.errors import AccelError
from accel.fixed import Overflow, Quant, Rounding
from accel.training.qfx import LearnedPoint, khot_option
from accel.training.quant import fake_quant
from accel.training.threads import single_thread
from accel.zoo.autoencoder import geometry
from accel.zoo.autoencoder.data import make_modules
from accel.zoo.autoencoder.model import CONV_OUT, INPUT, LATENT, WEIGHT

# The encoder's types are defined once, with the graph; training only adds how
# float weights are rounded onto WEIGHT_TYPE while learning.
INPUT_QUANT, CONV_OUT_QUANT, LATENT_QUANT, WEIGHT_TYPE = INPUT, CONV_OUT, LATENT, WEIGHT
WEIGHT_QUANT = Quant(WEIGHT_TYPE, Rounding.RND_CONV, Overflow.SAT)
N_FILTERS, N_LATENT = 8, 16
DEC_CHANNELS = 32  # a wider decoder costs nothing on chip and helps quality
WEIGHT_SHAPES = {
    "conv_w": (3, 3, 1, N_FILTERS),
    "conv_b": (N_FILTERS,),
    "dense_w": (16 * N_FILTERS, N_LATENT),
    "dense_b": (N_LATENT,),
}

SCALE_WEIGHTS = {"cells": 4.0, "windows2x2": 2.0, "blocks2x2": 1.0, "rhombi": 1.0}
TEST_SEED = 987_654_321
N_TEST = 10_000
EPOCHS, N_TRAIN, BATCH, LR = 25, 100_000, 512, 1e-2
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "zoo" / "autoencoder" / "weights"


def _patch_index() -> np.ndarray:
    """(16, 9): for each 4x4 output pixel and 3x3 tap, the input cell (48 = zero)."""
    index = np.full((4, 4, 3, 3), geometry.N_CELLS, dtype=np.int64)
    for oh, ow, kh, kw in np.ndindex(index.shape):
        r, c = 2 * oh + kh, 2 * ow + kw  # 'same', stride 2: no top/left padding
        if r < 8 and c < 8 and geometry.ARRANGE[8 * r + c] >= 0:
            index[oh, ow, kh, kw] = geometry.ARRANGE[8 * r + c]
    return index.reshape(16, 9)


PATCH_INDEX = torch.from_numpy(_patch_index())
CELL_POSITION = torch.from_numpy(np.argsort(geometry.ARRANGE)[-geometry.N_CELLS :])
"""(48,) image position of each cell: ARRANGE inverted (the 16 masked -1 sort first)."""


def _he_uniform(*shape: int) -> nn.Parameter:
    bound = float(np.sqrt(6.0 / int(np.prod(shape[:-1]))))
    return nn.Parameter(torch.empty(shape, dtype=torch.float64).uniform_(-bound, bound))


SCHEMES = ("fixed", "learned")


class Encoder(nn.Module):
    """The on-detector encoder; ``quantized=False`` is the float baseline.

    ``points``: ``fixed``, the ECON-T types (weights and biases ap_fixed<6,2>, the
    hidden activation ap_ufixed<11,3>); ``learned``, the same widths with every
    weight's, bias's and the hidden activation's binary point learned (QFX,
    :mod:`accel.training.qfx`). ``k``: weights with at most ``k`` signed
    power-of-two digits (multiplier-free). The input and the latent code keep
    their types: they are the detector's interfaces.
    """

    def __init__(self, quantized: bool = True, points: str = "fixed", k: int | None = None):
        super().__init__()
        if points not in SCHEMES:
            raise AccelError(f"points must be one of {', '.join(SCHEMES)}, got {points!r}")
        self.quantized = quantized
        self.conv_w = _he_uniform(9, N_FILTERS)  # (kh * kw * cin, cout), HWIO flattened
        self.conv_b = nn.Parameter(torch.zeros(N_FILTERS, dtype=torch.float64))
        self.dense_w = _he_uniform(16 * N_FILTERS, N_LATENT)
        self.dense_b = nn.Parameter(torch.zeros(N_LATENT, dtype=torch.float64))
        learn = points == "learned"
        w, a = WEIGHT_TYPE, CONV_OUT_QUANT.type

        def point(t, rounding, k_=None):
            return LearnedPoint(t.width, t.signed, t.frac, rounding, k=k_, learn=learn)

        self.points = nn.ModuleDict(
            {
                "conv_w": point(w, WEIGHT_QUANT.rounding, k),
                "conv_b": point(w, WEIGHT_QUANT.rounding),
                "dense_w": point(w, WEIGHT_QUANT.rounding, k),
                "dense_b": point(w, WEIGHT_QUANT.rounding),
                "conv_act": point(a, CONV_OUT_QUANT.rounding),
            }
        )

    def weights(self) -> dict[str, nn.Parameter]:
        return {k: getattr(self, k) for k in WEIGHT_SHAPES}

    def _caps(self) -> None:
        """A bias cannot have more fraction bits than its accumulator (input + weight)."""
        p = self.points
        p["conv_b"].cap = INPUT_QUANT.type.frac + p["conv_w"].frac
        p["dense_b"].cap = p["conv_act"].frac + p["dense_w"].frac

    def _q(self, name: str, v: torch.Tensor) -> torch.Tensor:
        return self.points[name](v) if self.quantized else v

    def _act(self, x: torch.Tensor, name: str | None) -> torch.Tensor:
        x = F.relu(x)
        if not self.quantized:
            return x
        if name is None:  # the latent code: its fixed interface type
            t = LATENT_QUANT.type
            return fake_quant(x.clamp(max=t.max_int * t.lsb), LATENT_QUANT)
        return self.points[name](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 48) normalized charges -> (n, 16) latent values (real, not raw)."""
        if self.quantized:
            self._caps()
            x = fake_quant(x, INPUT_QUANT)
        patches = F.pad(x, (0, 1))[:, PATCH_INDEX]  # (n, 16, 9), position 48 reads zero
        conv = patches @ self._q("conv_w", self.conv_w) + self._q("conv_b", self.conv_b)
        h = self._act(conv, "conv_act")
        z = h.reshape(len(x), -1) @ self._q("dense_w", self.dense_w)
        return self._act(z + self._q("dense_b", self.dense_b), None)

    def types(self) -> dict[str, dict]:
        """The exported graph's types: weights, biases, the hidden activation's quant."""
        self._caps()
        out = {k: self.points[k].type.to_json() for k in WEIGHT_SHAPES}
        out["conv_act"] = self.points["conv_act"].quant.to_json()
        return out

    def export_int(self) -> dict[str, np.ndarray]:
        """Raw integers of the quantized weights (their types: :meth:`types`), in
        TensorFlow layouts."""
        self._caps()
        return {
            k: self.points[k].raw(p).reshape(WEIGHT_SHAPES[k]) for k, p in self.weights().items()
        }

    @classmethod
    def from_int(cls, weights_int: dict[str, np.ndarray], types: dict | None = None) -> Encoder:
        """A quantized encoder holding exactly the given raw weights (of ``types``, as
        :meth:`types` gives them; default the ECON-T types)."""
        from accel.zoo.autoencoder.model import weight_types

        t = weight_types(types)
        enc = cls(quantized=True)
        for name, p in enc.points.items():
            typ = t[name].type if name == "conv_act" else t[name]
            p.log2_lsb.data.fill_(-float(typ.frac))
            p.rounding = t[name].rounding if name == "conv_act" else p.rounding
        for name, shape in WEIGHT_SHAPES.items():
            w = np.asarray(weights_int.get(name))
            if w.shape != shape or not np.issubdtype(w.dtype, np.integer):
                raise AccelError(f"encoder weight {name} must be integers of shape {shape}")
            if not t[name].contains(w):
                raise AccelError(f"encoder weight {name} is outside {t[name]}")
            value = torch.from_numpy(t[name].to_float(w)).reshape(getattr(enc, name).shape)
            getattr(enc, name).data.copy_(value)
        return enc


class Decoder(nn.Module):
    """Float32 decoder: latent (n, 16) -> normalized charges (n, 48) summing to 1."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(N_LATENT, 128)
        self.up = nn.ConvTranspose2d(8, DEC_CHANNELS, 3, stride=2, padding=1, output_padding=1)
        self.out = nn.Conv2d(DEC_CHANNELS, 1, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # float32 inside (several times faster convolutions on CPU), float64 out.
        h = F.relu(self.dense(z.to(self.dense.weight.dtype))).view(-1, 8, 4, 4)
        h = F.relu(self.up(h))
        logits = self.out(h).flatten(1)[:, CELL_POSITION]
        return torch.softmax(logits, dim=1).to(torch.float64)


def telescope_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Multi-scale MSE (see module docstring), averaged over the batch."""
    diff = pred - true
    total = diff.new_zeros(())
    for name, weight in SCALE_WEIGHTS.items():
        groups = torch.from_numpy(geometry.SCALES[name]).to(diff.dtype)
        total = total + weight * (diff @ groups).square().mean()
    return total


def _sliced_emd(diff: np.ndarray) -> np.ndarray:
    """Per-module 1D earth mover's distance (cm) of a zero-sum ``diff``, mean of 3 axes.

    Projections on the hexagon's three axes: a cheap proxy (lower bound) for 2D EMD.
    """
    out = np.zeros(len(diff))
    for angle in np.deg2rad([0.0, 60.0, 120.0]):
        pos = geometry.CELL_XY @ np.array([np.cos(angle), np.sin(angle)])
        order = np.argsort(pos, kind="stable")
        cdf = np.cumsum(diff[:, order], axis=1)[:, :-1]
        out += np.abs(cdf) @ np.diff(pos[order])
    return out / 3


def quality(x_true: np.ndarray, x_hat: np.ndarray) -> dict[str, float]:
    """Reconstruction quality over the non-empty modules (normalized charges)."""
    keep = x_true.sum(axis=1) > 0
    t, p = x_true[keep], x_hat[keep]
    diff = p - t
    with torch.no_grad():
        tele = telescope_loss(torch.from_numpy(p), torch.from_numpy(t)).item()
    return {
        "energy_weighted_error": float(np.mean(np.abs(diff).sum(1) / t.sum(1))),
        "mse": float(np.mean(diff**2)),
        "telescope_loss": tele,
        "sliced_emd_cm": float(np.mean(_sliced_emd(diff))),
        "n_modules": int(keep.sum()),
    }


def _reconstruct(
    encoder: Encoder, decoder: Decoder, x_norm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Latent values and gated reconstructions, in float64."""
    x = torch.from_numpy(np.asarray(x_norm, dtype=np.float64))
    with torch.no_grad():
        z = encoder(x)
        x_hat = decoder(z) * (x.sum(1, keepdim=True) > 0)
    return z.numpy(), x_hat.numpy()


def encoder_forward_float64(weights_int: dict[str, np.ndarray], x_norm: np.ndarray) -> np.ndarray:
    """Latent raw integers (int64 (n, 16), ap_ufixed<9,1>) from the float64 fake-quant forward."""
    x = torch.from_numpy(np.asarray(x_norm, dtype=np.float64))
    if x.ndim != 2 or x.shape[1] != geometry.N_CELLS:
        raise AccelError(f"encoder input must have shape (n, 48), got {tuple(x.shape)}")
    with torch.no_grad():
        z = Encoder.from_int(weights_int)(x)
    return np.rint(z.numpy() * 2**LATENT_QUANT.type.frac).astype(np.int64)


def evaluate_quantized(
    weights_int: dict[str, np.ndarray],
    decoder: Decoder,
    x_norm: np.ndarray,
    types: dict | None = None,
) -> dict[str, float]:
    """Quality of the integer encoder + float decoder, with latent saturation statistics."""
    z, x_hat = _reconstruct(Encoder.from_int(weights_int, types), decoder, x_norm)
    raw = np.rint(z * 2**LATENT_QUANT.type.frac)
    return {
        **quality(x_norm, x_hat),
        "latent_saturated_fraction": float(np.mean(raw == LATENT_QUANT.type.max_int)),
        "latent_zero_fraction": float(np.mean(raw == 0)),
    }


def load_decoder(path: Path) -> Decoder:
    """A decoder from a ``decoder.npz`` written by :func:`train`."""
    with np.load(path) as f:
        state = {k: torch.from_numpy(f[k]) for k in f.files}
    dec = Decoder()
    dec.load_state_dict(state)
    return dec


def load_weights(weights_dir: Path = WEIGHTS_DIR) -> tuple[dict[str, np.ndarray], Decoder]:
    """The integer encoder weights and the decoder stored in ``weights_dir``."""
    try:
        with np.load(weights_dir / "encoder_int.npz") as f:
            weights_int = {k: f[k] for k in WEIGHT_SHAPES}
        return weights_int, load_decoder(weights_dir / "decoder.npz")
    except FileNotFoundError as e:
        raise AccelError(f"no trained autoencoder weights in {weights_dir}") from e


@contextmanager
def _progress(enabled: bool) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        yield bar


def _fit(
    quantized: bool,
    x: torch.Tensor,
    epochs: int,
    seed: int,
    bar: Progress | None,
    points: str = "fixed",
    k: int | None = None,
) -> tuple[Encoder, Decoder, float]:
    """Train encoder + decoder from a seeded init in a seeded batch order; final loss."""
    torch.manual_seed(seed)
    enc, dec = Encoder(quantized, points, k), Decoder()
    params = [*enc.parameters(), *dec.parameters()]
    steps = epochs * -(-len(x) // BATCH)
    opt = torch.optim.Adam(params, lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    order = torch.Generator().manual_seed(seed)
    name = "QAT  " if quantized else "float"
    task = bar.add_task(name, total=steps) if bar else None
    loss = torch.zeros(())
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=order).split(BATCH):
            loss = telescope_loss(dec(enc(x[idx])), x[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if bar:
                bar.update(task, advance=1, description=f"{name} loss {loss.item():.2e}")
    return enc, dec, loss.item()


def train(
    epochs: int = EPOCHS,
    n_train: int = N_TRAIN,
    seed: int = 0,
    out_dir: Path | None = None,
    progress: bool = True,
    points: str = "fixed",
    khot: int | str | None = None,
    float_baseline: bool = True,
) -> dict:
    """Train the QAT and the float autoencoder; return (and optionally write) the metrics.

    Training modules come from ``make_modules(n_train, seed)`` (empty ones are
    dropped: their gated reconstruction is exact), the held-out set from
    ``make_modules(N_TEST, TEST_SEED)``. Deterministic for a given seed. With
    ``out_dir``, writes ``encoder_int.npz`` (raw int64 weights; with learned points
    also their types), ``decoder.npz`` (float32 state dict of the QAT model's
    decoder) and ``metrics.json``. ``points`` and ``khot``: see :class:`Encoder`.
    """
    k = khot_option(khot, WEIGHT_TYPE.width)
    if points not in SCHEMES:
        raise AccelError(f"--points must be one of {', '.join(SCHEMES)}, got {points!r}")
    if epochs < 1 or n_train < 1:
        raise AccelError("epochs and n_train must be positive")
    if seed == TEST_SEED:
        raise AccelError(f"seed {seed} is the held-out test set's seed")
    start = time.perf_counter()
    x_all = make_modules(n_train, seed)["normalized"]
    x_train = torch.from_numpy(x_all[x_all.sum(1) > 0])
    x_test = make_modules(N_TEST, TEST_SEED)["normalized"]
    with single_thread(), _progress(progress) as bar:
        enc_q, dec_q, loss_q = _fit(True, x_train, epochs, seed, bar, points, k)
        weights_int, types = enc_q.export_int(), enc_q.types()
        quantized = evaluate_quantized(weights_int, dec_q, x_test, types)
        float_, loss_f = None, None
        if float_baseline:
            enc_f, dec_f, loss_f = _fit(False, x_train, epochs, seed, bar)
            float_ = quality(x_test, _reconstruct(enc_f, dec_f, x_test)[1])
    bits_in = geometry.N_CELLS * INPUT_QUANT.type.width
    bits_out = N_LATENT * LATENT_QUANT.type.width
    metrics = {
        "float": None if float_ is None else {**float_, "final_train_loss": loss_f},
        "quantized": {**quantized, "final_train_loss": loss_q},
        "points": points,
        "khot": k,
        "types": types,
        "compression": {"bits_in": bits_in, "bits_out": bits_out, "ratio": bits_in / bits_out},
        "encoder_parameters": sum(int(np.prod(s)) for s in WEIGHT_SHAPES.values()),
        "settings": {
            "epochs": epochs,
            "n_train": n_train,
            "n_train_nonempty": len(x_train),
            "train_seed": seed,
            "n_test": N_TEST,
            "test_seed": TEST_SEED,
            "batch_size": BATCH,
            "optimizer": f"Adam lr {LR}, cosine decay to 0",
            "loss": "telescope: sum over scales of weight * mean over groups of squared "
            "error of group sums (normalized charges)",
            "loss_scale_weights": SCALE_WEIGHTS,
            "loss_scale_groups": {k: v.shape[1] for k, v in geometry.SCALES.items()},
            "metrics_on": "held-out non-empty modules; reconstruction gated by module sum > 0",
        },
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savez(out_dir / "encoder_int.npz", **weights_int, types=np.array(json.dumps(types)))
        np.savez(out_dir / "decoder.npz", **{k: v.numpy() for k, v in dec_q.state_dict().items()})
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
