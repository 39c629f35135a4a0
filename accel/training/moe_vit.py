"""The multi-task MoE ViT in torch: float training, expert selection, QAT, export.

The network is ``accel.zoo.moe_vit.model`` (the same parameter names and
layouts). Training, per variant (``train_variant``):

1. warm-up (MoE only), ``WARM_EPOCHS``: every MoE layer mixes all 4 experts
   with per-task softmax weights of learned gate logits (``gates``, task x
   layer x expert), so each task learns which experts serve it;
2. selection: each task keeps its top-2 experts per MoE layer (the
   task-expert table); from here on a task's MoE output is the plain mean of
   its 2 experts (equal weights, the integer graph's form);
3. float fine-tuning with the hard table, ``FLOAT_EPOCHS`` (the dense
   baseline trains ``WARM_EPOCHS + FLOAT_EPOCHS`` float epochs, as many);
   this network's quality is the "float" number;
4. calibration: per parameter and per activation the power-of-two scale of
   its 8-bit type (16-bit biases and betas) with the least quantization MSE,
   on the float network's weights and on the activations of ``CALIB``
   training images; biases get as many fraction bits as their accumulator
   while twice their magnitude fits;
5. QAT, ``QAT_EPOCHS``: every weight and every requantize point of the graph
   fake-quantized (round half up, saturate; straight-through gradient inside
   the range, zero where it saturates), the attention scores to
   ``ap_fixed<8,4>``, the probabilities to ``ap_ufixed<8,0>``;
6. export to raw integers and the integer graphs (``model.graph``), scored
   with ``accel.reference``.

The attention scores are clamped to ``ap_fixed<8,4>``'s range (-8 ..
127/16) in every phase, as the graph saturates them before the softmax:
trained without the clamp, the float network's logits outgrew the range and
QAT did not recover (held-out loss 0.416 float, 0.457 with the scores
saturated at +-8, 0.425 at +-16; leaving out the weight or the other
activation quantizers moved it by at most 0.003).

The non-linearities in training are float: ``softmax``, LayerNorm (epsilon
1e-5) and GELU in the form ``x * sigmoid(1.702 x)`` that ``gelu_int``
approximates. So the QAT network ("qat_float_nonlinear" in metrics.json) is
the integer graph except for the three integer algorithms; the difference of
the two is the quality cost of the integer softmax, GELU and LayerNorm.

Losses: per-pixel cross-entropy (seg) plus mean squared error (depth), Adam
with cosine decay per phase, batch ``BATCH``, one thread.
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

from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding, quantize
from accel.training.quant import best_frac, bias_frac
from accel.training.threads import single_thread
from accel.zoo.moe_vit import data, evaluate
from accel.zoo.moe_vit import model as zm

N_TRAIN = 4000
WARM_EPOCHS, FLOAT_EPOCHS, QAT_EPOCHS = 8, 36, 8
BATCH, LR, QAT_LR = 64, 2e-3, 5e-4
GATE_LR = 10.0  # gate logits learn this much faster than the weights
CALIB = 256
FRACS = range(-4, 20)  # fraction bits the calibration may choose from
LN_EPS = 1e-5
NORM_FRAC = 8  # layernorm_int's default
N_SUBSET = 16  # held-out images whose integer metrics metrics.json stores exactly
SEG_CLASS_WEIGHTS = (1.0, 2.0, 2.0, 2.0)  # the shapes cover 15 % of the pixels
DEPTH_INIT = 3.5  # the depth head's initial bias, near the mean depth


def fake_quant(x: torch.Tensor, frac: int, bits: int = 8, signed: bool = True) -> torch.Tensor:
    """Saturate to ``bits`` and round half up to ``frac`` fraction bits (AP_RND, AP_SAT).

    The gradient is straight-through inside the range and zero where the value
    saturates (the clamp's own gradient), so training sees what saturation does.
    """
    s = 2.0**frac
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    xc = torch.clamp(x, lo / s, hi / s)
    y = torch.floor(xc * s + 0.5) / s
    return xc + (y - xc).detach()


def saturate(x: torch.Tensor, t: FixedType) -> torch.Tensor:
    """Clamp to the range of ``t`` (no rounding)."""
    return torch.clamp(x, t.min_int * t.lsb, t.max_int * t.lsb)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """The GELU form ``gelu_int`` computes: ``x * sigmoid(1.702 x)``."""
    return x * torch.sigmoid(1.702 * x)


class ViT(nn.Module):
    """The zoo ViT; ``fracs`` set switches on fake quantization, ``table`` the hard routing."""

    def __init__(self, variant: str = "moe", seed: int = 0) -> None:
        super().__init__()
        self.variant = zm.check_variant(variant)
        gen = torch.Generator().manual_seed(seed)
        self.p = nn.ParameterDict()
        for name, shape in zm.param_shapes(variant).items():
            if name.endswith("_g"):
                t = torch.ones(shape)
            elif name.endswith(("_b", "_beta")):
                t = torch.zeros(shape)
            elif name == "pos":
                t = 0.5 * torch.randn(shape, generator=gen)
            else:
                t = torch.randn(shape, generator=gen) / np.sqrt(shape[0])
                if name.endswith(("_proj_w", "_fc2_w")):
                    t = t * 0.5
            if name == "depth_head_b":  # start at the mean depth
                t = torch.full(shape, DEPTH_INIT)
            self.p[name] = nn.Parameter(t)
        n_moe = len(zm.MOE_BLOCKS)
        self.gates = nn.Parameter(0.01 * torch.randn(len(data.TASKS), n_moe, zm.N_EXPERTS,
                                                     generator=gen))  # fmt: skip
        self.fracs: dict[str, int] | None = None
        self.table: dict[str, list[list[int]]] | None = None
        self.record: dict[str, list[torch.Tensor]] | None = None

    # -- quantization helpers --------------------------------------------------------
    def w(self, name: str) -> torch.Tensor:
        t = self.p[name]
        if self.fracs is None:
            return t
        return fake_quant(t, self.fracs[name], zm.param_bits(name))

    def a(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """An activation at a requantize point: recorded (calibration), fake-quantized (QAT)."""
        if self.record is not None:
            self.record.setdefault(name, []).append(x.detach())
        if self.fracs is None:
            return x
        return fake_quant(x, self.fracs[name])

    def dense(self, x: torch.Tensor, p: str) -> torch.Tensor:
        return x @ self.w(f"{p}_w") + self.w(f"{p}_b")

    def ln(self, x: torch.Tensor, p: str) -> torch.Tensor:
        return F.layer_norm(x, (zm.C,), self.w(f"{p}_g"), self.w(f"{p}_beta"), LN_EPS)

    # -- the network ----------------------------------------------------------------
    def embed(self, img: torch.Tensor) -> torch.Tensor:
        n, p, g = len(img), zm.PATCH, data.SIZE // zm.PATCH
        x = img
        if self.fracs is not None:
            x = fake_quant(x, zm.INPUT.type.frac, 8, signed=False)
        x = x.reshape(n, g, p, g, p).permute(0, 1, 3, 2, 4).reshape(n, zm.T, zm.P_IN)
        x = self.a(self.dense(x, "embed"), "embed")
        return self.a(x + self.w("pos"), "x0")

    def attention(self, x: torch.Tensor, i: int) -> torch.Tensor:
        p = f"b{i}"
        n = self.a(self.ln(x, f"{p}_ln1"), f"{p}_ln1")
        heads = []
        for h in range(zm.HEADS):
            q = self.a(self.dense(n, f"{p}_q{h}"), f"{p}_q") * 2.0**-zm.Q_FOLD
            k = self.a(self.dense(n, f"{p}_k{h}"), f"{p}_k")
            v = self.a(self.dense(n, f"{p}_v{h}"), f"{p}_v")
            # The scores saturate to SCORE's range in float training too, as in the graph.
            s = saturate(q @ k.transpose(-1, -2), zm.SCORE.type)
            if self.fracs is not None:
                s = fake_quant(s, zm.SCORE.type.frac)
            a = torch.softmax(s, dim=-1)
            if self.fracs is not None:
                a = fake_quant(a, zm.PROBS.frac, 8, signed=False)
            heads.append(self.a(a @ v, f"{p}_o"))
        o = self.a(self.dense(torch.cat(heads, -1), f"{p}_proj"), f"{p}_proj")
        return self.a(x + o, f"{p}_res1")

    def mlp(self, n: torch.Tensor, p: str, b: str) -> torch.Tensor:
        h = self.a(self.dense(n, f"{p}_fc1"), f"{b}_h")
        g = self.a(gelu(h), f"{b}_g")
        return self.a(self.dense(g, f"{p}_fc2"), f"{b}_mlp")

    def ffn(self, x: torch.Tensor, i: int, task: str | None) -> torch.Tensor:
        p = f"b{i}"
        n = self.a(self.ln(x, f"{p}_ln2"), f"{p}_ln2")
        if self.variant == "moe" and i in zm.MOE_BLOCKS:
            layer = zm.MOE_BLOCKS.index(i)
            if self.table is None:  # warm-up: softmax mixture of all experts
                wts = torch.softmax(self.gates[data.TASKS.index(task), layer], 0)
                y = sum(wts[e] * self.mlp(n, f"{p}_e{e}", p) for e in range(zm.N_EXPERTS))
            else:
                chosen = self.table[task][layer]
                y = sum(self.mlp(n, f"{p}_e{e}", p) for e in chosen) / len(chosen)
                y = self.a(y, f"{p}_moe")
        else:
            y = self.mlp(n, p, p)
        return self.a(x + y, f"{p}_res2")

    def head(self, x: torch.Tensor, task: str) -> torch.Tensor:
        n = self.a(self.ln(x, f"{task}_ln"), f"{task}_ln")
        y = self.dense(n, f"{task}_head")
        if self.fracs is not None:
            y = fake_quant(y, zm.OUTPUT.type.frac, zm.OUTPUT.type.width)
        return y

    def forward(self, img: torch.Tensor, tasks=data.TASKS) -> dict[str, torch.Tensor]:
        """Images (N, 32, 32) -> per task the head output (N, 64, 64 or 16)."""
        x = self.embed(img)
        # Blocks before the first MoE layer are shared by the tasks.
        first = zm.MOE_BLOCKS[0] if self.variant == "moe" else zm.N_BLOCKS
        for i in range(first):
            x = self.ffn(self.attention(x, i), i, None)
        out = {}
        for task in tasks:
            y = x
            for i in range(first, zm.N_BLOCKS):
                y = self.ffn(self.attention(y, i), i, task)
            out[task] = self.head(y, task)
        return out

    # -- selection, calibration, export -------------------------------------------
    def select(self) -> dict[str, list[list[int]]]:
        """Each task's top-k experts per MoE layer (by gate logit; ties: lower id)."""
        g = self.gates.detach().numpy()
        table = {
            task: [
                sorted(int(e) for e in np.argsort(-g[t, layer], kind="stable")[: zm.TOP_K])
                for layer in range(len(zm.MOE_BLOCKS))
            ]
            for t, task in enumerate(data.TASKS)
        }
        self.table = zm.check_table(table)
        return self.table

    def calibrate(self, img: torch.Tensor) -> dict[str, int]:
        self.fracs, self.record = None, {}
        with torch.no_grad():
            self(img)
        rec, self.record = self.record, None
        fracs: dict[str, int] = {}
        for name in zm.act_names(self.variant):
            fracs[name] = best_frac(
                torch.cat([r.reshape(-1) for r in rec[name]]), 8, FRACS, max_values=200_000
            )
        inputs = {"embed": zm.INPUT.type.frac}
        for name in self.p:
            if name.endswith("_w") or name.endswith("_g") or name == "pos":
                fracs[name] = best_frac(self.p[name], 8, FRACS, max_values=200_000)
        for name in self.p:
            if name.endswith("_b"):
                prefix = name[:-2]
                x_frac = inputs[prefix] if prefix in inputs else fracs[_dense_input(prefix)]
                fracs[name] = bias_frac(self.p[name], x_frac + fracs[f"{prefix}_w"], zm.B_BITS)
            elif name.endswith("_beta"):
                fracs[name] = bias_frac(
                    self.p[name], NORM_FRAC + fracs[f"{name[:-5]}_g"], zm.B_BITS
                )
        self.fracs = fracs
        return fracs

    def export_int(self) -> dict[str, np.ndarray]:
        if self.fracs is None:
            raise AccelError("calibrate the ViT before exporting it")
        out = {}
        for name, t in self.p.items():
            q = Quant(FixedType(zm.param_bits(name), self.fracs[name]), Rounding.RND, Overflow.SAT)
            out[name] = quantize(t.detach().double().numpy(), q)
        return out

    def graph(self, task: str, all_experts: bool = False):
        table = self.table or {t: [[0, 1]] * len(zm.MOE_BLOCKS) for t in data.TASKS}
        return zm.graph(self.variant, self.export_int(), self.fracs, table, task, all_experts)


def _dense_input(prefix: str) -> str:
    """The activation feeding dense ``prefix`` (``b1_e2_fc2`` -> ``b1_g``)."""
    parts = prefix.split("_")
    kind, block = parts[-1], parts[0]
    if block in data.TASKS:
        return f"{block}_ln"
    if kind[0] in "qkv":
        return f"{block}_ln1"
    return {"proj": f"{block}_o", "fc1": f"{block}_ln2", "fc2": f"{block}_g"}[kind]


# -- loss, data, evaluation ---------------------------------------------------------


def loss_fn(out: dict[str, torch.Tensor], seg: torch.Tensor, depth: torch.Tensor):
    n = len(seg)
    logits = out["seg"].reshape(n, zm.T, zm.P_IN, data.N_CLASSES)
    weight = torch.tensor(SEG_CLASS_WEIGHTS)
    l_seg = F.cross_entropy(logits.reshape(-1, data.N_CLASSES), seg.reshape(-1), weight=weight)
    l_depth = F.mse_loss(out["depth"], depth)
    return l_seg + l_depth


def _tokens(a: np.ndarray) -> np.ndarray:
    """Per-pixel targets (N, 32, 32) -> (N, 64 tokens, 16 pixels) in the heads' order."""
    n, p, g = len(a), zm.PATCH, data.SIZE // zm.PATCH
    return a.reshape(n, g, p, g, p).transpose(0, 1, 3, 2, 4).reshape(n, zm.T, zm.P_IN)


def tensors(d: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    img = torch.from_numpy(d["images"][..., 0]).float()
    seg = torch.from_numpy(_tokens(d["seg"]))
    depth = torch.from_numpy(_tokens(d["depth"])).float()
    return img, seg, depth


def torch_metrics(net: ViT, d: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per task metrics of the torch net (float or fake-quantized) on the scenes ``d``."""
    img = torch.from_numpy(d["images"][..., 0]).float()
    outs: dict[str, list] = {t: [] for t in data.TASKS}
    with torch.no_grad():
        for chunk in img.split(100):
            for t, y in net(chunk).items():
                outs[t].append(y.double().numpy())
    return {t: evaluate.task_metrics(t, np.concatenate(outs[t]), d) for t in data.TASKS}


def _epochs(net, train, epochs, lr, seed, tag, progress):
    img, seg, depth = train
    steps = epochs * -(-len(img) // BATCH)
    groups = [{"params": list(net.p.values())}]
    if net.variant == "moe" and net.table is None:
        groups.append({"params": [net.gates], "lr": lr * GATE_LR})
    opt = torch.optim.Adam(groups, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    order = torch.Generator().manual_seed(seed)
    mean = 0.0
    for epoch in range(epochs):
        total, count = 0.0, 0
        for idx in torch.randperm(len(img), generator=order).split(BATCH):
            loss = loss_fn(net(img[idx]), seg[idx], depth[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
        mean = total / max(count, 1)
        if progress:
            print(f"  {tag} epoch {epoch + 1}/{epochs} loss {mean:.4f}", file=sys.stderr)
    return mean


def _round(m: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else [round(x, 4) for x in v]
            for k, v in m.items()}  # fmt: skip


def train_variant(
    variant: str,
    warm_epochs: int = WARM_EPOCHS,
    float_epochs: int = FLOAT_EPOCHS,
    qat_epochs: int = QAT_EPOCHS,
    n_train: int = N_TRAIN,
    seed: int = 0,
    progress: bool = False,
    train_data: dict | None = None,
    test: dict | None = None,
):
    """(metrics row, raw weights, fracs, table) of one variant: ``moe`` or ``dense``."""
    zm.check_variant(variant)
    start = time.perf_counter()
    d = train_data if train_data is not None else data.training_set(n_train)
    test = test if test is not None else data.test_set()
    train = tensors(d)
    with single_thread():
        torch.manual_seed(seed)
        net = ViT(variant, seed)
        if variant == "moe":
            _epochs(net, train, warm_epochs, LR, seed, f"{variant} warm-up", progress)
            table = net.select()
            if progress:
                print(f"  task-expert table {table}", file=sys.stderr)
            fe = float_epochs
        else:
            table, fe = {}, warm_epochs + float_epochs
        float_loss = _epochs(net, train, fe, LR, seed + 1, f"{variant} float", progress)
        float_m = torch_metrics(net, test)
        fracs = net.calibrate(train[0][:CALIB])
        qat_loss = _epochs(net, train, qat_epochs, QAT_LR, seed + 2, f"{variant} QAT", progress)
        qat_m = torch_metrics(net, test)
        weights = net.export_int()
    train_seconds = time.perf_counter() - start
    row = {"variant": variant, "file": f"{variant}.npz", "table": table or None, "tasks": {}}
    subset = {k: v[:N_SUBSET] for k, v in test.items()}
    for task in data.TASKS:
        g = zm.graph(variant, weights, fracs, table or None, task)
        int_m = evaluate.graph_metrics(g, task, test)
        row["tasks"][task] = {
            "float": _round(float_m[task]),
            "qat_float_nonlinear": _round(qat_m[task]),
            "integer": _round(int_m),
            "integer_subset": evaluate.graph_metrics(g, task, subset),
            "macs": graph_macs(g),
        }
        if progress:
            print(f"  {variant} {task}: {row['tasks'][task]}", file=sys.stderr)
    row.update(
        final_float_loss=round(float_loss, 4),
        final_qat_loss=round(qat_loss, 4),
        warm_epochs=warm_epochs if variant == "moe" else 0,
        float_epochs=fe,
        qat_epochs=qat_epochs,
        n_train=len(train[0]),
        seed=seed,
        parameters=int(sum(v.size for v in weights.values())),
        train_seconds=round(train_seconds, 1),
    )
    return row, weights, fracs, table


def graph_macs(g) -> int:
    """Multiply-accumulates of one image through the graph (dense and matmul nodes)."""
    total = 0
    for n in g.nodes:
        if n.op == "dense":
            out = g.tensors[n.outputs[0]]
            total += int(np.prod(out.shape)) * n.params["weight"].data.shape[0]
        elif n.op == "matmul":
            a = g.tensors[n.inputs[0]]
            out = g.tensors[n.outputs[0]]
            total += int(np.prod(out.shape)) * a.shape[-1]
    return total


def settings(n_train: int) -> dict:
    return {
        "data": f"accel.zoo.moe_vit.data: {n_train} training scenes (seed {data.TRAIN_SEED}), "
        f"{data.N_TEST} held-out scenes (seed {data.TEST_SEED})",
        "tasks": list(data.TASKS),
        "classes": list(data.CLASSES),
        "batch_size": BATCH,
        "optimizer": f"Adam lr {LR} (gates x{GATE_LR}) then {QAT_LR} (QAT), cosine decay per phase",
        "loss": "per-pixel cross-entropy (seg) + mean squared error (depth)",
        "numerics": "8-bit weights, gammas and positional embedding; 16-bit biases and betas; "
        "every activation 8-bit signed (AP_RND, AP_SAT), per-tensor power-of-two scales; "
        f"scores {zm.SCORE.ap()}, probabilities {zm.PROBS.ap()}; input {zm.INPUT.ap()}, "
        f"output {zm.OUTPUT.ap()}",
        "float": "the float torch network (after the float phase), before quantization",
        "qat_float_nonlinear": "the QAT torch network: everything fake-quantized as in the "
        "integer graph, but float softmax, LayerNorm and x*sigmoid(1.702x) GELU",
        "integer": "the exported integer graph run through accel.reference (softmax_int, "
        "gelu_int, layernorm_int)",
        "integer_subset": f"the integer graph on the first {N_SUBSET} held-out scenes, "
        "unrounded (the tests recompute it exactly)",
        "macs": "multiply-accumulates per image of the task's graph (dense + matmul nodes)",
    }


def _write(out_dir: Path, rows, saved, n_train: int) -> dict:
    doc = {"settings": settings(n_train), "rows": rows}
    for variant, (weights, fracs, table) in saved.items():
        zm.save_weights(out_dir / f"{variant}.npz", variant, weights, fracs, table)
    (out_dir / "metrics.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def train(
    epochs: int | None = None,
    n_train: int | None = None,
    seed: int = 0,
    out_dir: Path | None = None,
    progress: bool = True,
    variant: str | None = None,
    n_test: int = data.N_TEST,
) -> dict:
    """Train the MoE ViT (or ``variant="dense"``, the baseline); with ``out_dir`` write
    its weights and metrics. ``epochs`` is the total: a quarter (at least one) each for
    warm-up and QAT, the rest float."""
    variant = zm.check_variant(variant or "moe")
    if epochs is None:
        we, fe, qe = WARM_EPOCHS, FLOAT_EPOCHS, QAT_EPOCHS
    else:
        if epochs < 3:
            raise AccelError("moe_vit needs at least 3 epochs (warm-up, float, QAT)")
        we = qe = max(1, epochs // 4)
        fe = epochs - we - qe
    n_train = N_TRAIN if n_train is None else n_train
    if n_train < 1:
        raise AccelError("n_train must be positive")
    test = data.test_set(n_test)
    row, weights, fracs, table = train_variant(
        variant, we, fe, qe, n_train, seed, progress, test=test
    )
    if out_dir is None:
        return {"settings": settings(n_train), "rows": [row]}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return _write(out_dir, [row], {variant: (weights, fracs, table)}, n_train)


def train_all(out_dir: Path = zm.WEIGHTS_DIR, seed: int = 0, progress: bool = True) -> dict:
    """Both variants into ``out_dir``: the shipped weights and metrics.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_data, test = data.training_set(N_TRAIN), data.test_set()
    rows, saved = [], {}
    for variant in zm.VARIANTS:
        row, weights, fracs, table = train_variant(
            variant, seed=seed, progress=progress, train_data=train_data, test=test
        )
        rows.append(row)
        saved[variant] = (weights, fracs, table)
        print(f"{variant}: {row['tasks']} ({row['train_seconds']} s)", file=sys.stderr)
    return _write(out_dir, rows, saved, N_TRAIN)


def main(argv: list[str] | None = None) -> None:
    """``python -m accel.training.moe_vit``: retrain the shipped weights and metrics.json."""
    from accel.training import retrain_main

    retrain_main("python -m accel.training.moe_vit", zm.WEIGHTS_DIR, train_all, argv)


if __name__ == "__main__":
    main()
