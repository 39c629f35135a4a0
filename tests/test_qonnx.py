"""QONNX export and import: qonnx's own execution must give our integers, exactly."""

import copy
import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import random_weights
from onnx import TensorProto, helper, numpy_helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.cleanup import cleanup_model

from accel import reference, zoo
from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding, quantize
from accel.ir import Graph, Param
from accel.ir.io import to_json
from accel.qonnx import export, float32_exact, load
from accel.sim.stimulus import edge_inputs, random_inputs
from accel.zoo.autoencoder.model import INPUT, encoder_graph

DATA = Path(__file__).parent / "data"
FOREIGN = DATA / "foreign_qonnx.onnx"


def _generator():
    spec = importlib.util.spec_from_file_location(
        "make_foreign_qonnx", DATA / "make_foreign_qonnx.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_qonnx(model, x: np.ndarray) -> list[np.ndarray]:
    """qonnx's execute_onnx on a batch (the batch axis is set to len(x)), outputs as float64."""
    model = copy.deepcopy(model) if isinstance(model, onnx.ModelProto) else onnx.load(model)
    for vi in (*model.graph.input, *model.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = len(x)
    del model.graph.value_info[:]
    wrapped = ModelWrapper(model).transform(InferShapes())
    x32 = x.astype(np.float32)
    assert np.array_equal(x32, x), "test inputs must be float32 values"
    out = execute_onnx(wrapped, {model.graph.input[0].name: x32})
    return [out[o.name].astype(np.float64) for o in model.graph.output]


def to_raw(y: np.ndarray, t: FixedType) -> np.ndarray:
    raw = np.ldexp(y, t.frac)
    assert np.array_equal(raw, np.round(raw)), "qonnx output is off the fixed-point grid"
    return raw.astype(np.int64)


def reference_outputs(g: Graph, x: np.ndarray) -> list[np.ndarray]:
    values = reference.run(g, reference.quantize_inputs(g, g.inputs[0], x))
    return [values[o] for o in g.outputs]


def assert_qonnx_matches(model, g: Graph, x: np.ndarray) -> None:
    ys = run_qonnx(model, x)
    for y, name, want in zip(ys, g.outputs, reference_outputs(g, x), strict=True):
        got = to_raw(y, g.tensors[name].type)
        assert got.shape == want.shape
        bad = np.argwhere(got != want)
        assert bad.size == 0, f"{name}: {len(bad)} mismatches, first at {bad[0]}"


# -- (a) the trained autoencoder, exported, run by qonnx -----------------------------------
def autoencoder_inputs(g: Graph) -> np.ndarray:
    """~2,600 float32-exact rows: edges, uniform raw values, showers, ties and near-ties."""
    rng = np.random.default_rng(2024)
    lsb = INPUT.type.lsb
    raw = np.concatenate([edge_inputs(g), random_inputs(g, 1000, 7)])
    ties = (rng.integers(-530, 530, (200, 48)) + 0.5) * lsb  # incl. beyond the range
    # just below ties whose rounded-up neighbour is a power of two: where adding half an
    # LSB in float32 would round up across the boundary (see the next test)
    k = np.array([0, 1, 3, 7, 15, 31, 63, 127, 255])
    near = np.nextafter(np.float32((k + 0.5) * lsb), np.float32(0))
    near = rng.choice(np.concatenate([near, -near]), (200, 48))
    rows = [
        np.ldexp(raw.astype(np.float64), -INPUT.type.frac),
        zoo.get("autoencoder").make_inputs(600, 11),
        ties,
        near,
        np.nextafter(ties.astype(np.float32), np.float32(np.inf)),
        rng.uniform(-9, 9, (200, 48)),
    ]
    return np.concatenate(rows).astype(np.float32).astype(np.float64)


def test_rnd_input_needs_the_fine_floor():
    """Why the export floors inputs onto a finer grid first: a bare Add of half an LSB
    rounds in float32 just below ties, and floor then goes one LSB too far."""
    k = np.array([0, 1, 3, 7, 15], dtype=np.float32)
    x = np.nextafter((k + np.float32(0.5)) * np.float32(INPUT.type.lsb), np.float32(0))
    naive = np.floor((x + np.float32(INPUT.type.lsb / 2)) * np.float32(2**INPUT.type.frac))
    assert np.any(naive != quantize(x.astype(np.float64), INPUT))


@pytest.mark.parametrize("weights", ["trained", "extreme"])
def test_autoencoder_export_runs_exactly_in_qonnx(tmp_path, weights):
    g = zoo.get("autoencoder").build() if weights == "trained" else None
    g = g or encoder_graph(random_weights(3, extreme=True))
    x = autoencoder_inputs(g)
    assert len(x) > 2000
    path = export(g, tmp_path / "ae.onnx", batch=len(x))
    model = onnx.load(path)
    onnx.checker.check_model(model)
    quants = [n for n in model.graph.node if n.op_type == "Quant"]
    assert {n.domain for n in quants} == {"qonnx.custom_op.general"}
    assert float32_exact(g)  # so the comparison below must be exact, not close
    assert_qonnx_matches(model, g, x)
    # the inputs exercise rounding: RND and RND_CONV disagree on the ties
    conv = Quant(INPUT.type, Rounding.RND_CONV, Overflow.SAT)
    assert np.any(quantize(x, INPUT) != quantize(x, conv))
    assert len(np.unique(reference.predict(g, quantize(x, INPUT)))) > 100


# -- (b) round trips -------------------------------------------------------------------------
def assert_same_graph(g1: Graph, g2: Graph, same_names: bool = True) -> None:
    if same_names:
        assert to_json(g2) == to_json(g1)
    assert [(n.op, g2.tensors[n.outputs[0]].type) for n in g2.nodes] == [
        (n.op, g1.tensors[n.outputs[0]].type) for n in g1.nodes
    ]
    assert list(g2.input_quant.values()) == list(g1.input_quant.values())
    for n1, n2 in zip(g1.nodes, g2.nodes, strict=True):
        assert n1.params.keys() == n2.params.keys()
        for k in n1.params:
            assert np.array_equal(n1.params[k].data, n2.params[k].data)
            assert n1.params[k].type == n2.params[k].type


def test_round_trip_gives_the_same_graph(tmp_path, trained_graph):
    g2 = load(export(trained_graph, tmp_path / "ae.onnx"))
    assert_same_graph(trained_graph, g2)
    x = autoencoder_inputs(trained_graph)
    for a, b in zip(reference_outputs(trained_graph, x), reference_outputs(g2, x), strict=True):
        assert np.array_equal(a, b)


def test_round_trip_survives_qonnx_cleanup(tmp_path, random_graph):
    """hls4ml and FINN run qonnx's cleanup first; it renames and reorders, nothing more."""
    cleaned = cleanup_model(ModelWrapper(str(export(random_graph, tmp_path / "ae.onnx"))))
    cleaned.save(str(tmp_path / "clean.onnx"))
    g2 = load(tmp_path / "clean.onnx")
    assert_same_graph(random_graph, g2, same_names=False)
    x = autoencoder_inputs(random_graph)
    assert np.array_equal(reference_outputs(random_graph, x)[0], reference_outputs(g2, x)[0])


def mixed_graph() -> Graph:
    """Multi-channel 'valid' conv, signed RND (negative ties), TRN, a 3-D graph output."""
    rng = np.random.default_rng(5)
    g = Graph("mixed")
    x = g.add_input("img", (5, 5, 3), Quant(FixedType(8, 4), Rounding.RND_CONV, Overflow.SAT))
    w = Param(rng.integers(-8, 8, (3, 3, 3, 4)), FixedType(4, 3))
    x = g.add("conv2d", x, name="conv", stride=1, padding="valid", params={"weight": w})
    fmap = g.add(
        "requantize", x, name="fmap", quant=Quant(FixedType(6, 3), Rounding.RND, Overflow.SAT)
    )
    x = g.add("reshape", fmap, name="flat", shape=(36,))
    params = {"weight": Param(rng.integers(-8, 8, (36, 5)), FixedType(4, 2)),
              "bias": Param(rng.integers(-8, 8, 5), FixedType(4, 2))}  # fmt: skip
    x = g.add("dense", x, name="fc", params=params)
    x = g.add("requantize", x, name="out", quant=Quant(FixedType(7, 1), Rounding.TRN, Overflow.SAT))
    g.mark_output(x, fmap)
    return g


def test_mixed_graph_exports_and_round_trips(tmp_path):
    g = mixed_graph()
    x = np.random.default_rng(1).normal(0, 3, (500, 5, 5, 3)).astype(np.float32).astype(np.float64)
    x[:100] = np.round(x[:100] * 32) / 32  # ties of the 1/16 input grid
    path = export(g, tmp_path / "mixed.onnx", batch=len(x))
    assert float32_exact(g)
    assert_qonnx_matches(onnx.load(path), g, x)
    g2 = load(path)
    assert_same_graph(g, g2)
    out = reference_outputs(g, x)
    assert np.any(out[1] < 0) and len(np.unique(out[0])) > 20
    for a, b in zip(out, reference_outputs(g2, x), strict=True):
        assert np.array_equal(a, b)


def test_float32_exactness_is_judged_from_the_weights():
    g = Graph("wide")
    x = g.add_input("x", (64,), Quant(FixedType(16, 8), Rounding.TRN, Overflow.SAT))
    w = Param(np.full((64, 2), 2047), FixedType(12, 4))
    g.mark_output(g.add("dense", x, name="fc", params={"weight": w}))
    assert not float32_exact(g)  # 64 * 2**15 * 2047 > 2**24


def test_wrap_overflow_is_refused(tmp_path):
    g = Graph("wrap")
    x = g.add_input("x", (4,), Quant(FixedType(8, 4), Rounding.TRN, Overflow.SAT))
    g.mark_output(g.add("requantize", x, name="narrow", quant=Quant(FixedType(4, 2))))
    with pytest.raises(AccelError, match=r"^node narrow: WRAP overflow has no QONNX form"):
        export(g, tmp_path / "w.onnx")


# -- (c) models accel did not write -----------------------------------------------------------
def foreign_inputs(n: int, shape: tuple[int, ...], lsb: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1.5, (n, *shape))
    x[: n // 5] = (rng.integers(-300, 300, (n // 5, *shape)) + 0.5) * lsb  # ties
    x[n // 5 : n // 4] *= 40  # saturation
    return x.astype(np.float32).astype(np.float64)


def test_foreign_model_matches_qonnx():
    g = load(FOREIGN)
    assert g.input_quant[g.inputs[0]] == Quant(FixedType(8, 5), Rounding.RND_CONV, Overflow.SAT)
    assert [n.op for n in g.nodes] == [
        "gather", "conv2d", "relu", "requantize", "gather", "dense", "relu", "requantize",
    ]  # fmt: skip
    conv = g.nodes[1]
    assert (conv.attrs["stride"], conv.attrs["padding"]) == (2, "valid")  # pads as a gather
    assert np.count_nonzero(np.asarray(g.nodes[0].attrs["index"]) == -1) == 8 * 8 - 6 * 6
    assert conv.params["weight"].type == FixedType(4, 6)
    assert np.abs(conv.params["weight"].data).max() <= 7  # narrow range
    x = foreign_inputs(3000, (1, 6, 6), 2**-5, seed=9)
    assert_qonnx_matches(FOREIGN, g, x)
    out = reference.predict(g, reference.quantize_inputs(g, g.inputs[0], x))
    assert len(np.unique(out)) > 30


def test_foreign_fixture_is_what_its_script_writes():
    assert onnx.load(FOREIGN) == _generator().build()


def qkeras_style_model(batch: int = 1) -> onnx.ModelProto:
    """NHWC input transposed before its Quant, SAME_UPPER conv with a separate Add bias,
    Mul by 1/2, HALF_UP on an unsigned Quant, NHWC flatten, per-channel 2**k weight
    scales, a plain float bias, FLOOR rounding."""
    rng = np.random.default_rng(3)
    inits = []

    def c(name, value, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def q(x, out, scale, bits, signed, mode):
        args = [x, c(f"{out}_s", scale), c(f"{out}_z", 0.0), c(f"{out}_b", bits)]
        attrs = {"signed": signed, "narrow": 0, "rounding_mode": mode}
        return helper.make_node(
            "Quant", args, [out], name=out, domain="qonnx.custom_op.general", **attrs
        )

    node = helper.make_node
    nodes = [
        node("Transpose", ["in"], ["in_nchw"], name="to_nchw", perm=[0, 3, 1, 2]),
        q("in_nchw", "q_in", 2**-4, 8, 1, "FLOOR"),
        q(c("w1", rng.normal(0, 0.3, (3, 2, 3, 3))), "w1_q", 2**-3, 4, 1, "ROUND"),
        node(
            "Conv", ["q_in", "w1_q"], ["conv"], name="conv", strides=[2, 2], auto_pad="SAME_UPPER"
        ),
        node(
            "Add", ["conv", c("b1", rng.integers(-8, 8, (1, 3, 1, 1)) / 8)], ["conv_b"], name="bias"
        ),
        node("Relu", ["conv_b"], ["relu"], name="relu"),
        node("Mul", ["relu", c("half", 0.5)], ["scaled"], name="scale"),
        q("scaled", "act", 2**-3, 6, 0, "HALF_UP"),
        node("Transpose", ["act"], ["act_nhwc"], name="to_nhwc", perm=[0, 2, 3, 1]),
        node("Reshape", ["act_nhwc", c("shape", [-1, 27], np.int64)], ["flat"], name="flatten"),
        q(
            c("w2", rng.normal(0, 0.3, (27, 4))),
            "w2_q",
            [[2**-4, 2**-5, 2**-4, 2**-3]],
            5,
            1,
            "ROUND",
        ),
        node("MatMul", ["flat", "w2_q"], ["mm"], name="fc"),
        node("Add", ["mm", c("b2", rng.integers(-64, 64, 4) / 64)], ["fc_b"], name="fc_bias"),
        q("fc_b", "out", 2**-4, 10, 1, "FLOOR"),
    ]
    graph = helper.make_graph(
        nodes,
        "qkeras_style",
        [helper.make_tensor_value_info("in", TensorProto.FLOAT, [batch, 5, 5, 2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 4])],
        inits,
    )
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("qonnx.custom_op.general", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def test_qkeras_style_model_matches_qonnx(tmp_path):
    model = qkeras_style_model()
    onnx.save(model, tmp_path / "qk.onnx")
    g = load(tmp_path / "qk.onnx")
    assert g.tensors[g.inputs[0]].shape == (5, 5, 2)
    # the NHWC input and flatten need no gather: the transposes cancel
    ops = ["conv2d", "relu", "requantize", "reshape", "dense", "requantize"]
    assert [n.op for n in g.nodes] == ops
    assert g.nodes[0].attrs["padding"] == "same"
    assert g.nodes[2].attrs["quant"].rounding is Rounding.RND  # HALF_UP, unsigned
    x = foreign_inputs(2000, (5, 5, 2), 2**-4, seed=4)
    assert_qonnx_matches(model, g, x)


# -- (d) errors: one line, naming the node ------------------------------------------------------
def tiny(tmp_path, *, scale=0.25, zero=0.0, mode="ROUND", signed=1, after=(), consts=None):
    """input -> Quant 'q_in' -> optional extra nodes reading 'q' -> output."""
    values = {"s": np.float32(scale), "z": np.float32(zero), "b": np.float32(8), **(consts or {})}
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in values.items()]
    quant = helper.make_node(
        "Quant", ["x", "s", "z", "b"], ["q"], name="q_in", domain="qonnx.custom_op.general",
        signed=signed, narrow=0, rounding_mode=mode,
    )  # fmt: skip
    nodes = [quant, *after]
    out = nodes[-1].output[0]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        inits,
    )
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, ir_version=8), path)
    return path


def lstm() -> onnx.NodeProto:
    return helper.make_node("LSTM", ["q", "W", "R"], ["y"], name="rnn", hidden_size=2)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"scale": 0.3}, r"^node q_in \(Quant\): scale 0\.3 is not one power of two"),
        ({"zero": 1.0}, r"^node q_in \(Quant\): zero point 1 is not 0"),
        ({"mode": "HALF_UP"}, r"^node q_in \(Quant\): rounding_mode HALF_UP on a signed Quant"),
        ({"after": [helper.make_node("Softmax", ["q"], ["y"], name="sm")]},
         r"^node sm \(Softmax\): unsupported op"),
        ({"after": [lstm()]}, r"^node rnn \(LSTM\): unsupported op"),
        ({"after": [helper.make_node("Add", ["q", "q"], ["y"], name="twice")]},
         r"^node twice \(Add\): unsupported Add"),
    ],
)  # fmt: skip
def test_unsupported_models_name_the_node(tmp_path, kwargs, pattern):
    with pytest.raises(AccelError, match=pattern) as e:
        load(tiny(tmp_path, **kwargs))
    assert "\n" not in str(e.value)


def test_grouped_conv_is_refused(tmp_path):
    consts = {"w": np.zeros((4, 2, 1, 1), np.float32), "nchw": np.array([1, 4, 1, 1])}
    reshape = helper.make_node("Reshape", ["q", "nchw"], ["q4"], name="r")
    conv = helper.make_node("Conv", ["q4", "w"], ["y"], name="grouped", group=2)
    with pytest.raises(AccelError, match=r"^node grouped \(Conv\): group=2 is unsupported"):
        load(tiny(tmp_path, after=[reshape, conv], consts=consts))


def test_garbage_and_missing_files(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x08\x07\xff\xfe not a protobuf \x00" * 7)
    with pytest.raises(AccelError, match=r"garbage\.onnx") as e:
        load(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(AccelError, match=r"not found"):
        load(tmp_path / "missing.onnx")
