"""The command line: JSON contract, engines agreeing, one-line errors, outputs kept safe."""

import json
import subprocess
import sys

import numpy as np
import pytest

from accel import reference, zoo
from accel.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "accel.cli", *args], capture_output=True, text=True, timeout=600
    )


def test_help_teaches():
    r = run_cli("--help")
    assert r.returncode == 0
    for word in ("zoo", "train", "predict", "sim", "examples:"):
        assert word in r.stdout


def test_zoo_list_json(capsys):
    assert main(["zoo", "list", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    ae = next(m for m in doc["models"] if m["name"] == "autoencoder")
    assert ae["parameters"] == 2144
    assert ae["input"] == {"shape": [48], "type": "ap_fixed<10,4,AP_RND,AP_SAT>"}
    assert ae["output"] == {"shape": [16], "type": "ap_ufixed<9,1>"}


@pytest.fixture(scope="module")
def charges(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    x = zoo.get("autoencoder").make_inputs(50, 4)
    np.save(d / "x.npy", x)
    return d, x


def test_predict_float_and_integer_inputs_agree(charges, trained_graph, tmp_path):
    d, x = charges
    raw = reference.quantize_inputs(trained_graph, "charges", x)
    np.save(tmp_path / "raw.npy", raw)
    for src, dst in [(d / "x.npy", tmp_path / "a.npy"), (tmp_path / "raw.npy", tmp_path / "b.npy")]:
        assert main(["predict", "autoencoder", "--inputs", str(src), "--out", str(dst)]) == 0
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert a.dtype == np.int64 and np.array_equal(a, b)
    assert np.array_equal(a, reference.predict(trained_graph, raw))


@pytest.mark.parametrize("engine", ["rtl", "hls4ml"])
def test_predict_other_engines(charges, trained_graph, tmp_path, engine):
    d, x = charges
    out = tmp_path / "y.npy"
    args = ["predict", "autoencoder", "--engine", engine, "--inputs", str(d / "x.npy")]
    assert main([*args, "--out", str(out)]) == 0
    want = reference.predict(trained_graph, reference.quantize_inputs(trained_graph, "charges", x))
    assert np.array_equal(np.load(out), want)


def bad_input_cases(tmp_path):
    good = np.zeros((4, 48))
    cases = {
        "shape": (np.zeros((4, 47)), r"expected shape \(N, 48\), got \(4, 47\)"),
        "dtype": (good.astype(np.complex64), "neither floating point nor integer"),
        "nan": (np.where(np.eye(4, 48) > 0, np.nan, good), "NaN or infinity"),
        "inf": (np.where(np.eye(4, 48) > 0, np.inf, good), "NaN or infinity"),
        "range": (np.full((4, 48), 9999, np.int64), "values outside ap_fixed<10,4>"),
        "strings": (np.array([["a"] * 48]), "neither floating point nor integer"),
    }
    for name, (arr, _) in cases.items():
        np.save(tmp_path / f"{name}.npy", arr)
    (tmp_path / "garbage.npy").write_bytes(b"this is not numpy")
    cases["garbage"] = (None, "cannot read")
    cases["missing"] = (None, "not found")
    return cases


def test_bad_inputs_one_line_and_output_kept(tmp_path):
    out = tmp_path / "y.npy"
    np.save(out, np.arange(3))
    for name, (_, message) in bad_input_cases(tmp_path).items():
        r = run_cli(
            "predict",
            "autoencoder",
            "--inputs",
            str(tmp_path / f"{name}.npy"),
            "--out",
            str(out),
            "--force",  # the output may be replaced, but only by a successful run
        )
        assert r.returncode == 2, name
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("accel: error: "), (name, r.stderr)
        assert __import__("re").search(message, lines[0]), (name, lines[0])
        assert "Traceback" not in r.stderr
    assert np.array_equal(np.load(out), np.arange(3))  # never clobbered


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["predict", "nosuchmodel", "--inputs", "x.npy", "--out", "y.npy"],
            "unknown model 'nosuchmodel'",
        ),
        (
            ["predict", "autoencoder", "--engine", "gpu", "--inputs", "x", "--out", "y"],
            "invalid choice: 'gpu'",
        ),
        (["sim", "autoencoder", "--reuse", "0"], "must be at least 1"),
        (
            ["predict", "autoencoder", "--rows", "4", "--inputs", "x", "--out", "y"],
            "--rows does not apply to the reference engine",
        ),
        (["sim", "autoencoder", "--simulator", "xsim"], "simulator 'xsim' is not available"),
        (["train", "nosuchmodel"], "unknown model"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_are_one_line(args, message):
    r = run_cli(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_sim_json_reports_agreement(trained_graph):
    r = run_cli("sim", "autoencoder", "--samples", "300", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # stdout holds the JSON document and nothing else
    assert doc["mismatches"] == 0 and doc["cycles_match_model"] is True
    assert doc["latency"] == {"measured": 18, "model": 18}  # 8 + 10 registers
    assert doc["ii"] == {"measured": 1, "model": 1}
    assert doc["samples"] == 300 and doc["cycles_per_s"] > 0


def test_train_refuses_to_overwrite(tmp_path):
    out = tmp_path / "trained"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = run_cli("train", "autoencoder", "--epochs", "1", "--n-train", "500", "-o", str(out))
    assert r.returncode == 2 and "pass --force to replace it" in r.stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_train_writes_a_loadable_model(tmp_path, trained_graph):
    out = tmp_path / "trained"
    r = run_cli(
        "train", "autoencoder", "--epochs", "1", "--n-train", "500", "-o", str(out), "--json"
    )
    assert r.returncode == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert metrics["encoder_parameters"] == 2144
    assert sorted(p.name for p in out.iterdir()) == [
        "decoder.npz",
        "encoder_int.npz",
        "metrics.json",
    ]
    assert not list(tmp_path.glob(".trained-*"))  # the staging directory is gone
    from accel.zoo.autoencoder.model import build

    g = build(out / "encoder_int.npz")
    x = np.zeros((2, 48), np.int64)
    assert reference.predict(g, x).shape == (2, 16)
