"""Networks on the engine: inference of dense-layer graphs and one BDWP training step."""

import itertools

import numpy as np
import pytest

from accel import nm, reference, zoo
from accel.engine.compile import compile_gemms
from accel.engine.config import EngineConfig
from accel.engine.graph import compile_graph
from accel.engine.training import step_gemms
from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.ir import Graph, Param
from accel.sim.engine import run_graph, run_program

ACT = Quant(FixedType(8, 4, False), Rounding.RND, Overflow.SAT)


def mlp(seed: int, pattern: str | None = "2:8", dims=(64, 128, 128, 10), extreme=False) -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph("mlp")
    x = g.add_input("x", (dims[0],), Quant(FixedType(8, 8, False), Rounding.RND, Overflow.SAT))
    wt = FixedType(8, 6)
    for li, (k, o) in enumerate(itertools.pairwise(dims)):
        w = (
            rng.choice([-128, 127], (k, o), p=[0.05, 0.95])
            if extreme
            else rng.integers(-128, 128, (k, o))
        )
        hidden = li < len(dims) - 2
        p = pattern if hidden else None
        if p:
            w = w * nm.mask(w, nm.NM.parse(p))
        params = {"weight": Param(w, wt), "bias": Param(rng.integers(-128, 128, o), wt)}
        x = g.add("dense", x, name=f"fc{li}", nm=p, params=params)
        if hidden:
            x = g.add("relu", x)
            x = g.add("requantize", x, quant=ACT)
    g.mark_output(x)
    return g


@pytest.mark.parametrize(("pattern", "extreme"), [("2:8", False), ("1:4", True), (None, False)])
def test_mlp_inference_is_bit_exact_and_cycle_exact(engine_cfg, pattern, extreme):
    g = mlp(3, pattern, extreme=extreme)
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (150, 64))
    x[0], x[1] = 0, 255  # all-zero and saturating inputs
    y, run = run_graph(g, engine_cfg, x)
    want = reference.predict(g, x)
    if extreme:
        assert (reference.run(g, x)["requantize0"] == 255).any()  # saturation is reached
    np.testing.assert_array_equal(y, want)
    assert run.cycles_match


def test_a_batch_larger_than_the_banks_runs_in_chunks(engine_cfg):
    g = mlp(5)
    x = np.random.default_rng(6).integers(0, 256, (700, 64))
    _, sizes = compile_graph(g, engine_cfg, x)
    assert len(sizes) > 1 and sum(sizes) == 700
    y, run = run_graph(g, engine_cfg, x)
    np.testing.assert_array_equal(y, reference.predict(g, x))
    assert run.cycles_match


@pytest.fixture(scope="module")
def training_step(engine_cfg):
    g = mlp(7)
    rng = np.random.default_rng(8)
    x, labels = rng.integers(0, 256, (64, 64)), rng.integers(0, 10, 64)
    out = {}
    for sparse in (True, False):
        specs = step_gemms(g, x, labels, FixedType(32, 0), sparse)
        out[sparse] = specs, run_program(compile_gemms(engine_cfg, specs))
    return out


def test_training_step_gemms_are_bit_exact_and_cycle_exact(training_step):
    for specs, run in training_step.values():
        assert [s.name.split(".")[1] for s in specs[:3]] == ["forward", "backward", "update"]
        for spec, got in zip(specs, run.outputs, strict=True):
            want = spec.a @ spec.b
            np.testing.assert_array_equal(got[: len(want), : want.shape[1]], want, spec.name)
        assert run.cycles_match
    specs, _ = training_step[True]
    by_name = {s.name: s for s in specs}
    # the backward GEMM's weights hold the W^T pattern, the forward's the W pattern
    assert nm.violations(by_name["fc1.backward"].b, nm.NM(2, 8), 0) == 0
    assert nm.violations(by_name["fc1.forward"].b, nm.NM(2, 8), 0) == 0
    assert by_name["fc1.update"].pattern is None
    assert by_name["fc1.backward"].a.any() and by_name["fc0.backward"].a.any()  # gradients flow


def test_training_step_beats_sats_speedup_at_2_8(training_step):
    sparse = sum(t.cycles for t in training_step[True][1].model.gemms)
    dense = sum(t.cycles for t in training_step[False][1].model.gemms)
    assert dense / sparse > 1.75
    for t in training_step[True][1].model.gemms:
        if t.name == "fc1.forward":
            dense_t = next(d for d in training_step[False][1].model.gemms if d.name == t.name)
            assert dense_t.cycles / t.cycles >= 0.9 * 4


def test_graph_compiler_refuses_what_it_cannot_run(engine_cfg):
    g = Graph("pool")
    x = g.add_input("x", (4, 4, 8), ACT)
    x = g.add("gather", x, name="pick", index=np.arange(8), shape=(8,))
    g.mark_output(x)
    with pytest.raises(AccelError, match="node pick: the engine compiler takes dense and conv2d"):
        compile_graph(g, engine_cfg, np.zeros((1, 4, 4, 8), np.int64))
    g = Graph("nmconv")
    x = g.add_input("x", (4, 4, 4), ACT)
    w = np.zeros((2, 2, 4, 8), np.int64)
    g.add("conv2d", x, name="c", nm="2:8", params={"weight": Param(w, FixedType(8, 6))})
    g.mark_output("c")
    with pytest.raises(
        AccelError,
        match=r"node c: an N:M conv needs its 4 input channels stored unpadded",
    ):
        compile_graph(g, engine_cfg, np.zeros((1, 4, 4, 4), np.int64))
    tiny = EngineConfig(rows=4, cols=8, group=8, a_depth=8)
    with pytest.raises(AccelError, match="fc0: a block of 4 samples needs 32 words"):
        compile_graph(mlp(1), tiny, np.zeros((4, 64), np.int64))
    narrow = EngineConfig(rows=4, cols=8, group=8, a_bits=8)
    with pytest.raises(
        AccelError, match=r"input: .* needs 9-bit signed operands, the engine has 8"
    ):
        compile_graph(mlp(1), narrow, np.zeros((4, 64), np.int64))


def test_cli_runs_the_zoo_model_on_the_engine():
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "accel.cli", "sim", "nm_sparse", "--arch", "engine"]
    r = subprocess.run(
        [*cmd, "--array", "4x8", "--samples", "200", "--json"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["mismatches"] == 0 and doc["cycles_match_model"] is True
    assert doc["last_output_cycle"]["measured"] == doc["last_output_cycle"]["model"]
    # the classifier's outputs 9-10 run as a tail, their reduction across the columns
    assert [d["gemm"] for d in doc["layers"]] == ["fc1", "fc2", "out", "out.tail"]
    bad = subprocess.run([*cmd, "--array", "8by8"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("accel: error:")
    assert "--array: an array size must look like 8x8, got '8by8'" in bad.stderr


def conv_net(seed: int) -> Graph:
    """Odd, non-square images, 'same' and 'valid' padding, strides 1 and 2, a conv output.

    c1 (3 channels in) runs on patches the host unfolds; c2 reads 12 channels
    stored as 16; c3 is 1:4 sparse and streams its (H, W, C) output.
    """
    rng = np.random.default_rng(seed)
    wt = FixedType(8, 6)
    g = Graph("convs")
    x = g.add_input("x", (7, 6, 3), Quant(FixedType(8, 8, False), Rounding.RND, Overflow.SAT))
    for name, (k, cin, cout, stride, pad, pattern) in {
        "c1": ((3, 3), 3, 12, 2, "same", None),
        "c2": ((3, 3), 12, 16, 1, "same", None),
        "c3": ((2, 3), 16, 8, 1, "valid", "1:4"),
    }.items():
        w = rng.integers(-128, 128, (*k, cin, cout))
        if pattern:
            w = w * nm.mask(w.reshape(-1, cout), nm.NM.parse(pattern)).reshape(w.shape)
        params = {"weight": Param(w, wt), "bias": Param(rng.integers(-128, 128, cout), wt)}
        x = g.add("conv2d", x, name=name, stride=stride, padding=pad, nm=pattern, params=params)
        if name != "c3":
            x = g.add("relu", x)
            x = g.add("requantize", x, quant=ACT)
    g.mark_output(x)
    return g


def test_convolutions_are_bit_exact_and_cycle_exact(engine_cfg):
    g = conv_net(9)
    assert g.tensors["c1"].shape == (4, 3, 12) and g.tensors["c3"].shape == (3, 1, 8)
    x = np.random.default_rng(10).integers(0, 256, (30, 7, 6, 3))
    x[0], x[1] = 0, 255
    y, run = run_graph(g, engine_cfg, x)
    np.testing.assert_array_equal(y, reference.predict(g, x))
    assert run.cycles_match


@pytest.mark.parametrize("pattern", ["2:8", "dense"])
def test_zoo_cnn_inference_on_the_engine(engine_cfg, pattern):
    from accel.zoo.nm_sparse import data
    from accel.zoo.nm_sparse.model import build

    g = build(net="cnn", pattern=pattern)
    x = reference.quantize_inputs(g, g.inputs[0], data.make_inputs(24, 3, "cnn"))
    y, run = run_graph(g, engine_cfg, x)
    np.testing.assert_array_equal(y, reference.predict(g, x))
    assert run.cycles_match
    util = {t.name: t.utilisation for t in run.model.gemms}
    assert util["conv2"] > 0.95  # K = 144 of 16 channel blocks, 2:8 or dense
    assert util["conv1"] > 0.55  # 9 taps of one channel as patches of 16, not 9 x 8


def test_cli_predict_on_the_engine(tmp_path):
    import subprocess
    import sys

    from accel.zoo.nm_sparse import data
    from accel.zoo.nm_sparse.model import build

    x = data.make_inputs(20, 0, "mlp")
    np.save(tmp_path / "x.npy", x)
    cmd = [sys.executable, "-m", "accel.cli", "predict", "nm_sparse", "--inputs"]
    cmd += [str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"), "--arch", "engine"]
    r = subprocess.run([*cmd, "--engine", "rtl", "--array", "4x8"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    g = build()
    want = reference.predict(g, reference.quantize_inputs(g, g.inputs[0], x))
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want)
    r = subprocess.run([*cmd, "--engine", "hls4ml"], capture_output=True, text=True)
    assert r.returncode == 2 and "--arch engine does not apply to the hls4ml engine" in r.stderr


def test_zoo_variants_from_the_command_line():
    import json
    import subprocess
    import sys

    cli = [sys.executable, "-m", "accel.cli"]
    sim = [*cli, "sim", "nm_sparse@cnn_2-8_bdwp", "--arch", "engine", "--array", "4x8"]
    r = subprocess.run([*sim, "--samples", "16", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["model"] == "nm_sparse_cnn_2_8_bdwp" and doc["mismatches"] == 0
    assert [d["gemm"] for d in doc["layers"]] == ["conv1", "conv2", "conv3", "out", "out.tail"]
    listed = json.loads(subprocess.run([*cli, "zoo", "list", "--json"], capture_output=True).stdout)
    variants = {m["name"]: m["variants"] for m in listed["models"]}
    assert "cnn_1-4_bdwp" in variants["nm_sparse"] and "mlp_2-8_bdwp_khot1" in variants["nm_sparse"]
    assert variants["autoencoder"] == zoo.get("autoencoder").variants()
    for bad, message in [
        ("nm_sparse@cnn_9-4", "nm_sparse has no variant 'cnn_9-4' (shipped: cnn_1-4_bdwp"),
        ("autoencoder@x", "autoencoder has no variant 'x' (shipped: "),
    ]:
        r = subprocess.run([*cli, "sim", bad, "--samples", "4"], capture_output=True, text=True)
        assert r.returncode == 2 and message in r.stderr, r.stderr


def test_many_chunks_run_as_a_loop(engine_cfg):
    """300 CNN samples in chunks of 8: unrolled, 190 instructions; looped, a dozen."""
    from accel.zoo.nm_sparse import data
    from accel.zoo.nm_sparse.model import build

    g = build(net="cnn", pattern="1:4")
    x = reference.quantize_inputs(g, g.inputs[0], data.make_inputs(300, 5, "cnn"))
    program, sizes = compile_graph(g, engine_cfg, x)
    assert len(sizes) > engine_cfg.imem_depth // 5 and sizes[-1] < sizes[0]  # a short tail
    assert program.repeat.times == len(sizes) - 1
    # B and bias loads of 5 GEMMs (the classifier's tail too), a chunk's A load and its
    # GEMMs twice (the loop body, the short last chunk), the LOOP and the HALT
    assert len(program.instructions()) <= 2 * 5 + 6 + 1 + 6 + 1
    y, run = run_graph(g, engine_cfg, x)
    np.testing.assert_array_equal(y, reference.predict(g, x))
    assert run.cycles_match


def test_every_gemm_cycle_is_accounted_for():
    """The cycle model's loss split (padding, drain waits, fill) adds up to each GEMM's
    cycles beyond its ideal, and the mapping benchmark names the padding's cause."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "bench_mapping.py"
    spec = importlib.util.spec_from_file_location("bench_mapping", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from accel.engine.cycles import predict

    model = zoo.get("nm_sparse@cnn_2-8_bdwp")
    g = model.build()
    cfg = EngineConfig(rows=8, cols=8, group=8, a_depth=2048, b_depth=4096)
    x = reference.quantize_inputs(g, g.inputs[0], model.make_inputs(12, 0))  # a partial block
    prog, _ = compile_graph(g, cfg, x)
    for gt in predict(prog).gemms:
        loss = gt.losses()
        # integers, exactly: issued steps + drain waits + fill = cycles
        assert gt.tiles * gt.steps + loss["drain_wait"] + loss["fill"] == gt.cycles
        assert loss["padding"] == gt.tiles * gt.steps - gt.ideal
        assert min(loss.values()) >= 0
    row = bench.model_rows("nm_sparse@cnn_2-8_bdwp", 12, 0.9)
    causes = {r["gemm"]: r.get("causes") for r in row["gemms"]}
    # a 3x3 patch of one channel: 9 taps as 2 words of 5 lanes (5:8), 10 steps, not 16
    assert causes["conv1"][0] == "a patch of 9 taps as 2 words of 5 lanes"
    conv1 = next(r for r in row["gemms"] if r["gemm"] == "conv1")
    assert conv1["steps_per_tile"] == 10
    # the classifier's last 2 of 10 outputs run as a tail (reduction across the columns)
    assert causes["out"] == ["12 samples in blocks of 8 rows"]
    assert "out.tail" in causes
    assert causes["conv2"] == ["12 samples in blocks of 8 rows"]  # 0.75 of the rows
    full = bench.model_rows("nm_sparse@cnn_2-8_bdwp", 16, 0.9)
    assert {r["gemm"]: r.get("causes") for r in full["gemms"]}["conv2"] is None


@pytest.mark.parametrize("n_out", [3, 13, 18])
def test_a_classifier_tail_splits_its_reduction_exactly(engine_cfg, n_out):
    """The last layer's outputs past its last full column tile run as a tail GEMM whose
    reduction is split across the columns (summed in the drain's adder tree): bit-exact
    and cycle-exact with accumulators that wrap, weights at both extremes, all-zero and
    saturating inputs, a stalled output stream; and faster than the padded column tile."""
    from accel.engine.cycles import predict
    from accel.engine.graph import _compile, lower, output_values, split_tail
    from accel.sim.engine import run_program

    rng = np.random.default_rng(n_out)
    w = rng.choice([-128, 127, 0, 1], (128, n_out), p=[0.3, 0.3, 0.2, 0.2])
    bias = rng.integers(-128, 128, n_out)

    def net(acc: FixedType | None) -> Graph:
        g = Graph("tail")
        x = g.add_input("x", (128,), Quant(FixedType(8, 8, False), Rounding.RND, Overflow.SAT))
        wt = FixedType(8, 6)
        params = {"weight": Param(w, wt), "bias": Param(bias, wt)}
        y = g.add("dense", x, name="out", params=params, **({"acc": acc} if acc else {}))
        g.mark_output(g.add("requantize", y, quant=Quant(FixedType(6, 4), Rounding.RND,
                                                         Overflow.SAT)))  # fmt: skip
        return g

    g = net(FixedType(16, 14))  # sums beyond +-2 wrap
    xs = rng.integers(0, 256, (21, 128))
    xs[0], xs[1] = 0, 255
    want = reference.predict(g, xs)
    assert not np.array_equal(want, reference.predict(net(None), xs))  # the wrap matters
    assert (want == 31).any() and (want == -32).any()  # so does saturation
    t = n_out % engine_cfg.cols
    assert split_tail(engine_cfg, 128, n_out) == t
    placed = lower(g, engine_cfg)
    assert [p.spec.name for p in placed] == (["out"] if n_out > t else []) + ["out.tail"]
    assert placed[-1].spec.b.shape == (128, t * engine_cfg.group)
    prog, sizes = compile_graph(g, engine_cfg, xs)
    for sink in (None, rng.random(512) < 0.3):
        run = run_program(prog, sink_ready=sink)
        got = output_values(prog, sizes, g, run.outputs).reshape(want.shape)
        np.testing.assert_array_equal(got, want)
        assert run.cycles_match or sink is not None
    plain, _ = _compile(g, engine_cfg, xs, lower(g, engine_cfg, split=False))
    assert [s.name for s in plain.gemms][:1] == ["out"] and predict(prog).total < predict(
        plain
    ).total


def test_a_first_dense_layer_spreads_its_padding(engine_cfg):
    """10 input features (not a multiple of the group) load as 2 words of 5 lanes and the
    first layer runs 5:8 (10 steps per tile, not 16); bit- and cycle-exact, with all-zero
    and saturating inputs and a 3-way tail after it."""
    from accel.engine.graph import lower

    g = mlp(7, None, dims=(10, 16, 3))
    placed = lower(g, engine_cfg)
    assert placed[0].spec.pattern == nm.NM(5, 8) and placed[0].lanes.tolist() == [
        0, 1, 2, 3, 4, 8, 9, 10, 11, 12
    ]  # fmt: skip
    x = np.random.default_rng(8).integers(0, 256, (30, 10))
    x[0], x[1] = 0, 255
    y, run = run_graph(g, engine_cfg, x)
    np.testing.assert_array_equal(y, reference.predict(g, x))
    assert run.cycles_match
    steps = {
        gm.name: gm.steps_per_tile(engine_cfg) for gm in compile_graph(g, engine_cfg, x)[0].gemms
    }
    assert steps["fc0"] == 10
