"""The multi-task MoE ViT as integer accel Graphs: one static graph per task.

Architecture (``variant="moe"``): a 32x32x1 image (``ap_ufixed<8,0,AP_RND,AP_SAT>``)
-> ``patchify`` 4x4 -> T = 64 tokens of 16 pixels -> ``dense`` 16 -> C = 32 ->
``add_const`` positional embedding -> 4 pre-norm encoder blocks
(``x + Attn(LN(x))``, ``x + MLP(LN(x))``; 2 heads of d_h = 16) -> per task a
head: LN, then a per-token ``dense`` C -> 64 (``seg``: 4 class logits for each
of the patch's 4x4 pixels, in (py, px, class) order) or C -> 16 (``depth``:
one value per pixel, (py, px) order), output ``ap_fixed<16,8,AP_RND,AP_SAT>``.

Blocks 0 and 2 have a dense MLP (hidden ``HIDDEN`` = 64); blocks 1 and 3 a
mixture of ``N_EXPERTS`` = 4 experts (each an MLP of hidden 64) of which a
task uses ``TOP_K`` = 2: the MoE output is ``(1/2) (E_a(x) + E_b(x))``.

Routing is per **task**, not per token (as in M3ViT's token-level gates):
each task has learned gate logits per MoE layer over the experts, and its
top-k experts form the task-expert table (``table()``: task -> per MoE layer
the expert ids). Every token of a task goes through the same k experts, so a
task's pathway is static and its graph (``build(task)``) holds only the
experts it uses, with equal weights 1/k: the 1/2 is folded into the type of
the experts' second dense weights (one more fraction bit, raw integers
unchanged) and of the expert outputs, so the integer graph is exact with no
multiply. ``build(task, all_experts=True)`` runs every expert of each MoE
layer (1/4 folded the same way, two fraction bits): a graph for cost
comparisons only (its routing is not what was trained).

The dense baseline (``variant="dense"``) is the same ViT with dense MLPs of
hidden 128 (= k x 64, similar per-task compute) in blocks 1 and 3, shared by
the tasks; only the heads differ per task.

Numerics: all weights 8-bit signed, biases 16-bit, LayerNorm gamma 8-bit and
beta 16-bit, the positional embedding 8-bit; every activation is requantized
``AP_RND, AP_SAT`` to 8-bit signed with a per-tensor power-of-two scale (its
fraction bits, chosen by the trainer, ``fracs`` in the weights file). The
IR derives every accumulator. Integer non-linearities: ``layernorm_int``
(defaults), ``gelu_int`` (``sig_bits`` 8), ``softmax_int`` over each score
row (output ``ap_ufixed<8,0>``). Attention scores: 1/sqrt(16) = 1/4 is
folded into the type of q (two more fraction bits, raw unchanged), the
``matmul`` of q and k is requantized to ``SCORE`` = ``ap_fixed<8,4>`` before
the softmax.

Node order per block: ``layernorm_int``, requantize; per head: q, k, v
(``dense`` + requantize each), ``matmul`` q k^T, requantize, ``softmax_int``,
``matmul`` p v, requantize; ``concat`` of the heads, ``dense`` proj,
requantize, ``add`` residual, requantize; ``layernorm_int``, requantize;
MLP (``dense``, requantize, ``gelu_int``, requantize, ``dense``,
requantize; for MoE one such chain per selected expert, then ``add`` of the
expert outputs, requantize), ``add`` residual, requantize.

A weights file (``weights/{moe,dense}.npz``) holds raw integers by parameter
name (``embed_w``, ``b1_e2_fc1_w``, ``seg_head_b``, ...; dense weights in
(in, out) layout), the JSON strings ``fracs`` (fraction bits of every
parameter and activation) and ``table``, and the string ``variant``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.ir import Graph, Param
from accel.zoo.moe_vit.data import N_CLASSES, SIZE, TASKS

INPUT = Quant(FixedType(8, 8, signed=False), Rounding.RND, Overflow.SAT)
OUTPUT = Quant(FixedType(16, 8), Rounding.RND, Overflow.SAT)
SCORE = Quant(FixedType(8, 4), Rounding.RND, Overflow.SAT)
PROBS = FixedType(8, 8, signed=False)
W_BITS, B_BITS, ACT_BITS = 8, 16, 8
PATCH = 4
T = (SIZE // PATCH) ** 2  # 64 tokens
P_IN = PATCH * PATCH  # 16 pixels per token
C = 32
N_BLOCKS = 4
HEADS, D_HEAD = 2, 16
HIDDEN = 64
MOE_BLOCKS = (1, 3)
N_EXPERTS, TOP_K = 4, 2
DENSE_HIDDEN = {0: HIDDEN, 2: HIDDEN, 1: TOP_K * HIDDEN, 3: TOP_K * HIDDEN}  # the baseline
HEAD_OUT = {"seg": P_IN * N_CLASSES, "depth": P_IN}
Q_FOLD = 2  # 1/sqrt(D_HEAD) = 2**-2
VARIANTS = ("moe", "dense")
WEIGHTS_DIR = Path(__file__).parent / "weights"


def tasks() -> list[str]:
    """The task names, in order."""
    return list(TASKS)


def check_task(task: str) -> str:
    if task not in TASKS:
        raise AccelError(f"moe_vit has no task {task!r} (tasks: {', '.join(TASKS)})")
    return task


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise AccelError(f"moe_vit has no variant {variant!r} (choose from {', '.join(VARIANTS)})")
    return variant


def check_table(table: dict) -> dict[str, list[list[int]]]:
    """A task-expert table: per task, per MoE layer, TOP_K distinct expert ids < N_EXPERTS."""
    if not isinstance(table, dict):
        raise AccelError(f"task-expert table must map tasks to expert lists, got {table!r}")
    out = {}
    for task in TASKS:
        if task not in table:
            raise AccelError(f"task-expert table has no entry for task {task!r}")
    for task, layers in table.items():
        check_task(task)
        if not isinstance(layers, list | tuple) or len(layers) != len(MOE_BLOCKS):
            raise AccelError(
                f"task-expert table: task {task!r} needs one expert list per MoE layer "
                f"({len(MOE_BLOCKS)}), got {layers!r}"
            )
        rows = []
        for layer, experts in zip(MOE_BLOCKS, layers, strict=True):
            where = f"task-expert table: task {task!r}, MoE block {layer}"
            if not isinstance(experts, list | tuple) or len(experts) != TOP_K:
                raise AccelError(f"{where}: needs {TOP_K} experts, got {experts!r}")
            for e in experts:
                if isinstance(e, bool) or not isinstance(e, int | np.integer):
                    raise AccelError(f"{where}: expert id {e!r} is not an integer")
                if not 0 <= e < N_EXPERTS:
                    raise AccelError(
                        f"{where}: expert {e} does not exist (experts 0..{N_EXPERTS - 1})"
                    )
            if len(set(experts)) != len(experts):
                raise AccelError(f"{where}: expert {experts[0]} is listed twice")
            rows.append([int(e) for e in experts])
        out[task] = rows
    return out


def check_images(x: np.ndarray) -> np.ndarray:
    """A batch of images (N, 32, 32, 1); a one-line error naming a wrong shape."""
    x = np.asarray(x)
    if x.ndim == 3:  # (N, 32, 32): add the channel axis
        x = x[..., np.newaxis]
    if x.ndim != 4 or x.shape[1:] != (SIZE, SIZE, 1):
        raise AccelError(
            f"moe_vit: input images of shape {x.shape[1:] if x.ndim else x.shape}, "
            f"expected ({SIZE}, {SIZE}, 1) per image"
        )
    return x


def act(frac: int) -> Quant:
    return Quant(FixedType(ACT_BITS, int(frac)), Rounding.RND, Overflow.SAT)


def param_bits(name: str) -> int:
    """8 bits for weights, gammas and the positional embedding, 16 for biases and betas."""
    return B_BITS if name.endswith(("_b", "_beta")) else W_BITS


def mlp_experts(variant: str, block: int) -> list[str]:
    """The MLP parameter prefixes of a block: ``b1_e0`` .. (MoE) or ``b1`` (dense)."""
    if variant == "moe" and block in MOE_BLOCKS:
        return [f"b{block}_e{e}" for e in range(N_EXPERTS)]
    return [f"b{block}"]


def mlp_hidden(variant: str, block: int) -> int:
    return HIDDEN if variant == "moe" else DENSE_HIDDEN[block]


def param_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape (weights as (in, out))."""
    s: dict[str, tuple[int, ...]] = {"embed_w": (P_IN, C), "embed_b": (C,), "pos": (T, C)}
    for i in range(N_BLOCKS):
        s[f"b{i}_ln1_g"], s[f"b{i}_ln1_beta"] = (C,), (C,)
        for h in range(HEADS):
            for m in "qkv":
                s[f"b{i}_{m}{h}_w"], s[f"b{i}_{m}{h}_b"] = (C, D_HEAD), (D_HEAD,)
        s[f"b{i}_proj_w"], s[f"b{i}_proj_b"] = (C, C), (C,)
        s[f"b{i}_ln2_g"], s[f"b{i}_ln2_beta"] = (C,), (C,)
        hid = mlp_hidden(variant, i)
        for p in mlp_experts(variant, i):
            s[f"{p}_fc1_w"], s[f"{p}_fc1_b"] = (C, hid), (hid,)
            s[f"{p}_fc2_w"], s[f"{p}_fc2_b"] = (hid, C), (C,)
    for task in TASKS:
        s[f"{task}_ln_g"], s[f"{task}_ln_beta"] = (C,), (C,)
        s[f"{task}_head_w"], s[f"{task}_head_b"] = (C, HEAD_OUT[task]), (HEAD_OUT[task],)
    return s


def act_names(variant: str) -> list[str]:
    """Every requantized activation whose fraction bits the trainer chooses."""
    names = ["embed", "x0"]
    for i in range(N_BLOCKS):
        names += [f"b{i}_{a}" for a in ("ln1", "q", "k", "v", "o", "proj", "res1", "ln2")]
        names += [f"b{i}_{a}" for a in ("h", "g", "mlp")]
        if variant == "moe" and i in MOE_BLOCKS:
            names.append(f"b{i}_moe")
        names.append(f"b{i}_res2")
    names += [f"{task}_ln" for task in TASKS]
    return names


class _Builder:
    def __init__(self, g: Graph, weights: dict[str, np.ndarray], fracs: dict[str, int]):
        self.g, self.w, self.f = g, weights, fracs

    def param(self, name: str, extra_frac: int = 0) -> Param:
        try:
            raw, frac = self.w[name], self.f[name]
        except KeyError:
            raise AccelError(f"moe_vit weights: parameter {name!r} is missing") from None
        t = FixedType(param_bits(name), int(frac) + extra_frac)
        try:
            return Param(np.asarray(raw), t)
        except AccelError:
            raise AccelError(f"moe_vit weights: {name} does not fit {t}") from None

    def rq(self, x: str, name: str, act_name: str, extra_frac: int = 0) -> str:
        return self.g.add("requantize", x, name=name, quant=act(self.f[act_name] + extra_frac))

    def dense(self, x: str, p: str, name: str, extra_frac: int = 0) -> str:
        params = {
            "weight": self.param(f"{p}_w", extra_frac),
            "bias": self.param(f"{p}_b", extra_frac),
        }
        return self.g.add("dense", x, name=name, params=params)

    def layernorm(self, x: str, p: str, name: str) -> str:
        params = {"gamma": self.param(f"{p}_g"), "beta": self.param(f"{p}_beta")}
        return self.g.add("layernorm_int", x, name=name, params=params)

    def mlp(self, x: str, p: str, b: str, name: str, fold: int) -> str:
        h = self.rq(self.dense(x, f"{p}_fc1", f"{name}_fc1"), f"{name}_fc1_q", f"{b}_h")
        a = self.g.add("gelu_int", h, name=f"{name}_gelu", sig_bits=8)
        a = self.rq(a, f"{name}_gelu_q", f"{b}_g")
        y = self.dense(a, f"{p}_fc2", f"{name}_fc2", fold)
        return self.rq(y, f"{name}_fc2_q", f"{b}_mlp", fold)


def graph(
    variant: str,
    weights: dict[str, np.ndarray],
    fracs: dict[str, int],
    table: dict,
    task: str = "seg",
    all_experts: bool = False,
) -> Graph:
    """The integer graph of ``task``'s static pathway, from raw weights and fractions."""
    check_variant(variant)
    check_task(task)
    table = check_table(table) if variant == "moe" else {}
    shapes = param_shapes(variant)
    for name, shape in shapes.items():
        if name in weights and np.shape(weights[name]) != shape:
            raise AccelError(
                f"moe_vit weights: {name} has shape {np.shape(weights[name])}, not {shape}"
            )
    for name in act_names(variant):
        if name not in fracs:
            raise AccelError(f"moe_vit weights: fraction bits of activation {name!r} missing")
    suffix = "_all" if all_experts else ""
    g = Graph(f"moe_vit_{variant}_{task}{suffix}")
    g.meta = {
        "family": "mixture-of-experts ViT",
        "after": "M3ViT / Edge-MoE / I-ViT (task-level routing, integer-only inference)",
        "variant": variant,
        "task": task,
        "input": "32x32 grey image, pixel in [0, 1)",
        "output": "seg: (64 tokens, 4x4 pixels x 4 class logits)"
        if task == "seg"
        else "depth: (64 tokens, 4x4 pixel depths)",
    }
    if variant == "moe":
        g.meta["experts"] = (
            [list(range(N_EXPERTS))] * len(MOE_BLOCKS) if all_experts else table[task]
        )
        g.meta["all_experts"] = all_experts
    b = _Builder(g, weights, fracs)
    x = g.add_input("image", (SIZE, SIZE, 1), INPUT)
    x = g.add("patchify", x, name="patchify", patch=PATCH)
    x = b.rq(b.dense(x, "embed", "embed"), "embed_q", "embed")
    x = g.add("add_const", x, name="pos", params={"value": b.param("pos")})
    x = b.rq(x, "pos_q", "x0")
    for i in range(N_BLOCKS):
        p = f"b{i}"
        n = b.rq(b.layernorm(x, f"{p}_ln1", f"{p}_ln1"), f"{p}_ln1_q", f"{p}_ln1")
        heads = []
        for h in range(HEADS):
            q = b.rq(b.dense(n, f"{p}_q{h}", f"{p}_q{h}", Q_FOLD), f"{p}_q{h}_q", f"{p}_q", Q_FOLD)
            k = b.rq(b.dense(n, f"{p}_k{h}", f"{p}_k{h}"), f"{p}_k{h}_q", f"{p}_k")
            v = b.rq(b.dense(n, f"{p}_v{h}", f"{p}_v{h}"), f"{p}_v{h}_q", f"{p}_v")
            s = g.add("matmul", [q, k], name=f"{p}_s{h}", transpose_b=True)
            s = g.add("requantize", s, name=f"{p}_s{h}_q", quant=SCORE)
            a = g.add("softmax_int", s, name=f"{p}_p{h}", axis=-1, out=PROBS)
            o = g.add("matmul", [a, v], name=f"{p}_o{h}")
            heads.append(b.rq(o, f"{p}_o{h}_q", f"{p}_o"))
        o = g.add("concat", heads, name=f"{p}_heads")
        o = b.rq(b.dense(o, f"{p}_proj", f"{p}_proj"), f"{p}_proj_q", f"{p}_proj")
        x = b.rq(g.add("add", [x, o], name=f"{p}_res1"), f"{p}_res1_q", f"{p}_res1")
        n = b.rq(b.layernorm(x, f"{p}_ln2", f"{p}_ln2"), f"{p}_ln2_q", f"{p}_ln2")
        if variant == "moe" and i in MOE_BLOCKS:
            chosen = range(N_EXPERTS) if all_experts else table[task][MOE_BLOCKS.index(i)]
            fold = (len(chosen) - 1).bit_length()  # 1/k as fraction bits (k = 2 or 4)
            outs = [b.mlp(n, f"{p}_e{e}", p, f"{p}_e{e}", fold) for e in chosen]
            y = outs[0]
            for j, e in enumerate(outs[1:], start=1):
                y = g.add("add", [y, e], name=f"{p}_moe{j}" if j > 1 else f"{p}_moe")
                y = b.rq(y, f"{y}_q", f"{p}_moe")
        else:
            y = b.mlp(n, p, p, f"{p}_mlp", 0)
        x = b.rq(g.add("add", [x, y], name=f"{p}_res2"), f"{p}_res2_q", f"{p}_res2")
    n = b.rq(b.layernorm(x, f"{task}_ln", f"{task}_ln"), f"{task}_ln_q", f"{task}_ln")
    y = b.dense(n, f"{task}_head", f"{task}_head")
    y = g.add("requantize", y, name="out", quant=OUTPUT)
    g.mark_output(y)
    return g


# -- weights files ----------------------------------------------------------------------


def save_weights(
    path: Path, variant: str, weights: dict[str, np.ndarray], fracs: dict, table: dict
) -> None:
    """Raw weights as int8 (biases, betas int16), compressed, with fracs, table and variant."""
    arrays = {}
    for k, v in weights.items():
        arr = np.asarray(v).astype(np.int16 if param_bits(k) == B_BITS else np.int8)
        if not np.array_equal(arr, v):
            raise AccelError(f"weight {k} does not fit its storage type")
        arrays[k] = arr
    np.savez_compressed(
        path,
        **arrays,
        fracs=np.array(json.dumps(fracs, sort_keys=True)),
        table=np.array(json.dumps(table, sort_keys=True)),
        variant=np.array(variant),
    )


def load_weights(path: Path) -> tuple[str, dict[str, np.ndarray], dict, dict]:
    """(variant, raw int64 weights, fracs, table) from a file written by ``save_weights``."""
    path = Path(path)
    if not path.is_file():
        raise AccelError(f"moe_vit weights {path} not found; run 'accel train moe_vit'")
    try:
        with np.load(path, allow_pickle=False) as f:
            variant = str(f["variant"])
            fracs = json.loads(str(f["fracs"]))
            table = json.loads(str(f["table"]))
            weights = {
                k: f[k].astype(np.int64) for k in f.files if k not in ("fracs", "table", "variant")
            }
    except (KeyError, ValueError, OSError) as e:
        raise AccelError(f"{path} is not a moe_vit weights file ({e})") from None
    return variant, weights, fracs, table


def available() -> list[str]:
    """The shipped variants (weights files)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.npz"))


def _weights_path(variant: str, weights_path: Path | None) -> Path:
    if weights_path is not None:
        return Path(weights_path)
    check_variant(variant)
    path = WEIGHTS_DIR / f"{variant}.npz"
    if not path.is_file():
        raise AccelError(f"no shipped moe_vit {variant} weights; run 'accel train moe_vit'")
    return path


def table(variant: str = "moe", weights_path: Path | None = None) -> dict[str, list[list[int]]]:
    """The shipped task-expert table: task -> per MoE layer (blocks 1, 3) the expert ids."""
    _, _, _, t = load_weights(_weights_path(variant, weights_path))
    return check_table(t)


def build(
    task: str = "seg",
    all_experts: bool = False,
    variant: str = "moe",
    weights_path: Path | None = None,
    table: dict | None = None,
) -> Graph:
    """The integer graph of ``task`` (shipped ``moe`` weights by default).

    ``all_experts`` runs every expert of the MoE layers (cost comparisons only);
    ``table`` overrides the stored task-expert table (checked).
    """
    check_task(task)
    v, weights, fracs, stored = load_weights(_weights_path(variant, weights_path))
    if all_experts and v != "moe":
        raise AccelError("all_experts needs the moe variant")
    return graph(v, weights, fracs, stored if table is None else table, task, all_experts)
