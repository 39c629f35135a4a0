"""The hls4ml flow: its C simulation equals the reference bit for bit; the project is complete."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import random_weights

from accel import reference, zoo
from accel.errors import AccelError
from accel.fixed import FixedType, Quant
from accel.ir import Graph, Param
from accel.sim.stimulus import edge_inputs, random_inputs
from accel.zoo.autoencoder.model import INPUT, WEIGHT, encoder_graph

pytest.importorskip("hls4ml")
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")

from accel.flows import hls4ml as flow  # noqa: E402


def stimulus(g: Graph, n_showers: int, n_random: int, seed: int) -> np.ndarray:
    """Edge rows, full-range random raw rows (they saturate), synthetic showers."""
    showers = zoo.get("autoencoder").make_inputs(n_showers, seed)
    return np.concatenate(
        [
            edge_inputs(g),
            random_inputs(g, n_random, seed + 1),
            reference.quantize_inputs(g, "charges", showers),
        ]
    )


def assert_saturating(g: Graph, x: np.ndarray) -> None:
    """Both requantizers reach their maximum on some samples and zero on others."""
    values = reference.run(g, x)
    for t in ("conv_q", "latent"):
        assert (values[t] == g.tensors[t].type.max_int).any(), t
        assert (values[t] == 0).any(), t


def test_trained_autoencoder_bit_exact(trained_graph):
    g = trained_graph
    x = stimulus(g, 8000, 2000, seed=2)
    assert len(x) >= 10_000
    assert_saturating(g, x)
    y = flow.predict(g, x)
    ref = reference.predict(g, x)
    assert y.dtype == np.int64 and y.shape == ref.shape == (len(x), 16)
    assert int((y != ref).sum()) == 0
    # The rows of edge_inputs: all zero, all max, all min, alternating, a lone max.
    assert np.array_equal(y[:5], ref[:5])


def test_extreme_weights_bit_exact():
    g = encoder_graph(random_weights(5, extreme=True))
    x = stimulus(g, 5000, 5000, seed=7)
    assert_saturating(g, x)
    assert np.array_equal(flow.predict(g, x), reference.predict(g, x))


def test_compiled_project_is_cached(trained_graph):
    x = edge_inputs(trained_graph)
    flow.predict(trained_graph, x)  # built (or found) by the test above
    libs = sorted(flow.cache_root().glob("hls4ml/*/project/firmware/*.so"))
    flow._LOADED.clear()  # a new process would start here
    assert np.array_equal(flow.predict(trained_graph, x), reference.predict(trained_graph, x))
    assert sorted(flow.cache_root().glob("hls4ml/*/project/firmware/*.so")) == libs
    assert flow.predict(trained_graph, x[:0]).shape == (0, 16)


def test_reuse_factor_in_written_config(trained_graph, tmp_path):
    import yaml

    prj = flow.write_project(trained_graph, tmp_path / "prj", reuse=4, backend="Vivado")
    params = (prj / "firmware" / "parameters.h").read_text()
    factors = re.findall(r"reuse_factor = (\d+);", params)
    assert len(factors) >= 4 and set(factors) == {"4"}  # conv (+ its mult config), relus, dense
    cfg = yaml.safe_load((prj / "hls4ml_config.yml").read_text())
    assert cfg["Backend"] == "Vivado" and cfg["OutputDir"] == str(prj)
    assert cfg["HLSConfig"]["Model"]["ReuseFactor"] == 4
    assert cfg["HLSConfig"]["Model"]["Strategy"] == "Latency"
    assert {c["ReuseFactor"] for c in cfg["HLSConfig"]["LayerName"].values()} == {4}
    manifest = json.loads((prj / flow.MANIFEST).read_text())
    assert manifest["options"]["reuse"] == 4
    assert manifest["multiplier_limit"] == {
        **flow.multiplier_count(trained_graph, reuse=4),
        "total": sum(flow.multiplier_count(trained_graph, reuse=4).values()),
    }


def test_project_is_complete_and_runs(trained_graph, tmp_path):
    g = trained_graph
    prj = flow.write_project(g, tmp_path / "prj")
    fw = prj / "firmware"
    for f in ("build_prj.tcl", "build_lib.sh", "autoencoder_test.cpp", "README.md"):
        assert (prj / f).is_file(), f
    for f in ("autoencoder.cpp", "autoencoder.h", "parameters.h", "defines.h"):
        assert (fw / f).is_file(), f
    assert (fw / "nnet_utils" / "nnet_conv2d_latency.h").is_file()
    assert (fw / "ap_types" / "ap_fixed.h").is_file()
    assert not list(prj.glob("firmware/*.so"))  # written, not compiled
    assert not list(tmp_path.glob(".prj.*"))  # no temporary left behind

    # Every precision is explicit, rounding and saturation included.
    defines = (fw / "defines.h").read_text()
    for t in (
        "ap_fixed<10,4,AP_RND,AP_SAT,0> input_t",
        "ap_fixed<19,9> conv_accum_t",
        "ap_fixed<6,2> conv_weight_t",
        "ap_fixed<6,2> conv_bias_t",
        "ap_ufixed<11,3,AP_RND,AP_SAT,0>",
        "ap_fixed<25,13> dense_accum_t",
        "ap_ufixed<9,1,AP_RND,AP_SAT,0> result_t",
    ):
        assert t in defines, t
    params = (fw / "parameters.h").read_text()
    assert all(f"pad_{s} = {p};" in params for s, p in [("top", 0), ("left", 0), ("bottom", 1)])

    # The weights are the graph's, exactly.
    for layer, idx in (("conv", 2), ("dense", 5)):
        for kind, short in (("weight", "w"), ("bias", "b")):
            p = g.node(layer).params[kind]
            text = (fw / "weights" / f"{short}{idx}.txt").read_text()
            values = np.array([float(v) for v in text.split(",")])
            assert np.array_equal(values, p.type.to_float(p.data.ravel()))

    manifest = json.loads((prj / flow.MANIFEST).read_text())
    assert manifest["host_gather"]["index"] == g.node("arrange").attrs["index"]
    assert manifest["project_input"]["type"] == "ap_fixed<10,4,AP_RND,AP_SAT>"
    assert "gather" in (prj / "README.md").read_text()
    with pytest.raises(AccelError, match="not an empty directory"):
        flow.write_project(g, prj)

    # The testbench a Vitis C simulation runs, built with g++ here: its outputs
    # (printed to 6 digits) are the reference's.
    exe = prj / "tb"
    subprocess.run(
        ["g++", "-O1", "-std=c++17", "-Ifirmware/ap_types", "-Ifirmware",
         f'-DWEIGHTS_DIR="{fw / "weights"}"', "autoencoder_test.cpp", "firmware/autoencoder.cpp",
         "-o", str(exe)],
        cwd=prj, check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run([str(exe)], cwd=prj, check=True, capture_output=True)
    got = np.loadtxt(prj / "tb_data" / "csim_results.log")
    want = np.loadtxt(prj / "tb_data" / "tb_output_predictions.dat")
    assert got.shape == want.shape == (16, 16)
    assert np.array_equal(np.rint(np.ldexp(got, 8)), np.ldexp(want, 8))


def test_multiplier_count_skips_zero_weights(trained_graph):
    w_conv = trained_graph.node("conv").params["weight"].data
    w_dense = trained_graph.node("dense").params["weight"].data
    assert flow.multiplier_count(trained_graph) == {
        "conv": int(np.count_nonzero(w_conv)),
        "dense": int(np.count_nonzero(w_dense)),
    }
    r4 = flow.multiplier_count(trained_graph, reuse=4)
    assert r4["dense"] == -(-w_dense.size // 4) - (w_dense.size - np.count_nonzero(w_dense)) // 4


def _mid_gather_graph() -> Graph:
    g = Graph("midgather")
    x = g.add_input("x", (4,), INPUT)
    w = Param(np.eye(4, dtype=np.int64), WEIGHT)
    x = g.add("dense", x, name="d", params={"weight": w})
    x = g.add("gather", x, name="shuffle", index=[1, 0, 3, 2])
    g.mark_output(x)
    return g


def test_unsupported_ops_are_named(tmp_path):
    with pytest.raises(AccelError, match="node shuffle: op 'gather'"):
        flow.predict(_mid_gather_graph(), np.zeros((1, 4), np.int64))
    g = zoo.get("autoencoder").build()
    g.nodes[-1].op = "softmax"  # an op with no hls4ml mapping
    with pytest.raises(AccelError, match="node latent: op 'softmax' has no hls4ml mapping"):
        flow.write_project(g, tmp_path / "p")
    assert not list(tmp_path.iterdir())


def test_bad_options(trained_graph, tmp_path):
    with pytest.raises(AccelError, match="backend"):
        flow.write_project(trained_graph, tmp_path / "p", backend="Quartus")
    with pytest.raises(AccelError, match="strategy"):
        flow.predict(trained_graph, edge_inputs(trained_graph), strategy="Fast")
    # hls4ml would silently swap in another factor; we refuse and list the valid ones.
    with pytest.raises(AccelError, match=r"reuse factor 4 is not valid for layer conv .*1, 3, 9"):
        flow.write_project(trained_graph, tmp_path / "p", strategy="Resource", reuse=4)
    with pytest.raises(AccelError, match="53 bits"):
        g = Graph("wide")
        x = g.add_input("x", (1,), Quant(FixedType(2, 0)))
        w = Param(np.ones((1, 1), np.int64), FixedType(54, 0))
        g.mark_output(g.add("dense", x, name="d", params={"weight": w}))
        flow.predict(g, np.zeros((1, 1), np.int64))
    assert not list(tmp_path.iterdir())
