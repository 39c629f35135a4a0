"""Trainable fixed point (QFX): learned binary points and multiplier-free weights, the same
numbers in torch and in the exported integer graph."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from accel import reference  # noqa: E402
from accel.errors import AccelError  # noqa: E402
from accel.fixed import FixedType, Overflow, Quant, Rounding, quantize  # noqa: E402
from accel.training.qfx import LearnedPoint, csd_digits, khot_project, khot_values  # noqa: E402

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    width=st.integers(2, 16),
    frac=st.integers(-4, 20),
    signed=st.booleans(),
    mode=st.sampled_from(list(Rounding)),
    xs=st.lists(finite, min_size=1, max_size=40),
)
def test_forward_is_accel_fixed_quantize(width, frac, signed, mode, xs):
    lp = LearnedPoint(width, signed, frac, mode, fracs=range(-8, 24))
    t = FixedType(width, frac, signed)
    ties = [(v + 0.5) * 2.0**-frac for v in range(t.min_int - 2, t.min_int + 3)]
    ties += [(t.max_int - 0.5) * 2.0**-frac, t.max_int * 2.0**-frac * 4, 0.0, -0.0]
    x = np.array(xs + ties, np.float64)
    got = lp(torch.from_numpy(x)).detach().numpy()
    want = quantize(x, Quant(t, mode, Overflow.SAT)).astype(np.float64) * 2.0**-frac
    assert np.array_equal(got, want)


@given(st.integers(-(1 << 12), 1 << 12))
def test_csd_digits_are_the_fewest_signed_powers_of_two(v):
    # brute force over signed-digit strings of 14 digits would be slow; check the
    # defining property instead: v = sum of csd_digits(v) terms, and no non-adjacent
    # form has fewer (the NAF is minimal, Reitwiesner 1960)
    naf, n, r = [], 0, abs(v)
    while r:
        d = (2 - (r % 4)) if r & 1 else 0
        naf.append(d)
        r = (r - d) // 2
        n += d != 0
    assert csd_digits(v) == n
    assert sum(d * 2**i for i, d in enumerate(naf)) == abs(v)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_khot_projection_is_the_nearest_k_digit_value(k):
    t = FixedType(6, 4, True)
    allowed = khot_values(t, k)
    assert all(csd_digits(v) <= k for v in allowed)
    raw = np.arange(t.min_int, t.max_int + 1)
    out = khot_project(raw, t, k)
    assert np.array_equal(khot_project(out, t, k), out)  # idempotent
    dist = np.abs(raw[:, None] - allowed[None, :])
    assert np.array_equal(np.abs(out - raw), dist.min(axis=1))  # nearest
    assert np.isin(out, allowed).all()


def test_k_larger_than_the_width_is_refused():
    with pytest.raises(AccelError, match="1 <= k <= the width"):
        LearnedPoint(6, True, 4, k=7)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    from accel.training.autoencoder import train

    out = {}
    for name, kw in {"learned": {}, "khot1": {"khot": 1}}.items():
        d = tmp_path_factory.mktemp(name)
        train(epochs=2, n_train=3000, seed=3, out_dir=d, progress=False, float_baseline=False,
              points="learned", **kw)  # fmt: skip
        out[name] = d
    return out


@pytest.mark.parametrize("name", ["learned", "khot1"])
def test_exported_graph_equals_the_torch_forward(tiny_runs, name):
    """The integer graph built from the exported raws and learned types equals torch's
    float64 forward bit for bit: random modules, edge inputs, saturating inputs."""
    from accel.training.autoencoder import Encoder
    from accel.zoo.autoencoder.data import make_modules
    from accel.zoo.autoencoder.model import build, load_types, load_weights

    path = tiny_runs[name] / "encoder_int.npz"
    g = build(path)
    x = np.concatenate(
        [
            make_modules(3000, 11)["normalized"],
            np.zeros((1, 48)),
            np.full((1, 48), 31.99),  # saturates the input type
            np.eye(48)[:8],
            -np.eye(48)[:8],
        ]
    )
    enc = Encoder.from_int(load_weights(path), load_types(path))
    with torch.no_grad():
        z = enc(torch.from_numpy(x)).numpy()
    latent = g.tensors[g.outputs[0]].type
    raw_torch = np.rint(z * 2.0**latent.frac).astype(np.int64)
    assert np.array_equal(z * 2.0**latent.frac, raw_torch)  # exact integers
    assert np.array_equal(
        raw_torch, reference.predict(g, reference.quantize_inputs(g, "charges", x))
    )
    if name == "khot1":
        for node in ("conv", "dense"):
            w = g.node(node).params["weight"].data
            assert max(csd_digits(v) for v in w.ravel()) <= 1


def test_cli_refuses_an_impossible_khot(tmp_path):
    from accel.cli import main

    for args in (
        ["autoencoder", "--khot", "9"],  # 6-bit weights: 1..6 digits
        ["nm_sparse", "--khot", "9"],  # 8-bit weights
        ["nm_sparse", "--khot", "two"],
        ["autoencoder", "--points", "float"],
        ["deform_det", "--khot", "2"],  # its trainer has no such option
    ):
        assert main(["train", *args, "--epochs", "1", "-o", str(tmp_path / "t")]) == 2, args
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("k", [None, 2, 1])
def test_nm_sparse_learned_points_export_exactly(k):
    """The nm_sparse MLP (2:8, BDWP) with learned points: torch's forward equals the
    exported integer graph on every held-out digit; K-hot weights have <= K digits."""
    from accel import nm
    from accel.training.nm_sparse import fit
    from accel.zoo.nm_sparse import data
    from accel.zoo.nm_sparse import model as zm

    pattern = nm.NM(2, 8)
    model, _ = fit("mlp", pattern, "bdwp", 2, 5, n_train=400, points="learned", k=k)
    g = zm.graph("mlp", model.export_int(), pattern, "bdwp", model.types())
    x, _ = data.load("test", "mlp")
    x = np.concatenate([x, np.zeros((1, 64)), np.ones((1, 64))])
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy() * 2.0**zm.LOGITS.type.frac
    raw = reference.predict(g, reference.quantize_inputs(g, g.inputs[0], x))
    assert np.array_equal(logits, raw)
    if k is not None:
        for layer in ("fc1", "fc2", "out"):
            assert max(csd_digits(v) for v in g.node(layer).params["weight"].data.ravel()) <= k


@pytest.mark.parametrize("variant", ["learned", "khot2", "khot1"])
def test_shipped_autoencoder_variants(variant):
    """autoencoder@VARIANT: the shipped weights reproduce their stored quality through the
    integer graph, and K-hot weights have at most K signed power-of-two digits."""
    import json

    from accel import zoo
    from accel.training.autoencoder import N_TEST, TEST_SEED, evaluate_quantized, load_decoder
    from accel.zoo.autoencoder.data import make_modules
    from accel.zoo.autoencoder.model import WEIGHTS_DIR, load_types, load_weights

    g = zoo.get(f"autoencoder@{variant}").build()
    path = WEIGHTS_DIR / f"encoder_int_{variant}.npz"
    stored = json.loads((WEIGHTS_DIR / f"metrics_{variant}.json").read_text())["quantized"]
    x = make_modules(N_TEST, TEST_SEED)["normalized"]
    q = evaluate_quantized(
        load_weights(path), load_decoder(WEIGHTS_DIR / f"decoder_{variant}.npz"), x,
        load_types(path),
    )  # fmt: skip
    assert q["energy_weighted_error"] == stored["energy_weighted_error"]
    if variant.startswith("khot"):
        k = int(variant[-1])
        for node in ("conv", "dense"):
            assert max(csd_digits(v) for v in g.node(node).params["weight"].data.ravel()) <= k


def test_a_multiplier_free_variant_is_exact_on_every_engine():
    """autoencoder@khot1 on the reference, Verilator, Amaranth's simulator and hls4ml's C
    simulation: the same integers."""
    from accel import backends, zoo
    from accel.sim import stimulus

    g = zoo.get("autoencoder@khot1").build()
    x = np.concatenate([stimulus.edge_inputs(g), stimulus.random_inputs(g, 40, 2)])
    want = reference.predict(g, x)
    for engine, reuse in [("rtl", 16), ("amaranth", 16), ("hls4ml", 1)]:
        assert np.array_equal(backends.predict(g, x, engine, reuse), want), engine
