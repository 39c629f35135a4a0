"""hls4ml for the N:M sparse zoo model: C simulation equals the reference; zero weights are free."""

import json
import shutil

import numpy as np
import pytest

from accel import nm, reference, zoo
from accel.cli import main
from accel.ir import Graph
from accel.sim.stimulus import edge_inputs, random_inputs
from accel.zoo.nm_sparse import data
from accel.zoo.nm_sparse import model as zm

pytest.importorskip("hls4ml")
pytest.importorskip("sklearn")
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")

from accel.flows import hls4ml as flow  # noqa: E402


def first_layer_max_rows(g: Graph) -> np.ndarray:
    """Per output of the first layer, the input that maximizes it: max where the weight > 0."""
    node = g.nodes[0]
    w = node.params["weight"].data
    top = zm.INPUT.type.max_int
    if node.op == "dense":
        return top * (w.T > 0)
    # A 3x3 single-channel kernel tiled with period 3: every third output sees it whole.
    r = (np.arange(8) + 1) % 3
    pos = w[..., 0, :] > 0  # (3, 3, filters)
    return top * np.moveaxis(pos[r][:, r], -1, 0)[..., None]


def first_layer_bound(g: Graph) -> float:
    """The largest value the first layer can produce (all-max inputs where weights are > 0)."""
    node = g.nodes[0]
    w, b = node.params["weight"], node.params["bias"]
    w2 = w.data.reshape(-1, w.data.shape[-1])
    top = zm.INPUT.type.to_float(zm.INPUT.type.max_int)
    return float((w.type.to_float(np.maximum(w2, 0)).sum(0) * top + b.type.to_float(b.data)).max())


def stimulus(g: Graph, net: str, n: int, seed: int) -> np.ndarray:
    """Edge rows (all zero, all max, ...), first-layer maximizers, every digit of both
    splits, full-range random rows."""
    digits = np.concatenate([data.load("test", net)[0], data.load("train", net)[0]])
    rows = [
        edge_inputs(g),
        first_layer_max_rows(g),
        reference.quantize_inputs(g, "image", digits),
    ]
    rows.append(random_inputs(g, n - sum(len(r) for r in rows), seed))
    return np.concatenate(rows)


@pytest.mark.parametrize(
    ("net", "pattern"),
    # the CNN's C simulation compiles for minutes: slow; the MLP runs by default
    [("mlp", "2:8"), pytest.param("cnn", "2:8", marks=pytest.mark.slow)],
)
def test_csim_bit_exact(net, pattern):
    g = zm.build(net=net, pattern=pattern)
    x = stimulus(g, net, 10_000, seed=11)
    assert len(x) >= 10_000
    assert np.array_equal(x[0], np.zeros_like(x[0])) and (x[1] == zm.INPUT.type.max_int).all()
    values = reference.run(g, x)
    # Every ReLU requantizer reaches zero and saturates at its maximum, except where no
    # input can get there (the CNN's first conv: at most ~6.0 < 7.97).
    reachable = first_layer_bound(g) >= zm.ACT.type.to_float(zm.ACT.type.max_int - 0.5)
    for node in g.nodes:
        if node.op == "requantize" and node.attrs["quant"] == zm.ACT:
            t = values[node.outputs[0]]
            first = node.name == f"{g.nodes[0].name}_q"
            assert (t == 0).any(), node.name
            assert (t == zm.ACT.type.max_int).any() == (reachable or not first), node.name
    y = flow.predict(g, x)
    want = values[g.outputs[0]]
    assert y.dtype == np.int64 and y.shape == want.shape == (len(x), 10)
    assert int((y != want).sum()) == 0


@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_multipliers_follow_the_sparsity(net):
    """hls4ml's latency kernels skip zero weights: an N:M layer costs its kept weights."""
    dense = flow.multiplier_count(zm.build(net=net, pattern="dense"))
    for text in ("2:4", "2:8", "1:4"):
        g = zm.build(net=net, pattern=text)
        p = nm.NM.parse(text)
        mults = flow.multiplier_count(g)
        for layer in zm.NETS[net].layers:
            w = g.node(layer.name).params["weight"].data
            assert mults[layer.name] == np.count_nonzero(w)
            if layer.sparse:
                assert mults[layer.name] <= w.size * p.n // p.m < dense[layer.name]
        assert sum(mults.values()) < sum(dense.values())


def test_cli_generate_and_predict(tmp_path, capsys):
    out = tmp_path / "prj"
    assert main(["generate", "nm_sparse", "--target", "hls4ml", "-o", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "nm_sparse_mlp_2_8_bdwp"
    manifest = json.loads((out / flow.MANIFEST).read_text())
    assert manifest["multiplier_limit"]["total"] == sum(
        flow.multiplier_count(zoo.get("nm_sparse").build()).values()
    )
    x = zoo.get("nm_sparse").make_inputs(30, 3)
    np.save(tmp_path / "x.npy", x)
    argv = ["predict", "nm_sparse", "--engine", "hls4ml", "--inputs", str(tmp_path / "x.npy")]
    assert main([*argv, "--out", str(tmp_path / "y.npy")]) == 0
    g = zoo.get("nm_sparse").build()
    want = reference.predict(g, reference.quantize_inputs(g, "image", x))
    assert np.array_equal(np.load(tmp_path / "y.npy"), want)
