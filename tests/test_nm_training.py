"""N:M sparse training (dense, SR-STE, SAT's BDWP): masks, gradients, shipped model, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from accel import nm, reference, zoo  # noqa: E402
from accel.cli import main  # noqa: E402
from accel.training import nm_sparse as ns  # noqa: E402
from accel.zoo.nm_sparse import data  # noqa: E402
from accel.zoo.nm_sparse import model as zm  # noqa: E402

torch.set_num_threads(1)
PATTERNS = [nm.NM(2, 4), nm.NM(2, 8), nm.NM(1, 4), nm.NM(1, 2), nm.NM(3, 8)]
METRICS = json.loads((zm.WEIGHTS_DIR / "metrics.json").read_text())


def ints(rng, shape, lo=-6, hi=6):
    """Small integers (many magnitude ties) as float64."""
    return torch.from_numpy(rng.integers(lo, hi + 1, shape)).to(torch.float64)


# -- masks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", PATTERNS, ids=str)
def test_masks_equal_accel_nm(pattern):
    rng = np.random.default_rng(pattern.m * 10 + pattern.n)
    for _ in range(5):
        w = rng.integers(-4, 5, (4 * pattern.m, 3 * pattern.m))  # ties everywhere
        for axis in (0, 1):
            got = ns.nm_mask(torch.from_numpy(w).to(torch.float64), pattern, axis).numpy()
            np.testing.assert_array_equal(got, nm.mask(w, pattern, axis))


def test_layer_masks_use_accel_layouts():
    """Linear (out, in) groups along in; Conv2d groups along K flattened as (KH, KW, Cin)."""
    rng = np.random.default_rng(3)
    p = nm.NM(2, 8)
    lin = ints(rng, (16, 24))  # torch (out, in); accel (in, out) = W^T
    np.testing.assert_array_equal(ns.forward_mask(lin, p).numpy().T, nm.mask(lin.numpy().T, p, 0))
    np.testing.assert_array_equal(ns.backward_mask(lin, p).numpy().T, nm.mask(lin.numpy().T, p, 1))
    conv = ints(rng, (16, 8, 3, 3))  # torch (Cout, Cin, KH, KW)
    w2 = conv.numpy().transpose(2, 3, 1, 0).reshape(72, 16)  # accel (KH*KW*Cin, Cout)
    for fn, axis in ((ns.forward_mask, 0), (ns.backward_mask, 1)):
        got = fn(conv, p).numpy().transpose(2, 3, 1, 0).reshape(72, 16)
        np.testing.assert_array_equal(got, nm.mask(w2, p, axis))
    with pytest.raises(Exception, match="does not divide"):
        ns.forward_mask(ints(rng, (8, 12)), p)


# -- gradients --------------------------------------------------------------------------------


def _bdwp(pattern=None):
    return ns.NMConfig(pattern or nm.NM(2, 8), "bdwp")


def test_bdwp_linear_backward_uses_the_transposed_mask():
    rng = np.random.default_rng(0)
    layer = ns.NMLinear(32, 16, config=_bdwp(), dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(ints(rng, (16, 32)))
        layer.bias.copy_(ints(rng, (16,)))
    w = layer.weight.detach()
    mask_f, mask_t = ns.forward_mask(w, nm.NM(2, 8)), ns.backward_mask(w, nm.NM(2, 8))
    x = (torch.randn(5, 32, dtype=torch.float64)).requires_grad_()
    dy = torch.randn(5, 16, dtype=torch.float64)
    y = layer(x)
    assert torch.equal(y, F.linear(x, w * mask_f, layer.bias.detach()))
    y.backward(dy)
    assert torch.equal(x.grad, dy @ (w * mask_t))  # the W^T-masked weight, exactly
    assert not torch.allclose(x.grad, dy @ (w * mask_f))  # not the forward-masked one
    assert torch.equal(layer.weight.grad, dy.T @ x.detach())  # dense weight update
    assert torch.equal(layer.bias.grad, dy.sum(0))
    assert not torch.equal(mask_f, mask_t)


def test_bdwp_conv_backward_uses_the_transposed_mask():
    rng = np.random.default_rng(1)
    p = nm.NM(1, 4)
    layer = ns.NMConv2d(8, 16, 3, 2, 1, config=_bdwp(p), dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(ints(rng, (16, 8, 3, 3)))
        layer.bias.copy_(ints(rng, (16,)))
    w = layer.weight.detach()
    mask_f, mask_t = ns.forward_mask(w, p), ns.backward_mask(w, p)
    x = ints(rng, (3, 8, 7, 7)).requires_grad_()  # integers: every sum is exact
    y = layer(x)
    dy = ints(rng, y.shape)
    y.backward(dy)

    def autograd_dx(weight):
        x2 = x.detach().clone().requires_grad_()
        F.conv2d(x2, weight, None, 2, 1).backward(dy)
        return x2.grad

    assert torch.equal(y, F.conv2d(x.detach(), w * mask_f, layer.bias.detach(), 2, 1))
    assert torch.equal(x.grad, autograd_dx(w * mask_t))
    assert not torch.equal(x.grad, autograd_dx(w * mask_f))
    w2 = w.clone().requires_grad_()
    F.conv2d(x.detach(), w2, None, 2, 1).backward(dy)
    assert torch.equal(layer.weight.grad, w2.grad)  # dense weight update


def test_srste_straight_through_with_decay():
    rng = np.random.default_rng(2)
    p, lam = nm.NM(2, 4), 0.5
    layer = ns.NMLinear(8, 4, bias=False, config=ns.NMConfig(p, "srste", decay=lam))
    layer.double()
    with torch.no_grad():
        layer.weight.copy_(ints(rng, (4, 8)))
    w = layer.weight.detach()
    mask = ns.forward_mask(w, p)
    x = torch.randn(3, 8, dtype=torch.float64)
    dy = torch.randn(3, 4, dtype=torch.float64)
    y = layer(x)
    assert torch.equal(y, x @ (w * mask).T)
    y.backward(dy)
    # float64 gradient: the decay term is summed in another order than autograd's
    torch.testing.assert_close(layer.weight.grad, dy.T @ x + lam * (~mask) * w, rtol=0, atol=1e-15)


def test_sparsify_replaces_layers_and_keeps_weights():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8, 8))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 4, 3, 3)
    before = net(x)
    ns.sparsify(net, ns.NMConfig(nm.NM(2, 4), "bdwp"))
    assert isinstance(net[0], ns.NMConv2d) and isinstance(net[2], ns.NMLinear)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    conv_w = net[0].inference_weight()
    assert nm.violations(ns.as_matrix(conv_w).numpy(), nm.NM(2, 4), 0) == 0
    assert conv_w.count_nonzero() == conv_w.numel() // 2
    after = net(x)
    assert before.shape == after.shape and not torch.equal(before, after)


# -- training and export ---------------------------------------------------------------------


@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_qat_forward_is_the_integer_graph_and_masks_match(net):
    p = nm.NM(2, 4)
    model, _ = ns.fit(net, p, "bdwp", epochs=1, seed=5, n_train=256)
    weights = model.export_int()
    g = zm.graph(net, weights, p, "bdwp")
    x, _ = data.load("test", net)
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    raw = reference.quantize_inputs(g, "image", x)
    np.testing.assert_array_equal(np.ldexp(logits, zm.LOGITS.type.frac), reference.predict(g, raw))
    for layer in zm.NETS[net].layers:
        w_int = ns.quantize_raw(ns.as_matrix(model.layers[layer.name].weight), ns.WEIGHT_QUANT)
        exported = weights[f"{layer.name}_w"].reshape(-1, layer.cout)
        if layer.sparse:
            # the torch mask on the quantized weight is accel.nm.mask of the same integers
            keep = nm.mask(w_int.numpy(), p, 0)
            np.testing.assert_array_equal(exported, w_int.numpy() * keep)
        else:
            np.testing.assert_array_equal(exported, w_int.numpy())


def _rows():
    return [(r["net"], r["pattern"], r["method"]) for r in METRICS["rows"]]


def test_every_table_row_is_shipped():
    want = {(n, p or "dense", m) for n in zm.NETS for m, p in ns.TABLE}
    assert set(_rows()) == want and len(_rows()) == len(want)
    khot = json.loads((zm.WEIGHTS_DIR / "metrics_khot.json").read_text())["rows"]
    shipped = {r["file"].removesuffix(".npz") for r in [*METRICS["rows"], *khot]}
    assert set(zm.available()) == shipped
    # the seed study (README) retrained every row; its seed 0 is the shipped run
    study = {(s["net"], s["pattern"], s["method"]): s for s in METRICS["seed_study"]}
    for r in METRICS["rows"]:
        s = study[r["net"], r["pattern"], r["method"]]
        assert s["seeds"][0] == r["seed"] == 0 and s["accuracy"][0] == r["accuracy"]


@pytest.mark.parametrize("row", METRICS["rows"], ids=lambda r: r["file"])
def test_shipped_model_builds_and_reproduces_its_accuracy(row):
    g = zm.build(net=row["net"], pattern=row["pattern"], method=row["method"])
    x, y = data.load("test", row["net"])
    acc, correct = ns.accuracy(g, x, y)
    assert (acc, correct) == (row["accuracy"], row["correct"])
    pattern = zm.parse_pattern(row["pattern"])
    for layer in zm.NETS[row["net"]].layers:
        node = g.node(layer.name)
        w2 = node.params["weight"].data.reshape(-1, layer.cout)
        if pattern is None or not layer.sparse:
            assert node.attrs.get("nm") is None and node.attrs.get("nm_t") is None
            continue
        assert node.attrs["nm"] == pattern  # parsed once when the node was added
        assert nm.violations(w2, pattern, 0) == 0  # the declared forward pattern holds
        holds_t = nm.violations(w2, pattern, 1) == 0
        assert (node.attrs.get("nm_t") is not None) == holds_t  # nm_t only where it holds
        assert np.count_nonzero(w2) <= w2.size * pattern.n // pattern.m
    if pattern is not None:  # the compressed weights give the same integers
        raw = reference.quantize_inputs(g, "image", x[:64])
        np.testing.assert_array_equal(
            reference.run(g, raw, compressed=True)[g.outputs[0]], reference.predict(g, raw)
        )


def test_default_build_and_zoo_entry():
    m = zoo.get("nm_sparse")
    g = m.build()
    assert g.meta["net"] == "mlp" and g.meta["pattern"] == "2:8" and g.meta["method"] == "bdwp"
    assert [n.attrs.get("nm") for n in g.nodes if n.op == "dense"] == [
        nm.NM(2, 8),
        nm.NM(2, 8),
        None,
    ]
    x = m.make_inputs(20, 0)
    assert x.shape == (20, 64)
    assert reference.predict(g, reference.quantize_inputs(g, "image", x)).shape == (20, 10)
    assert zm.build(net="cnn", pattern="dense").meta["method"] == "dense"
    with pytest.raises(Exception, match="no shipped nm_sparse weights"):
        zm.build(pattern="4:8")


# -- command line ------------------------------------------------------------------------------


def test_cli_trains_one_row(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "nm_sparse", "--nm", "2:8", "--epochs", "1", "--n-train", "300", "-o"]
    assert main([*args, str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (row,) = doc["rows"]
    assert (row["net"], row["pattern"], row["method"], row["epochs"]) == ("mlp", "2:8", "bdwp", 1)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "mlp_2-8_bdwp.npz"]
    g = zm.build(weights_path=out / "mlp_2-8_bdwp.npz")
    assert ns.accuracy(g, *data.load("test"))[1] == row["correct"]
    cnn = tmp_path / "cnn"
    argv = ["train", "nm_sparse", "--net", "cnn", "--method", "srste", "--nm", "1:4"]
    assert main([*argv, "--epochs", "1", "--n-train", "128", "-o", str(cnn), "--json"]) == 0
    assert (cnn / "cnn_1-4_srste.npz").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nm", "9:8"], "N must not exceed M"),
        (["--nm", "2:3"], "M=3 does not divide the reduction K (64) of mlp layer fc1"),
        (["--nm", "two"], "must look like '2:8'"),
        (["--net", "resnet"], "unknown net 'resnet'"),
        (["--method", "magic"], "unknown method 'magic'"),
        (["--method", "dense", "--nm", "2:8"], "method dense takes no N:M pattern"),
        (["--method", "srste", "--nm", "dense"], "method srste needs an N:M pattern"),
    ],
)
def test_bad_options_are_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "o"
    assert main(["train", "nm_sparse", *args, "--epochs", "1", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("accel: error:") and message in err[0], err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_bad_nm_in_a_real_process(tmp_path):
    cli = [sys.executable, "-m", "accel.cli", "train"]
    out = ["-o", str(tmp_path / "o")]
    r = subprocess.run(
        [*cli, "nm_sparse", "--nm", "9:8", *out], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == ["accel: error: N:M pattern 9:8: N must not exceed M"]
    r = subprocess.run(
        [*cli, "autoencoder", "--nm", "2:8", *out], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 2 and "--nm is not an option of model autoencoder" in r.stderr
