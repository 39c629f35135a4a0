"""The MoE ViT (both tasks), the deformable detector (every variant) and the shipped N:M
sparse CNNs through hls4ml: the compiled C simulation equals the reference bit for bit.
The default run checks a few dozen images of one case per family; the ``slow`` tests
>= 1,000 images of each, edge images included. A ViT or detector project compiles once
(~2.5 min here, an N:M CNN ~10 s) into the cache."""

import json
import shutil

import numpy as np
import pytest

from accel import reference, zoo
from accel.cli import main
from accel.ir import Graph
from accel.sim.stimulus import edge_inputs, random_inputs
from accel.zoo.deform_det.model import build as build_det
from accel.zoo.moe_vit.model import build as build_vit

pytest.importorskip("hls4ml")
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")

from accel.flows import hls4ml as flow  # noqa: E402

CASES = {
    "moe_vit/seg": lambda: build_vit(task="seg"),
    "moe_vit/depth": lambda: build_vit(task="depth"),
    "deform_det/square": lambda: build_det(variant="square"),
    "deform_det/bilinear": lambda: build_det(variant="bilinear"),
    "deform_det/regular": lambda: build_det(variant="regular"),
}
NM_CNNS = [v for v in zoo.get("nm_sparse").variants() if v.startswith("cnn_")]
for _v in NM_CNNS:
    CASES[f"nm_sparse/{_v}"] = lambda v=_v: zoo.get(f"nm_sparse@{v}").build()


def stimulus(case: str, g: Graph, n: int, seed: int) -> np.ndarray:
    """Edge images (all zero, all max, alternating, a lone max), the model's own data
    (seeded scenes), and a fifth of full-range random images."""
    family, variant = case.split("/")
    model = zoo.get(f"nm_sparse@{variant}" if family == "nm_sparse" else family)
    n_random = n // 5
    scenes = model.make_inputs(n - n_random - 5, seed)
    return np.concatenate(
        [
            edge_inputs(g),
            reference.quantize_inputs(g, g.inputs[0], scenes),
            random_inputs(g, n_random, seed + 1),
        ]
    )


def check(case: str, n: int, seed: int) -> None:
    g = CASES[case]()
    x = stimulus(case, g, n, seed)
    assert len(x) >= n
    values = reference.run(g, x)
    if case.startswith("deform_det/") and not case.endswith("regular"):
        # the detector samples with offsets that vary (the trained square net keeps d = 1
        # in c_dw; test_hls4ml_ext forces every offset up to the clip bounds)
        offsets = set()
        for node in g.nodes:
            if node.op == "deform_conv2d":
                src = node.inputs[0]
                off = reference.deform_offsets(node, values[src], g.tensors[src])
                offsets |= set(np.unique(off).tolist())
        assert len(offsets) > 1
    y = flow.predict(g, x)
    want = values[g.outputs[0]]
    assert y.dtype == np.int64 and y.shape == want.shape
    assert np.array_equal(y[:5], want[:5])  # the edge images
    assert int((y != want).sum()) == 0


@pytest.mark.parametrize("case", ["moe_vit/seg", "deform_det/bilinear", "nm_sparse/cnn_1-4_srste"])
def test_bit_exact(case):
    check(case, 32, seed=5)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_bit_exact_1000(case):
    check(case, 1000, seed=11)


def test_layers_native_and_extension():
    """Which layers are hls4ml's own and which are accel's extensions, per family."""
    kinds = {}
    for case, make in CASES.items():
        kinds[case] = {n["class"] for n in flow._lower(make()).nodes}
    ext = {"AccelShiftmax", "AccelShiftGelu", "AccelLayerNorm", "AccelMatMul"}
    vit_native = {"Reshape", "Transpose", "Dense", "BatchNormalization", "Merge(add)"}
    assert kinds["moe_vit/seg"] == ext | vit_native | {"Concatenate"}
    assert kinds["deform_det/square"] == kinds["deform_det/bilinear"]
    assert kinds["deform_det/square"] == {"Conv2D", "AccelDeformDW", "Activation"}
    assert kinds["deform_det/regular"] == {"Conv2D", "DepthwiseConv2D", "Activation"}


def test_cli_generate_and_predict_moe_vit(tmp_path, capsys):
    out = tmp_path / "prj"
    argv = ["generate", "moe_vit", "--task", "seg", "--target", "hls4ml", "-o", str(out)]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "moe_vit_moe_seg"
    for f in ("build_prj.tcl", "firmware/moe_vit_moe_seg.cpp", "firmware/parameters.h"):
        assert (out / f).is_file(), f
    assert (out / "firmware" / "nnet_utils" / "nnet_accel_vit.h").is_file()
    assert list((out / "firmware" / "weights").glob("gamma*.txt"))
    x = zoo.get("moe_vit").make_inputs(6, 2)
    np.save(tmp_path / "x.npy", x)
    argv = ["predict", "moe_vit", "--task", "seg", "--engine", "hls4ml"]
    assert main([*argv, "--inputs", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy")]) == 0
    g = build_vit(task="seg")
    want = reference.predict(g, reference.quantize_inputs(g, "image", x))
    assert np.array_equal(np.load(tmp_path / "y.npy"), want)
