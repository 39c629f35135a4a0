"""The multi-task MoE ViT (moe_vit): data, shipped task graphs, an independent Python-int
evaluation of the integer graph, stored quality, bad input, a tiny training run, README."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_intops import gelu_oracle, layernorm_oracle, softmax_oracle

from accel import reference, zoo
from accel.cli import main
from accel.errors import AccelError
from accel.fixed import Overflow, Rounding
from accel.ir import load, save
from accel.zoo.moe_vit import data, evaluate
from accel.zoo.moe_vit import model as zm

METRICS = json.loads((zm.WEIGHTS_DIR / "metrics.json").read_text())
ROWS = {r["variant"]: r for r in METRICS["rows"]}
README = (Path(__file__).parents[1] / "README.md").read_text()


# -- data ---------------------------------------------------------------------------------


def test_scenes_are_seeded_and_in_range():
    a, b, c = data.make_scenes(20, 3), data.make_scenes(20, 3), data.make_scenes(20, 4)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["images"], c["images"])
    d = data.make_scenes(200, 5)
    x, seg, depth = d["images"], d["seg"], d["depth"]
    assert x.shape == (200, 32, 32, 1) and seg.shape == depth.shape == (200, 32, 32)
    assert x.min() >= 0 and x.max() < 1
    np.testing.assert_array_equal(x * 256, np.round(x * 256))  # ap_ufixed<8,0> exactly
    assert set(np.unique(seg)) == set(range(data.N_CLASSES))
    assert np.all((seg == 0).any(axis=(1, 2))) and np.all((seg > 0).any(axis=(1, 2)))
    shapes, bg = depth[seg > 0], depth[seg == 0]
    assert shapes.min() >= data.Z_NEAR and shapes.max() <= data.Z_FAR
    assert bg.min() >= data.BG_DEPTH - 2 * data.BG_TILT
    assert bg.max() <= data.BG_DEPTH + 2 * data.BG_TILT
    np.testing.assert_array_equal(data.make_inputs(20, 3), a["images"])


def test_unpatchify_inverts_the_token_order():
    d = data.make_scenes(3, 6)
    tokens = zm.PATCH
    img = d["depth"]
    # tokens row-major over the 8x8 grid, pixels (py, px) inside
    t = img.reshape(3, 8, tokens, 8, tokens).transpose(0, 1, 3, 2, 4).reshape(3, 64, 16)
    np.testing.assert_array_equal(evaluate.unpatchify(t, "depth"), img)
    onehot = np.eye(4)[d["seg"]]
    ts = onehot.reshape(3, 8, 4, 8, 4, 4).transpose(0, 1, 3, 2, 4, 5).reshape(3, 64, 64)
    m = evaluate.task_metrics("seg", ts, d)
    assert m["miou"] == 1.0 and m["pixel_acc"] == 1.0
    assert evaluate.task_metrics("depth", t, d)["rmse"] == 0.0


# -- the shipped graphs -----------------------------------------------------------------


def _expert_nodes(g) -> dict[int, list[int]]:
    """MoE block -> the expert ids whose first dense layer is in the graph."""
    found: dict[int, list[int]] = {}
    for n in g.nodes:
        m = re.fullmatch(r"b(\d)_e(\d)_fc1", n.name)
        if m and n.op == "dense":
            found.setdefault(int(m.group(1)), []).append(int(m.group(2)))
    return found


@pytest.mark.parametrize("task", zm.tasks())
def test_task_graphs_hold_the_tables_experts_only(task):
    table = zm.table()
    assert set(table) == set(zm.tasks())
    g = zm.build(task)
    assert _expert_nodes(g) == {b: table[task][i] for i, b in enumerate(zm.MOE_BLOCKS)}
    assert sum(n.op == "dense" for n in g.nodes) == 1 + 4 * 7 + 2 * 2 * 2 + 2 * 2 + 1
    full = zm.build(task, all_experts=True)
    assert _expert_nodes(full) == {b: list(range(zm.N_EXPERTS)) for b in zm.MOE_BLOCKS}
    assert g.tensors[g.outputs[0]].shape == (64, zm.HEAD_OUT[task])
    assert g.meta["experts"] == table[task]


def _check_numerics(g):
    assert not any(n.op == "relu" for n in g.nodes)
    for n in g.nodes:
        out = g.tensors[n.outputs[0]]
        if "acc" in n.attrs:
            assert n.attrs["acc"].width <= 32, n.name
        if n.op in ("layernorm_int", "gelu_int"):
            assert out.type.width <= 32, n.name
        if n.op == "requantize" and n.name != "out":
            q = n.attrs["quant"]
            assert (q.type.width, q.type.signed) == (8, True), n.name
            assert (q.rounding, q.overflow) == (Rounding.RND, Overflow.SAT)
        if n.op == "softmax_int":
            assert g.tensors[n.inputs[0]].type == zm.SCORE.type and out.type == zm.PROBS
        if n.op in ("dense", "layernorm_int", "add_const"):
            for k, p in n.params.items():
                assert p.type.width == (16 if k in ("bias", "beta") else 8), (n.name, k)
        if len(out.shape) == 2:
            assert out.shape[0] == 64 and out.shape[1] % 8 == 0


@pytest.mark.parametrize("variant", zm.VARIANTS)
def test_graph_numerics_and_node_order(variant):
    g = zm.build("seg", variant=variant)
    _check_numerics(g)
    _check_numerics(zm.build("depth", variant=variant))
    ops = [n.op for n in g.nodes]
    head = ["dense", "requantize", "matmul", "requantize", "softmax_int", "matmul", "requantize"]
    qkv = ["dense", "requantize"] * 3
    mlp = ["dense", "requantize", "gelu_int", "requantize", "dense", "requantize"]
    block = ["layernorm_int", "requantize", *(qkv + head[2:]) * 2, "concat", "dense"]
    block += ["requantize", "add", "requantize", "layernorm_int", "requantize"]
    want = ["patchify", "dense", "requantize", "add_const", "requantize"]
    for i in range(zm.N_BLOCKS):
        moe = variant == "moe" and i in zm.MOE_BLOCKS
        want += block + (mlp * 2 + ["add", "requantize"] if moe else mlp) + ["add", "requantize"]
    want += ["layernorm_int", "requantize", "dense", "requantize"]
    assert ops == want


def test_graphs_round_trip_through_save_and_load(tmp_path):
    x = data.make_inputs(3, 9)
    for task in zm.tasks():
        g = zm.build(task)
        save(g, tmp_path / task)
        h = load(tmp_path / task)
        assert [(n.name, n.op, n.inputs, n.attrs) for n in h.nodes] == [
            (n.name, n.op, n.inputs, n.attrs) for n in g.nodes
        ]
        for n, m in zip(g.nodes, h.nodes, strict=True):
            assert n.params.keys() == m.params.keys()
            for k in n.params:
                assert n.params[k].type == m.params[k].type
                np.testing.assert_array_equal(n.params[k].data, m.params[k].data)
        raw = reference.quantize_inputs(g, g.inputs[0], x)
        np.testing.assert_array_equal(reference.predict(h, raw), reference.predict(g, raw))


# -- an independent evaluation with Python ints ------------------------------------------


def _rq(v: int, src: int, q) -> int:
    """Requantize one Python int: round half up (RND), saturate (SAT)."""
    s = src - q.type.frac
    if s > 0:
        v = (v + (1 << (s - 1))) >> s
    else:
        v <<= -s
    return min(max(v, q.type.min_int), q.type.max_int)


def _slow_node(g, n, xs):
    """One node on one sample, with Python ints (object arrays) and the intops oracles."""
    ts = [g.tensors[t] for t in n.inputs]
    out_t = g.tensors[n.outputs[0]]
    if n.op == "patchify":
        (x,), p = xs, n.attrs["patch"]
        h, w, c = x.shape
        rows = [
            [
                x[ty * p + py, tx * p + px, ch]
                for py in range(p)
                for px in range(p)
                for ch in range(c)
            ]
            for ty in range(h // p)
            for tx in range(w // p)
        ]
        return np.array(rows, dtype=object)
    if n.op == "dense":
        w, b = n.params["weight"], n.params["bias"]
        acc = xs[0] @ w.data.astype(object)
        return acc + (b.data.astype(object) * 2 ** (out_t.type.frac - b.type.frac))
    if n.op == "requantize":
        q = n.attrs["quant"]
        return np.vectorize(lambda v: _rq(v, ts[0].type.frac, q), otypes=[object])(xs[0])
    if n.op in ("add", "add_const"):
        a = xs[0]
        b, bt = (xs[1], ts[1].type) if n.op == "add" else (n.params["value"].data, None)
        bt = bt or n.params["value"].type
        f = out_t.type.frac
        return a * 2 ** (f - ts[0].type.frac) + b.astype(object) * 2 ** (f - bt.frac)
    if n.op == "matmul":
        b = xs[1].T if n.attrs["transpose_b"] else xs[1]
        return xs[0] @ b
    if n.op == "concat":
        return np.concatenate(xs, axis=-1)
    if n.op == "softmax_int":
        o = n.attrs["out"]
        rows = [
            softmax_oracle([int(v) for v in r], ts[0].type.frac, o.frac, o.width) for r in xs[0]
        ]
        return np.array(rows, dtype=object)
    if n.op == "gelu_int":
        f, sb = ts[0].type.frac, n.attrs["sig_bits"]
        return np.vectorize(lambda v: gelu_oracle(int(v), f, sb), otypes=[object])(xs[0])
    if n.op == "layernorm_int":
        gm, bt = n.params["gamma"], n.params["beta"]
        shift = n.attrs["norm_frac"] + gm.type.frac - bt.type.frac
        args = (n.attrs["norm_frac"], n.attrs["sqrt_guard"], n.attrs["mean_frac"])
        rows = [
            layernorm_oracle(
                r.tolist(), ts[0].type.width, gm.data.tolist(), bt.data.tolist(), shift, *args
            )
            for r in xs[0]
        ]
        return np.array(rows, dtype=object)
    raise AssertionError(f"no slow evaluation of {n.op}")


@pytest.mark.parametrize("task", zm.tasks())
def test_reference_equals_a_slow_python_int_evaluation(task):
    g = zm.build(task)
    x = reference.quantize_inputs(g, g.inputs[0], data.make_inputs(1, 21))
    fast = reference.run(g, x)
    values = {g.inputs[0]: x[0].astype(object)}
    for n in g.nodes:
        out = _slow_node(g, n, [values[t] for t in n.inputs])
        assert g.tensors[n.outputs[0]].type.contains(out.astype(np.int64)), n.name
        assert out.tolist() == fast[n.outputs[0]][0].tolist(), n.name
        values[n.outputs[0]] = out


@pytest.mark.parametrize("variant", zm.VARIANTS)
def test_stored_subset_metrics_are_the_integer_graphs(variant):
    subset = data.test_set(16)  # the first 16 of the held-out scenes
    assert METRICS["settings"]["integer_subset"].startswith("the integer graph on the first 16")
    for task in zm.tasks():
        got = evaluate.graph_metrics(zm.build(task, variant=variant), task, subset)
        assert got == ROWS[variant]["tasks"][task]["integer_subset"]


def test_stored_rows_are_complete():
    assert set(ROWS) == set(zm.VARIANTS)
    assert ROWS["moe"]["table"] == zm.table()
    for row in ROWS.values():
        for task in zm.tasks():
            t = row["tasks"][task]
            key = "miou" if task == "seg" else "rmse"
            for col in ("float", "qat_float_nonlinear", "integer"):
                assert key in t[col]
        assert row["train_seconds"] < 20 * 60


# -- bad input --------------------------------------------------------------------------


def test_bad_input_is_a_one_line_error():
    with pytest.raises(AccelError, match="moe_vit has no task 'pose'") as e:
        zm.build("pose")
    assert "\n" not in str(e.value)
    bad = {"seg": [[0, 4], [1, 2]], "depth": [[0, 1], [2, 3]]}
    with pytest.raises(AccelError, match=r"task 'seg', MoE block 1: expert 4 does not exist"):
        zm.build("seg", table=bad)
    dup = {"seg": [[0, 1], [1, 2]], "depth": [[0, 1], [3, 3]]}
    with pytest.raises(AccelError, match=r"task 'depth', MoE block 3: expert 3 is listed twice"):
        zm.build("depth", table=dup)
    with pytest.raises(AccelError, match="no entry for task 'depth'"):
        zm.build("seg", table={"seg": [[0, 1], [1, 2]]})
    with pytest.raises(AccelError, match=r"task 'seg', MoE block 1: needs 2 experts"):
        zm.build("seg", table={"seg": [[0], [1, 2]], "depth": [[0, 1], [2, 3]]})
    g = zm.build("seg")
    with pytest.raises(AccelError, match=r"input images of shape \(28, 28, 1\), expected"):
        evaluate.graph_outputs(g, np.zeros((2, 28, 28, 1)))
    with pytest.raises(AccelError, match=r"expected shape \(N, 32, 32, 1\), got \(2, 28, 28, 1\)"):
        reference.quantize_inputs(g, g.inputs[0], np.zeros((2, 28, 28, 1)))
    with pytest.raises(AccelError, match="no variant 'sparse'"):
        zoo.get("moe_vit@sparse")


def test_cli_predict_task(tmp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, zoo.get("moe_vit").make_inputs(3, 2))
    for task in zm.tasks():
        y = tmp_path / f"{task}.npy"
        assert (
            main(["predict", "moe_vit", "--task", task, "--inputs", str(x), "--out", str(y)]) == 0
        )
        g = zm.build(task)
        want = reference.predict(g, reference.quantize_inputs(g, g.inputs[0], np.load(x)))
        np.testing.assert_array_equal(np.load(y), want)
    y = tmp_path / "y.npy"
    capsys.readouterr()
    assert main(["predict", "moe_vit", "--task", "pose", "--inputs", str(x), "--out", str(y)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "accel: error: moe_vit has no task 'pose' (tasks: seg, depth)"
    args = ["predict", "autoencoder", "--task", "seg", "--inputs", str(x), "--out", str(y)]
    assert main(args) == 2
    assert "--task is not an option of model autoencoder" in capsys.readouterr().err
    np.save(x, np.zeros((2, 28, 28, 1)))
    assert main(["predict", "moe_vit", "--inputs", str(x), "--out", str(y)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(N, 32, 32, 1), got (2, 28, 28, 1)" in err[0]
    assert not y.exists()
    assert main(["zoo", "list", "--json"]) == 0
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert models["moe_vit"]["variants"] == ["dense", "moe"]
    assert models["moe_vit"]["output"]["shape"] == [64, 64]


# -- training ---------------------------------------------------------------------------


def test_a_tiny_training_run_exports_graphs_that_build(tmp_path):
    pytest.importorskip("torch")
    from accel.training import moe_vit as tm

    doc = tm.train(epochs=3, n_train=64, n_test=8, out_dir=tmp_path, progress=False)
    row = doc["rows"][0]
    assert row["warm_epochs"] == row["float_epochs"] == row["qat_epochs"] == 1
    table = zm.table(weights_path=tmp_path / "moe.npz")
    for task in zm.tasks():
        g = zm.build(task, weights_path=tmp_path / "moe.npz")
        _check_numerics(g)
        assert _expert_nodes(g) == {b: table[task][i] for i, b in enumerate(zm.MOE_BLOCKS)}
        assert 0 <= row["tasks"][task]["integer"].get("miou", 0) <= 1


def test_cli_train_writes_graphs_that_build_and_refuses_too_few_epochs(tmp_path, capsys):
    """``accel train moe_vit``: weights and metrics.json in -o, a one-line error for 2 epochs."""
    pytest.importorskip("torch")
    out, again = tmp_path / "trained", tmp_path / "again"
    argv = ["train", "moe_vit", "--n-train", "64", "--json", "-o"]
    assert main([*argv, str(out), "--epochs", "3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "moe.npz"]
    assert json.loads((out / "metrics.json").read_text()) == doc
    for task in zm.tasks():
        _check_numerics(zm.build(task, weights_path=out / "moe.npz"))

    assert main([*argv, str(again), "--epochs", "2"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "accel: error: moe_vit needs at least 3 epochs (warm-up, float, QAT)"
    )
    assert not again.exists() and (out / "moe.npz").is_file()


# -- README -----------------------------------------------------------------------------


def test_readme_shows_the_stored_quality():
    section = README.split("## MoE ViT (moe_vit)")[1].split("\n## ")[0]
    cols = ("float", "qat_float_nonlinear", "integer")
    for variant, row in ROWS.items():
        for task, label, key in (
            ("seg", "mIoU", "miou"),
            ("seg", "pixel accuracy", "pixel_acc"),
            ("depth", "RMSE", "rmse"),
        ):
            m = re.search(rf"^\| {variant} \| {task} {label} \|([^|]*)\|([^|]*)\|([^|]*)\|",
                          section, re.M)  # fmt: skip
            assert m, f"README has no {variant} {task} {label} row"
            got = [float(m.group(i)) for i in (1, 2, 3)]
            assert got == [row["tasks"][task][c][key] for c in cols]
    table = zm.table()
    for task in zm.tasks():
        experts = ", ".join(
            f"block {b}: {e}" for b, e in zip(zm.MOE_BLOCKS, table[task], strict=True)
        )
        assert f"| {task} | {experts} |" in section
