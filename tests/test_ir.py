"""Graph IR: typing, save/load round trips, and errors that name the problem."""

import json

import numpy as np
import pytest
from conftest import random_weights

from accel import reference
from accel.errors import AccelError
from accel.fixed import FixedType, Quant
from accel.ir import Graph, Param, load, save
from accel.zoo.autoencoder.model import encoder_graph


def test_save_load_round_trip_is_exact(tmp_path, random_graph):
    jpath, _ = save(random_graph, tmp_path / "ae")
    g2 = load(tmp_path / "ae")
    assert json.loads(jpath.read_text()) == json.loads(save(g2, tmp_path / "again")[0].read_text())
    for n1, n2 in zip(random_graph.nodes, g2.nodes, strict=True):
        for k in n1.params:
            assert np.array_equal(n1.params[k].data, n2.params[k].data)
            assert n1.params[k].type == n2.params[k].type
    x = np.random.default_rng(0).integers(-512, 512, (200, 48))
    assert np.array_equal(reference.predict(random_graph, x), reference.predict(g2, x))


def test_saved_json_spells_out_types(tmp_path, random_graph):
    doc = json.loads(save(random_graph, tmp_path / "ae")[0].read_text())
    conv = next(n for n in doc["nodes"] if n["op"] == "conv2d")
    assert conv["attrs"]["acc"] == {"fixed": {"width": 19, "frac": 10, "signed": True}}
    q = next(n for n in doc["nodes"] if n["name"] == "latent")["attrs"]["quant"]["quant"]
    assert q == {"width": 9, "frac": 8, "signed": False, "rounding": "RND", "overflow": "SAT"}


def test_tampered_file_is_caught(tmp_path, random_graph):
    jpath, _ = save(random_graph, tmp_path / "ae")
    doc = json.loads(jpath.read_text())
    doc["nodes"][1]["output"]["type"]["width"] = 12
    jpath.write_text(json.dumps(doc))
    with pytest.raises(AccelError, match="node conv: saved output"):
        load(tmp_path / "ae")


@pytest.mark.parametrize(
    ("content", "match"),
    [("{not json", "cannot read graph"), ('{"format": "other"}', "is not an accel graph")],
)
def test_malformed_files(tmp_path, random_graph, content, match):
    save(random_graph, tmp_path / "ae")
    (tmp_path / "ae.json").write_text(content)
    with pytest.raises(AccelError, match=match):
        load(tmp_path / "ae")


def test_missing_file(tmp_path):
    with pytest.raises(AccelError, match="not found"):
        load(tmp_path / "nothing")


def test_unknown_op_and_bad_shapes():
    g = Graph("g")
    x = g.add_input("x", (4,), Quant(FixedType(8, 0)))
    with pytest.raises(AccelError, match="unsupported op 'softmax'"):
        g.add("softmax", x)
    w = Param(np.zeros((5, 2), np.int64), FixedType(4, 0))
    with pytest.raises(AccelError, match=r"dense expects input shape \(5,\)"):
        g.add("dense", x, name="fc", params={"weight": w})


def test_bias_finer_than_accumulator_refused():
    g = Graph("g")
    x = g.add_input("x", (2,), Quant(FixedType(8, 0)))
    params = {
        "weight": Param(np.ones((2, 1), np.int64), FixedType(4, 0)),
        "bias": Param(np.ones(1, np.int64), FixedType(4, 2)),
    }
    with pytest.raises(AccelError, match="node fc: bias has 2 fraction bits"):
        g.add("dense", x, name="fc", params=params)


def test_params_must_fit_their_type():
    with pytest.raises(AccelError, match="do not fit"):
        Param(np.array([40]), FixedType(6, 4))
    with pytest.raises(AccelError, match="must be integers"):
        Param(np.array([0.5]), FixedType(6, 4))


def test_autoencoder_graph_shape_and_size():
    g = encoder_graph(random_weights(0))
    assert g.n_params() == 3 * 3 * 1 * 8 + 8 + 128 * 16 + 16 == 2144
    assert g.tensors[g.outputs[0]].shape == (16,)
    assert g.tensors[g.outputs[0]].type == FixedType(9, 8, signed=False)
