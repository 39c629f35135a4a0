"""The deformable detector (deform_det): data, AP50 evaluator, shipped graphs, trainer, README."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from accel import reference, zoo
from accel.cli import main
from accel.errors import AccelError
from accel.zoo.deform_det import data, evaluate
from accel.zoo.deform_det import model as zm

METRICS = json.loads((zm.WEIGHTS_DIR / "metrics.json").read_text())
ROWS = {r["variant"]: r for r in METRICS["rows"]}
README = (Path(__file__).parents[1] / "README.md").read_text()


# -- data ---------------------------------------------------------------------------------


def test_data_is_deterministic_per_seed():
    a, b, c = data.make_images(12, 7), data.make_images(12, 7), data.make_images(12, 8)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["images"], c["images"])


def test_images_and_boxes_are_in_range():
    d = data.make_images(200, 3)
    x = d["images"]
    assert x.shape == (200, 32, 32, 1) and x.dtype == np.float64
    assert x.min() >= 0 and x.max() < 1
    np.testing.assert_array_equal(x * 256, np.round(x * 256))  # ap_ufixed<8,0> exactly
    used = d["classes"] >= 0
    assert np.array_equal(used.sum(1), d["count"]) and d["count"].min() >= 1
    assert d["count"].max() <= data.MAX_OBJECTS
    assert set(np.unique(d["classes"][used])) == set(range(data.N_CLASSES))
    b = d["boxes"][used]
    assert b.min() >= 0 and b.max() <= data.SIZE
    wh = b[:, 2:] - b[:, :2]
    assert wh.min() >= data.MIN_SIDE - 1e-9 and wh.max() <= data.MAX_SIDE + 1e-9
    # Unused rows are zero.
    assert np.all(d["boxes"][~used] == 0)


def test_targets_mark_each_object_once():
    d = data.make_images(50, 4)
    t = data.targets(d["boxes"], d["classes"])
    assert t["heatmap"].shape == (50, 8, 8, data.N_CLASSES)
    assert t["mask"].sum() == d["count"].sum()
    assert np.array_equal(t["heatmap"].max(-1) == 1.0, t["mask"])
    assert t["offset"].min() >= 0 and t["offset"].max() < 1


# -- the AP50 evaluator ---------------------------------------------------------------------


def test_perfect_predictions_score_one():
    d = data.make_images(100, 5)
    dets = evaluate.decode(evaluate.perfect_output(d["boxes"], d["classes"]))
    for i, det in enumerate(dets):  # the decoded boxes are the ground truth
        top = det[det[:, 1] > 0.5]
        gt = d["boxes"][i][d["classes"][i] >= 0]
        assert len(top) == len(gt)
        got = sorted(map(tuple, np.round(top[:, 2:], 9)))
        assert got == sorted(map(tuple, np.round(gt, 9)))
    ap = evaluate.ap50(dets, d["boxes"], d["classes"])
    assert ap["mAP50"] == 1.0 and ap["per_class"] == [1.0] * data.N_CLASSES


def test_shifted_boxes_score_zero():
    d = data.make_images(100, 5)
    out = evaluate.perfect_output(d["boxes"], d["classes"])
    out[..., data.N_CLASSES] *= 0.3  # every box a third as wide: IoU <= 0.3
    assert evaluate.ap50(evaluate.decode(out), d["boxes"], d["classes"])["mAP50"] == 0.0
    out = evaluate.perfect_output(d["boxes"], d["classes"])
    out[..., data.N_CLASSES + 2] += 4  # 16 px to the right: no overlap
    assert evaluate.ap50(evaluate.decode(out), d["boxes"], d["classes"])["mAP50"] == 0.0


def test_ap_by_hand():
    # Two ground-truth boxes; detections by score: hit, miss, hit -> recall 1/2 at
    # precision 1, recall 1 at precision 2/3: AP = 1/2 + 1/2 * 2/3.
    # float comparison: AP is a float quality metric (summed precisions), not an exact value
    assert evaluate.average_precision(np.array([1, 0, 1]), 2) == pytest.approx(5 / 6)
    assert evaluate.average_precision(np.array([0, 1]), 2) == pytest.approx(0.25)
    assert evaluate.average_precision(np.array([]), 3) == 0.0
    # A duplicate of a matched box is a false positive; the other class has no detections.
    boxes = np.array([[[0, 0, 10, 10], [20, 20, 30, 30]]], dtype=float)
    classes = np.array([[0, 1]])
    dets = [np.array([[0, 0.9, 0, 0, 10, 10], [0, 0.8, 1, 1, 10, 10], [1, 0.1, 0, 0, 9, 9]])]
    ap = evaluate.ap50(dets, boxes, classes, n_classes=2)
    assert ap["per_class"] == [1.0, 0.0] and ap["mAP50"] == 0.5


def test_peaks_are_3x3_maxima():
    heat = -np.arange(16.0).reshape(1, 4, 4, 1)  # falling away from the top left corner
    heat[0, 1, 1, 0], heat[0, 1, 2, 0], heat[0, 3, 3, 0] = 5, 4, 3
    assert np.argwhere(evaluate.peaks(heat)[0, ..., 0]).tolist() == [[1, 1], [3, 3]]


# -- the shipped graphs ---------------------------------------------------------------------


@pytest.mark.parametrize("variant", zm.VARIANTS)
def test_shipped_graph_runs_through_the_reference(variant):
    g = zoo.get(f"deform_det@{variant}").build()
    dws = [n for n in g.nodes if n.op == "deform_conv2d"]
    assert [n.attrs["mode"] for n in dws] == [zm.get_variant(variant).mode] * 3
    assert all(len(list(g.consumers(t))) <= 1 for t in g.tensors)  # a chain
    x = data.make_inputs(6, 11)
    out = reference.predict(g, reference.quantize_inputs(g, g.inputs[0], x))
    assert out.shape == (6, 8, 8, zm.N_OUT)
    assert g.tensors[g.outputs[0]].type == zm.OUTPUT.type
    weights = [n.params["weight"] for n in g.nodes if "weight" in n.params]
    assert all(p.type.width == zm.W_BITS for p in weights)


def test_default_is_square_and_bad_variants_are_errors():
    assert zoo.get("deform_det").build().name == "deform_det_square"
    with pytest.raises(AccelError, match="no variant"):
        zoo.get("deform_det@round")
    with pytest.raises(AccelError, match="no variant"):
        zm.build(variant="round")


def test_torch_mirror_equals_the_integer_graph():
    """A float64 torch net holding the shipped integers reproduces the Graph bit for bit."""
    torch = pytest.importorskip("torch")
    from accel.training import deform_det as dd

    x = data.make_inputs(8, 12)
    for variant in zm.VARIANTS:
        v, weights, fracs = zm.load_weights(zm.WEIGHTS_DIR / f"{variant}.npz")
        det = dd.Detector.from_int(v, weights, fracs)
        with torch.no_grad():
            got = det(torch.from_numpy(x)).numpy()
        np.testing.assert_array_equal(got, dd.graph_outputs(zm.graph(v, weights, fracs), x))


def test_square1x1_has_1x1_offset_convs_and_reproduces_its_graph():
    """square1x1: the square sampler with 1x1 offset convs; files without ``offset_k``
    (written before it) load as 3x3; its float64 copy reproduces the integer Graph."""
    torch = pytest.importorskip("torch")
    from accel.training import deform_det as dd

    v = zm.get_variant("square1x1")
    assert (v.mode, v.max_offset, v.offset_frac, v.offset_k) == ("square", zm.SQUARE_R, 0, 1)
    assert "square1x1" in zoo.get("deform_det").variants()
    g = zoo.get("deform_det@square1x1").build()
    for n in (n for n in g.nodes if n.op == "deform_conv2d"):
        assert n.attrs["mode"] == "square"
        assert n.params["offset_weight"].data.shape == (1, 1, n.params["weight"].data.shape[2], 1)
    v, weights, fracs = zm.load_weights(zm.WEIGHTS_DIR / "square1x1.npz")
    assert v == zm.get_variant("square1x1")
    x = data.make_inputs(8, 12)
    det = dd.Detector.from_int(v, weights, fracs)
    with torch.no_grad():
        got = det(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(got, dd.graph_outputs(zm.graph(v, weights, fracs), x))
    old, _, _ = zm.load_weights(zm.WEIGHTS_DIR / "square.npz")
    assert old.offset_k == 3
    with pytest.raises(AccelError, match="offset weight shape"):
        zm.graph(old, weights, fracs)  # 1x1 offset weights for a 3x3 variant


@pytest.mark.parametrize("variant", ["square", "square1x1"])
def test_dilation_share_counts_the_integer_graphs_dilations(variant):
    """The trainer's dilation share (its float64 copy) counts exactly the integer Graph's
    dilations above 1, as ``accel.reference`` computes them."""
    pytest.importorskip("torch")
    from accel.training import deform_det as dd

    v, weights, fracs = zm.load_weights(zm.WEIGHTS_DIR / f"{variant}.npz")
    x = data.make_inputs(250, 13)
    share = dd.dilation_share(dd.Detector.from_int(v, weights, fracs), x)
    g = zm.graph(v, weights, fracs)
    values = reference.run(g, reference.quantize_inputs(g, g.inputs[0], x))
    want = {}
    for name in ("a_dw", "b_dw", "c_dw"):
        node = g.node(name)
        t = node.inputs[0]
        off = reference.deform_offsets(node, values[t], g.tensors[t])
        assert off.min() >= 0 and off.max() <= zm.SQUARE_R
        want[name] = round(int((off > 1).sum()) / off.size, 5)
    assert share == want


def test_stored_quantized_ap50_is_the_reference_run():
    """The default variant's quantized AP50 is its integer Graph's, on the held-out set."""
    g = zm.build()
    d = data.make_images(data.N_TEST, data.TEST_SEED)
    raw = reference.quantize_inputs(g, g.inputs[0], d["images"])
    out = np.ldexp(reference.predict(g, raw).astype(np.float64), -zm.OUTPUT.type.frac)
    ap = evaluate.ap50(evaluate.decode(out), d["boxes"], d["classes"])
    assert round(ap["mAP50"], 4) == ROWS[zm.DEFAULT_VARIANT]["quantized_ap50"]


# -- training -------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["bilinear", "square", "square1x1"])
def test_a_tiny_training_run_exports_an_exact_graph(variant):
    torch = pytest.importorskip("torch")
    from accel.training import deform_det as dd

    test = data.make_images(16, 5)
    # square1x1's offsets learn from the first (float) epoch on
    frozen = 0 if variant == "square1x1" else None
    row, weights, fracs = dd.train_variant(
        variant, 1, 1, train_data=dd.training_set(64, seed=1), test=test, frozen_float=frozen
    )
    assert row["variant"] == variant and 0 <= row["quantized_ap50"] <= 1
    v = zm.get_variant(variant)
    det = dd.Detector.from_int(v, weights, fracs)
    with torch.no_grad():
        got = det(torch.from_numpy(test["images"])).numpy()
    np.testing.assert_array_equal(
        got, dd.graph_outputs(zm.graph(v, weights, fracs), test["images"])
    )


def test_cli_refuses_a_bad_variant(capsys, tmp_path):
    pytest.importorskip("torch")
    out = str(tmp_path / "out")
    assert main(["train", "deform_det", "--variant", "round", "-o", out]) == 2
    assert "no variant 'round'" in capsys.readouterr().err
    assert main(["train", "nm_sparse", "--variant", "square", "-o", out]) == 2
    assert "--variant is not an option" in capsys.readouterr().err
    assert not Path(out).exists()


# -- README ---------------------------------------------------------------------------------


def test_readme_shows_the_stored_ap50():
    section = README.split("## Deformable detector (deform_det)")[1].split("\n## ")[0]
    for variant, row in ROWS.items():
        m = re.search(rf"^\| `?{variant}`?\s*\|([^|]*)\|([^|]*)\|", section, re.M)
        assert m, f"README has no AP50 row for {variant}"
        assert float(m.group(1)) == round(row["float_ap50"], 3)
        assert float(m.group(2)) == round(row["quantized_ap50"], 3)
    assert set(ROWS) == set(zm.VARIANTS)
