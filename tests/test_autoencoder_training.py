"""The ECON-T autoencoder: geometry, data, exact fake quantization, training and shipped weights."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from accel import reference  # noqa: E402
from accel.errors import AccelError  # noqa: E402
from accel.fixed import FixedType, Overflow, Quant, Rounding, quantize  # noqa: E402
from accel.training import autoencoder as ae  # noqa: E402
from accel.training.autoencoder import WEIGHT_QUANT  # noqa: E402
from accel.training.quant import fake_quant, quantize_raw  # noqa: E402
from accel.zoo.autoencoder import data, geometry  # noqa: E402
from accel.zoo.autoencoder.model import encoder_graph  # noqa: E402

torch.set_num_threads(1)


def int_encoder(w: dict[str, np.ndarray], x_norm: np.ndarray) -> np.ndarray:
    """The golden model: accel's numpy reference on the integer graph."""
    g = encoder_graph(w)
    return reference.predict(g, reference.quantize_inputs(g, "charges", x_norm))


def random_weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    t = ae.WEIGHT_TYPE
    return {k: rng.integers(t.min_int, t.max_int + 1, s) for k, s in ae.WEIGHT_SHAPES.items()}


# --- geometry -------------------------------------------------------------------------------


def test_arrange_places_every_cell_once_and_keeps_neighbours():
    a = geometry.ARRANGE
    assert a.dtype == np.int64 and a.shape == (64,)
    assert sorted(a[a >= 0]) == list(range(48)) and (a < 0).sum() == 16
    grid = a.reshape(8, 8)
    assert (grid[4:, 4:] == -1).all()
    pairs = [(grid[:, :-1], grid[:, 1:]), (grid[:-1], grid[1:])]
    for p, q in pairs:
        ok = (p >= 0) & (q >= 0)
        d = np.linalg.norm(geometry.CELL_XY[p[ok]] - geometry.CELL_XY[q[ok]], axis=1)
        assert d.max() <= geometry.CELL_EDGE * (1 + 1e-9)


def test_scale_groups_cover_all_cells_with_compact_groups():
    for name, m in geometry.SCALES.items():
        assert m.shape[0] == 48 and (m.sum(axis=1) >= 1).all(), name
    for m in (geometry.GROUP_WINDOWS, geometry.GROUP_BLOCKS):
        for col in m.T:
            xy = geometry.CELL_XY[col > 0]
            diam = np.linalg.norm(xy[:, None] - xy[None], axis=-1).max()
            assert diam <= math.sqrt(3) * geometry.CELL_EDGE * (1 + 1e-9)
    assert geometry.GROUP_WINDOWS.shape[1] == 36 and geometry.GROUP_RHOMBI.sum() == 48


# --- data -----------------------------------------------------------------------------------


def test_make_modules_is_seeded():
    a, b, c = data.make_modules(300, 1), data.make_modules(300, 1), data.make_modules(300, 2)
    for k in ("charge", "normalized"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["charge"], c["charge"])


def test_make_modules_shapes_normalization_and_zero_suppression():
    d = data.make_modules(3000, 7)
    c, x = d["charge"], d["normalized"]
    assert c.shape == x.shape == (3000, 48) and c.dtype == x.dtype == np.float64
    sums = x.sum(axis=1)
    empty = c.sum(axis=1) == 0
    # float division: the normalized sums equal 1 up to rounding
    assert np.allclose(sums[~empty], 1.0) and (sums[empty] == 0).all()  # float sums
    assert 0.02 < empty.mean() < 0.5  # noise-only modules are often empty
    assert (c[c > 0] >= data.THRESHOLD).all() and (c >= 0).all()
    assert (c == 0).mean() > 0.5 and ((c > 0) == (x > 0)).all()
    assert (c > 0).sum(axis=1).max() > 10  # some big showers
    assert data.make_modules(0, 1)["normalized"].shape == (0, 48)


# --- fake quantization ----------------------------------------------------------------------

TYPES = [FixedType(6, 4, True), FixedType(9, 8, False), FixedType(10, 6, True), FixedType(5, -2)]
QUANTS = [Quant(t, r, o) for t in TYPES for r in Rounding for o in Overflow]


def edge_values(t: FixedType, rng: np.random.Generator) -> np.ndarray:
    lsb, span = t.lsb, 2.0 ** (t.width - t.frac)
    k = np.arange(-(2**t.width) - 3, 2**t.width + 3)
    return np.concatenate([
        k * lsb, (k + 0.5) * lsb, (k + 0.25) * lsb, np.nextafter((k + 0.5) * lsb, 0),
        rng.normal(0, span, 500), rng.uniform(-3 * span, 3 * span, 500),
        [0.0, -0.0, 1e-300, -1e-300, 1e30, -1e30, span, -span, 5e-324],
    ])  # fmt: skip


@pytest.mark.parametrize("quant", QUANTS, ids=str)
def test_fake_quant_forward_equals_fixed_quantize(quant):
    x = edge_values(quant.type, np.random.default_rng(0))
    want = quantize(x, quant)
    np.testing.assert_array_equal(quantize_raw(torch.from_numpy(x), quant).numpy(), want)
    got = fake_quant(torch.from_numpy(x), quant).numpy()
    assert np.array_equal(got, want * 2.0**-quant.type.frac)


def test_fake_quant_gradient_is_straight_through():
    x = torch.tensor([-9.0, -0.03, 0.0, 0.47, 1.5, 100.0], dtype=torch.float64, requires_grad=True)
    g = torch.arange(6, dtype=torch.float64) - 2.5
    (fake_quant(x, WEIGHT_QUANT) * g).sum().backward()
    assert torch.equal(x.grad, g)


def test_fake_quant_refuses_nan():
    with pytest.raises(AccelError):
        fake_quant(torch.tensor([0.0, math.nan]), WEIGHT_QUANT)


# --- encoder numerics -----------------------------------------------------------------------


def test_encoder_forward_is_bit_exact_with_integer_model():
    rng = np.random.default_rng(5)
    x = np.concatenate([data.make_modules(400, 11)["normalized"], rng.uniform(-1, 9, (200, 48))])
    for _ in range(3):
        w = random_weights(rng)
        got = ae.encoder_forward_float64(w, x)
        assert got.dtype == np.int64 and got.shape == (600, 16)
        np.testing.assert_array_equal(got, int_encoder(w, x))
    assert (got == ae.LATENT_QUANT.type.max_int).any() and (got == 0).any()


def test_encoder_refuses_weights_outside_their_type():
    w = random_weights(np.random.default_rng(0))
    w["dense_b"][0] = ae.WEIGHT_TYPE.max_int + 1
    with pytest.raises(AccelError, match="dense_b"):
        ae.encoder_forward_float64(w, np.zeros((1, 48)))


# --- training -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ae")
    return ae.train(epochs=1, n_train=2000, seed=3, out_dir=out, progress=False), out


def test_tiny_training_writes_metrics_and_weights(tiny_run):
    metrics, out = tiny_run
    for model in ("float", "quantized"):
        for key in ("energy_weighted_error", "mse", "telescope_loss", "sliced_emd_cm"):
            assert 0 <= metrics[model][key] < 10 and math.isfinite(metrics[model][key])
    assert metrics["compression"] == {"bits_in": 480, "bits_out": 144, "ratio": 480 / 144}
    assert metrics["encoder_parameters"] == 2144
    assert json.loads((out / "metrics.json").read_text()) == metrics
    with np.load(out / "encoder_int.npz") as f:
        weights = {k: f[k] for k in f.files if k != "types"}
        types = json.loads(str(f["types"]))  # the ECON-T types, stated with the weights
    assert set(weights) == set(ae.WEIGHT_SHAPES)
    assert types == {k: ae.WEIGHT_TYPE.to_json() for k in ae.WEIGHT_SHAPES} | {
        "conv_act": ae.CONV_OUT_QUANT.to_json()
    }
    for k, shape in ae.WEIGHT_SHAPES.items():
        assert weights[k].dtype == np.int64 and weights[k].shape == shape
        assert ae.WEIGHT_TYPE.contains(weights[k])
    # The exported files alone reproduce the reported quality.
    _, decoder = ae.load_weights(out)
    x_test = data.make_modules(ae.N_TEST, ae.TEST_SEED)["normalized"]
    again = ae.evaluate_quantized(weights, decoder, x_test)
    for k, v in again.items():
        assert v == pytest.approx(metrics["quantized"][k], rel=1e-6, abs=1e-12), k


def test_training_is_deterministic(tiny_run, tmp_path):
    metrics, out = tiny_run
    again = ae.train(epochs=1, n_train=2000, seed=3, out_dir=tmp_path, progress=False)
    for name in ("encoder_int.npz", "decoder.npz"):
        with np.load(out / name) as f, np.load(tmp_path / name) as g:
            assert all(np.array_equal(f[k], g[k]) for k in f.files), name
    assert {k: v for k, v in again.items() if k != "train_seconds"} == {
        k: v for k, v in metrics.items() if k != "train_seconds"
    }


def test_train_refuses_bad_arguments():
    with pytest.raises(AccelError):
        ae.train(epochs=0, progress=False)
    with pytest.raises(AccelError):
        ae.train(seed=ae.TEST_SEED, progress=False)


# --- shipped weights ------------------------------------------------------------------------


def test_shipped_weights_reproduce_their_metrics():
    weights, decoder = ae.load_weights()
    metrics = json.loads((ae.WEIGHTS_DIR / "metrics.json").read_text())
    x = data.make_modules(ae.N_TEST, ae.TEST_SEED)["normalized"]
    np.testing.assert_array_equal(ae.encoder_forward_float64(weights, x), int_encoder(weights, x))
    got = ae.evaluate_quantized(weights, decoder, x)
    for k in ("energy_weighted_error", "mse", "telescope_loss", "latent_saturated_fraction"):
        assert got[k] == pytest.approx(metrics["quantized"][k], rel=1e-5), k
    assert metrics["quantized"]["energy_weighted_error"] < 0.6
    z = torch.rand(4, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # the float decoder's softmax output is a normalized charge map
    assert torch.allclose(decoder(z).sum(1), torch.ones(4, dtype=torch.float64))
