"""The model zoo: named quantized networks with data and trained integer weights."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from accel.errors import AccelError
from accel.ir import Graph


@dataclass(frozen=True)
class ZooModel:
    name: str
    family: str
    after: str
    description: str
    build: Callable[[], Graph]
    # Seeded real-valued inputs, as `accel predict` takes them.
    make_inputs: Callable[[int, int], np.ndarray]
    train: str  # import path "module:function" of the trainer (needs torch)
    # Other shipped versions, named ``MODEL@VARIANT`` on the command line.
    variants: Callable[[], list[str]] | None = None
    variant: Callable[[str], ZooModel] | None = None
    # Multi-task models: the graph of one task (``accel predict --task``).
    build_task: Callable[[str], Graph] | None = None
    # The target it runs on unless told (default: the first that runs its graph), and the
    # hardware knobs it prefers per target (``accel.targets``), below the user's.
    arch: str | None = None
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The trainer's own options: name -> help (``accel train MODEL --name VALUE``).
    train_options: dict[str, str] = field(default_factory=dict)


def _autoencoder_inputs(n: int, seed: int) -> np.ndarray:
    from accel.zoo.autoencoder.data import make_modules

    return make_modules(n, seed)["normalized"]


def _autoencoder_graph() -> Graph:
    from accel.zoo.autoencoder.model import build

    return build()


def _shipped(model: str) -> list[str]:
    """The shipped variants of ``model`` (its package's ``model.available()``)."""
    return importlib.import_module(f"accel.zoo.{model}.model").available()


def _variant(model: str, name: str, what: str, **fields) -> ZooModel:
    """``model@name``: the base entry with ``fields`` replaced, if ``name`` is shipped."""
    shipped = _shipped(model)
    if name not in shipped:
        raise AccelError(f"{model} has no variant {name!r} (shipped: {', '.join(shipped)})")
    return replace(
        MODELS[model], name=f"{model}@{name}", description=f"{model}, {what}", variants=None,
        variant=None, **fields,
    )  # fmt: skip


def _autoencoder_variant(name: str) -> ZooModel:
    """``learned`` (QFX binary points), ``khot2``, ``khot1`` (multiplier-free weights)."""
    from accel.zoo.autoencoder.model import build

    return _variant("autoencoder", name, f"{name} weights", build=lambda: build(variant=name))


def _nm_sparse_inputs(n: int, seed: int) -> np.ndarray:
    from accel.zoo.nm_sparse.data import make_inputs

    return make_inputs(n, seed)


def _nm_sparse_graph() -> Graph:
    from accel.zoo.nm_sparse.model import build

    return build()


def _nm_sparse_variant(name: str) -> ZooModel:
    """``mlp_2-8_bdwp``, ``cnn_dense``, ...: a shipped weights file of nm_sparse."""
    from accel.zoo.nm_sparse import data
    from accel.zoo.nm_sparse.model import WEIGHTS_DIR, build

    net = name.split("_")[0]
    return _variant(
        "nm_sparse", name, f"shipped weights {name}",
        build=lambda: build(weights_path=WEIGHTS_DIR / f"{name}.npz"),
        make_inputs=lambda n, seed: data.make_inputs(n, seed, net),
    )  # fmt: skip


def _deform_det_inputs(n: int, seed: int) -> np.ndarray:
    from accel.zoo.deform_det.data import make_inputs

    return make_inputs(n, seed)


def _deform_det_graph() -> Graph:
    from accel.zoo.deform_det.model import build

    return build()


def _deform_det_variant(name: str) -> ZooModel:
    """``regular``, ``bilinear``, ``square``, ``square1x1``: the depthwise layers' sampling
    (square1x1: square with 1x1 offset convs)."""
    from accel.zoo.deform_det.model import build

    return _variant(
        "deform_det", name, f"{name} depthwise sampling", build=lambda: build(variant=name)
    )


def _moe_vit_inputs(n: int, seed: int) -> np.ndarray:
    from accel.zoo.moe_vit.data import make_inputs

    return make_inputs(n, seed)


def _moe_vit_graph() -> Graph:
    from accel.zoo.moe_vit.model import build

    return build(task="seg")


def _moe_vit_variant(name: str) -> ZooModel:
    """``moe`` (the default) or ``dense`` (the baseline without experts)."""
    from accel.zoo.moe_vit.model import build

    return _variant(
        "moe_vit", name, f"{name} weights",
        build=lambda: build(task="seg", variant=name),
        build_task=lambda task: build(task=task, variant=name),
    )  # fmt: skip


def _moe_vit_task(task: str) -> Graph:
    from accel.zoo.moe_vit.model import build

    return build(task=task)


MODELS: dict[str, ZooModel] = {
    m.name: m
    for m in [
        ZooModel(
            name="autoencoder",
            family="autoencoder compression",
            after="CMS HGCAL ECON-T on-detector autoencoder (variant 8x8_c8_S2)",
            description=(
                "48 trigger-cell charges (normalized to the module sum) -> 16 x 9-bit latent "
                "code; conv 3x3/2 + dense, ~2.1k parameters"
            ),
            build=_autoencoder_graph,
            make_inputs=_autoencoder_inputs,
            train="accel.training.autoencoder:train",
            variants=lambda: _shipped("autoencoder"),
            variant=_autoencoder_variant,
            train_options={
                "points": "fixed (the ECON-T types, default) or learned (QFX binary points)",
                "khot": "K: weights with at most K signed power-of-two digits (1: shifts)",
            },
        ),
        ZooModel(
            name="nm_sparse",
            family="N:M sparse training",
            after="SAT: bidirectional weight pruning (BDWP) for N:M sparse training",
            description=(
                "8x8 digits -> 10 logits; MLP 64-128-128-10 at 2:8 N:M (BDWP) by default; "
                "the CNN and other patterns as nm_sparse@VARIANT (e.g. nm_sparse@cnn_1-4_bdwp)"
            ),
            build=_nm_sparse_graph,
            make_inputs=_nm_sparse_inputs,
            train="accel.training.nm_sparse:train",
            variants=lambda: _shipped("nm_sparse"),
            variant=_nm_sparse_variant,
            arch="engine",  # SAT's MAC array, dense and N:M sparse
            train_options={
                "nm": "N:M pattern, or 'dense' (default 2:8)",
                "net": "mlp (default) or cnn",
                "method": "bdwp (default), srste or dense (the baseline without masks)",
                "points": "fixed (the module's types, default) or learned (QFX binary points)",
                "khot": "K: weights with at most K signed power-of-two digits (1: shifts)",
            },
        ),
        ZooModel(
            name="deform_det",
            family="deformable convolution",
            after="CoDeNet: deformable convolution with a square sampling shape (CenterNet head)",
            description=(
                "32x32 grey image -> 8x8 CenterNet output (4 class heatmaps, box size, offset); "
                "W4A8, three deformable depthwise 3x3 layers, square shape (one integer dilation "
                "per pixel) by default; deform_det@regular, deform_det@bilinear, "
                "deform_det@square1x1 (square with 1x1 offset convs)"
            ),
            build=_deform_det_graph,
            make_inputs=_deform_det_inputs,
            train="accel.training.deform_det:train",
            variants=lambda: _shipped("deform_det"),
            variant=_deform_det_variant,
            # three 32x32 feature maps in two regions of each bank
            targets={"engine": {"a_depth": 2048}},
            train_options={
                "variant": "square (default), square1x1 (1x1 offset convs), bilinear or regular "
                "depthwise sampling"
            },
        ),
        ZooModel(
            name="moe_vit",
            family="mixture-of-experts ViT",
            after="M3ViT / Edge-MoE / I-ViT: multi-task MoE ViT, integer-only inference",
            description=(
                "32x32 grey scene -> per-pixel segmentation (4 classes) or depth; ViT of 64 "
                "tokens x 32, 4 blocks, MoE MLPs (4 experts, top-2 per task) in blocks 1 and 3; "
                "integer softmax, GELU, LayerNorm; task seg by default (accel predict --task "
                "depth); moe_vit@dense, the dense baseline"
            ),
            build=_moe_vit_graph,
            make_inputs=_moe_vit_inputs,
            train="accel.training.moe_vit:train",
            variants=lambda: _shipped("moe_vit"),
            variant=_moe_vit_variant,
            build_task=_moe_vit_task,
            train_options={"variant": "moe (default) or dense (the baseline without experts)"},
        ),
    ]
}


def get(name: str) -> ZooModel:
    """A zoo model by name, or one of its shipped variants as ``MODEL@VARIANT``."""
    if "@" in name:
        base, variant = name.split("@", 1)
        model = get(base)
        if model.variant is None:
            raise AccelError(f"model {base!r} has no variants")
        return model.variant(variant)
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise AccelError(f"unknown model {name!r} (the zoo has: {known})") from None
