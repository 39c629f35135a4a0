"""accel dse: sweep files, one-line errors, Pareto fronts, the table, runs on Dask."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from accel import dse
from accel.dse import pareto
from accel.dse.runner import tasks
from accel.errors import AccelError

ENGINE = """
model: nm_sparse
params:
  rows: [4, 8]
  cols: 8
  pattern: [dense, "2:8"]
  a_bits: [8, 9]
evaluate:
  batch: 16
"""


def accel(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "accel.cli", *args], capture_output=True, text=True, **kw
    )


def write(tmp_path, text, name="sweep.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


# -- sweep files --------------------------------------------------------------------
def test_points_are_the_cross_product_with_ranges():
    s = dse.parse(
        {
            "model": "nm_sparse",
            "params": {
                "rows": {"from": 2, "to": 8, "step": 2},
                "a_depth": {"from": 64, "to": 1000, "times": 2},
                "pattern": ["dense", "2:4"],
                "cols": 16,
            },
        }
    )
    assert s.arch == "engine"
    assert s.axes == {
        "rows": [2, 4, 6, 8],
        "a_depth": [64, 128, 256, 512],
        "pattern": ["dense", "2:4"],
    }
    pts = s.points()
    assert len(pts) == 4 * 4 * 2
    # fixed; a knob left out is None: as the target configures itself for the graph
    assert all(p["cols"] == 16 and p["group"] is None for p in pts)
    assert len({s.point_id(p) for p in pts}) == len(pts)


def test_point_ids_are_stable_and_depend_on_what_changes_numbers():
    s = dse.parse({"model": "nm_sparse", "params": {"rows": 4}})
    (p,) = s.points()
    # the id is part of the results table's contract: it must not drift silently
    assert s.point_id(p) == dse.parse({"model": "nm_sparse", "params": {"rows": 4}}).point_id(p)
    assert s.point_id({**p, "rows": 8}) != s.point_id(p)
    s2 = dse.parse({"model": "nm_sparse", "params": {"rows": 4}, "evaluate": {"batch": 32}})
    assert s2.point_id(p) != s.point_id(p)  # a different batch gives different cycles


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"model": "nm_sparse", "params": {"rowz": [4]}}, "unknown parameter 'rowz'"),
        ({"model": "nm_sparse", "params": {"rows": []}}, "parameter rows: empty list"),
        (
            {"model": "nm_sparse", "params": {"rows": {"from": 8, "to": 4}}},
            "parameter rows: empty range (from 8 to 4)",
        ),
        ({"model": "nm_sparse", "params": {"rows": ["x"]}}, "parameter rows: expected an integer"),
        ({"model": "nm_sparse", "params": {"rows": {"from": 1}}}, "needs both 'from' and 'to'"),
        ({"model": "nm_sparse", "param": {}}, "unknown key(s) in the sweep file: param"),
        ({"model": "nm_sparse", "evaluate": {"rtl": "yes"}}, "evaluate.rtl"),
        ({"model": "nm_sparse", "evaluate": {"batchsize": 4}}, "under evaluate: batchsize"),
        ({"model": "resnet"}, "unknown model"),
        ({"model": "nm_sparse", "arch": "gpu"}, "unknown arch 'gpu'"),
        ({"model": "autoencoder", "params": {"rows": 4}}, "for a dataflow sweep"),
        ({"params": {}}, "must name a model"),
        (
            {"model": "nm_sparse", "params": {"device": ["ulx3s-85f", "de10"]}},
            "unknown board 'de10'",
        ),
    ],
)
def test_bad_sweeps_are_one_line_errors(doc, message):
    with pytest.raises(AccelError) as e:
        dse.parse(doc)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_cli_bad_sweep_is_one_line(tmp_path):
    cases = {
        "unknown.yaml": "model: nm_sparse\nparams:\n  colour: [red]\n",
        "empty.yaml": "model: autoencoder\nparams:\n  reuse: {from: 9, to: 3}\n",
        "yaml.yaml": "model: [nm_sparse\n",
    }
    for name, text in cases.items():
        r = accel("dse", str(write(tmp_path, text, name)), "-o", str(tmp_path / "out"))
        assert r.returncode == 2, r.stderr
        assert r.stdout == ""
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("accel: error: "), r.stderr
    assert not (tmp_path / "out" / "results.csv").exists()


def test_unreachable_scheduler_is_one_line(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = accel(
        "dse",
        str(write(tmp_path, ENGINE)),
        "-o",
        str(tmp_path / "out"),
        "--scheduler",
        f"tcp://127.0.0.1:{port}",
        timeout=60,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(
        f"accel: error: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"
    )


def test_check_sampling_is_seeded_and_sized():
    doc = {"model": "nm_sparse", "params": {"rows": [2, 4, 8], "pattern": ["dense", "2:4", "2:8"]}}
    picked = []
    for seed in (0, 0, 1):
        s = dse.parse({**doc, "evaluate": {"rtl": {"points": 4, "seed": seed}}})
        picked.append({t["id"] for t in tasks(s) if t["checks"]["rtl"]})
    assert len(picked[0]) == 4 and picked[0] == picked[1] and picked[0] != picked[2]
    # sampling is by point id, so reordering the axes picks the same points
    s = dse.parse(
        {
            "model": "nm_sparse",
            "params": {"pattern": ["dense", "2:4", "2:8"], "rows": [2, 4, 8]},
            "evaluate": {"rtl": {"points": 4, "seed": 0}},
        }
    )
    assert {t["id"] for t in tasks(s) if t["checks"]["rtl"]} == picked[0]
    s = dse.parse({**doc, "evaluate": {"synth": True}})
    assert all(t["checks"]["synth"] for t in tasks(s))
    # a point known to fail hands its check to the next point of the same draw
    s = dse.parse({**doc, "evaluate": {"rtl": {"points": 4, "seed": 0}}})
    gone = sorted(picked[0])[0]
    again = {t["id"] for t in tasks(s, failed={gone}) if t["checks"]["rtl"]}
    assert len(again) == 4 and gone not in again and len(again & picked[0]) == 3


# -- Pareto fronts ------------------------------------------------------------------
def test_front_by_hand():
    # (LUTs: minimize, throughput: maximize)
    v = np.array([[10, 1], [20, 5], [15, 5], [30, 4], [40, 9], [40, 9], [5, np.nan]])
    assert pareto.front(v, [False, True]).tolist() == [1, 0, 1, 0, 1, 1, 0]


@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=30))
def test_front_matches_brute_force(pts):
    v = np.array(pts, float)
    mask = pareto.front(v, [False, True])
    for i, p in enumerate(v):
        dominated = any((q[0] <= p[0] and q[1] >= p[1]) and (q[0] < p[0] or q[1] > p[1]) for q in v)
        assert mask[i] == (not dominated)


# -- runs -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster for the tests to reach by its address, as a remote cluster would be."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as c:
        yield c.scheduler_address


def test_sweep_on_a_scheduler_resumes_and_records_failures(tmp_path, cluster):
    sweep = dse.parse(__import__("yaml").safe_load(ENGINE), "eng")
    out = tmp_path / "out"
    s1 = dse.run(sweep, out, scheduler=cluster, quiet=True)
    assert (s1["points"], s1["evaluated"], s1["skipped"]) == (8, 8, 0)
    df = dse.frame(out / "results.csv")
    assert len(df) == 8 and df["point_id"].is_unique
    # 8-bit operands cannot hold the unsigned 8-bit pixels: recorded with the reason, the rest ran
    bad = df[df["a_bits"] == 8]
    assert (bad["status"] == "failed").all() and s1["failed"] == 4 and s1["ok"] == 4
    assert bad["error"].str.contains("needs 9-bit signed operands").all(), bad["error"].tolist()
    good = df[df["status"] == "ok"]
    # the cycle model's numbers, recomputed here from the engine's own compiler
    from accel.engine.config import EngineConfig
    from accel.engine.cycles import predict
    from accel.engine.graph import compile_graph
    from accel.zoo import sweeps as models

    for r in good.itertuples():
        cfg = EngineConfig(rows=r.rows, cols=8, a_depth=512, b_depth=4096, bias_depth=128)
        g = models.nm_sparse("mlp", r.pattern)
        t = predict(compile_graph(g, cfg, models.nm_sparse_inputs("mlp", 16, 0))[0])
        assert r.cycles == t.total and r.last_out_cycle == t.out_valid[-1]
        assert r.samples_per_s == round(25e6 * 16 / t.total, 1)
    # 2:8 at the same array: ~4x fewer GEMM cycles than dense on the sparse layers
    for rows in (4, 8):
        d = good[(good["rows"] == rows) & (good["pattern"] == "dense")].iloc[0]
        s = good[(good["rows"] == rows) & (good["pattern"] == "2:8")].iloc[0]
        assert 2.0 < d["gemm_cycles"] / s["gemm_cycles"] < 4.0
        assert s["accuracy"] == models.nm_sparse_accuracy("mlp", "2:8") == 437 / 450
    assert set(s1["pareto"]) >= {"throughput_vs_luts", "density_vs_cycles"}
    assert all((out / "plots" / f"{p}.png").stat().st_size > 5000 for p in s1["pareto"])

    # a re-run does nothing; an interrupted table (torn last line) resumes the lost point
    s2 = dse.run(sweep, out, scheduler=cluster, quiet=True)
    assert (s2["evaluated"], s2["skipped"]) == (0, 8)
    text = (out / "results.csv").read_text()
    (out / "results.csv").write_text(text[: text.rindex("\n", 0, -1) + 10])
    s3 = dse.run(sweep, out, scheduler=cluster, quiet=True)
    assert s3["evaluated"] == 1
    pd.testing.assert_frame_equal(
        dse.frame(out / "results.csv").drop(columns="eval_seconds"),
        df.drop(columns="eval_seconds"),
    )
    # failed points run again only when asked
    s4 = dse.run(sweep, out, scheduler=cluster, quiet=True, retry_failed=True)
    assert s4["evaluated"] == 4


def test_another_kind_of_sweep_does_not_mix_into_a_table(tmp_path, cluster):
    out = tmp_path / "out"
    dse.run(
        dse.parse({"model": "nm_sparse", "params": {"rows": 4}}),
        out,
        scheduler=cluster,
        quiet=True,
        plots=False,
    )
    df_sweep = dse.parse({"model": "autoencoder", "params": {"reuse": 32}})
    with pytest.raises(AccelError, match="holds another kind of sweep"):
        dse.run(df_sweep, out, scheduler=cluster, quiet=True)
    s = dse.run(df_sweep, out, scheduler=cluster, quiet=True, force=True, plots=False)
    assert s["ok"] == 1


def test_cli_json_on_a_local_cluster(tmp_path):
    """The default path: accel dse starts its own LocalCluster; stdout is one JSON document."""
    sweep = write(
        tmp_path,
        "name: ae\nmodel: autoencoder\nparams:\n  reuse: [16, 32]\n  weight_bits: [4, 6]\n"
        "  device: ulx3s-45f\nevaluate:\n  quality_samples: 500\n",
    )
    r = accel(
        "dse", str(sweep), "-o", str(tmp_path / "out"), "--workers", "2", "--json", timeout=300
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ran_on"] == "a LocalCluster of 2 workers"
    assert (doc["points"], doc["ok"], doc["failed"]) == (4, 4, 0)
    df = dse.frame(tmp_path / "out" / "results.csv")
    from accel.compiler.dataflow import lower
    from accel.zoo import sweeps as models

    for r_ in df.itertuples():
        plan = lower(models.autoencoder(r_.weight_bits, 10, 11), r_.reuse)
        assert r_.mults == sum(s.n_mult for s in plan.stages)
        assert r_.latency_cycles == plan.timing().latency
        assert r_.ii_cycles == r_.reuse
        # 45F: 72 DSP blocks; more multipliers go to LUTs, as the bitstream flow does
        assert r_.multipliers_in == ("LUTs" if r_.mults > 72 else "DSPs")
        assert (r_.est_dsp == 0) == (r_.mults > 72)
    q = df.set_index("weight_bits")["quality"]
    assert q[6].iloc[0] == round(models.autoencoder_quality(6, 10, 11, 500), 5)
    assert (tmp_path / "out" / "summary.json").is_file()


def test_the_example_sweeps_parse():
    from pathlib import Path

    sweeps = sorted((Path(__file__).resolve().parents[1] / "notebooks" / "sweeps").glob("*.yaml"))
    assert len(sweeps) >= 2
    for path in sweeps:
        s = dse.load(path)
        assert len(s.points()) > 10 and s.checks["rtl"].points > 0


def test_a_directory_of_other_things_is_not_written_into(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    sweep = dse.parse({"model": "nm_sparse", "params": {"rows": 4}})
    with pytest.raises(AccelError, match="holds no accel dse results"):
        dse.run(sweep, tmp_path, quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_failing_check_is_noted_and_keeps_the_point():
    from accel.dse.evaluate import _check
    from accel.dse.runner import _done

    def boom():
        raise AccelError("synthesis of accel_engine failed: no output")

    row = {"status": "ok", "error": "", "check_error": ""}
    _check(row, "synth", {"synth": True}, boom)
    _check(row, "implement", {"implement": False}, boom)  # not sampled: not run
    assert row == {
        "status": "ok",
        "error": "",
        "check_error": "synth: synthesis of accel_engine failed: no output",
    }
    task = {"checks": {"synth": True, "rtl": False}}
    as_read = {**{k: str(v) for k, v in row.items()}, "syn_lut4": ""}
    assert _done(as_read, task, retry_failed=False)  # tried: not again
    assert not _done(as_read, task, retry_failed=True)
    assert not _done({**as_read, "check_error": ""}, task, retry_failed=False)


def test_autoencoder_at_other_widths():
    """At the shipped widths the sweep's graph is the zoo's, output for output; narrower
    weights are the trained ones rounded half up (ties of 6-bit -> 3-bit: +0.5 LSB up)."""
    from accel import reference, zoo
    from accel.zoo import sweeps as models

    zoo_graph = zoo.get("autoencoder").build()
    x = reference.quantize_inputs(
        zoo_graph, zoo_graph.inputs[0], zoo.get("autoencoder").make_inputs(300, 5)
    )
    np.testing.assert_array_equal(
        reference.predict(models.autoencoder(), x), reference.predict(zoo_graph, x)
    )
    g3 = models.autoencoder(3, 10, 11)
    w6 = next(n for n in zoo_graph.nodes if n.name == "dense").params["weight"]
    w3 = next(n for n in g3.nodes if n.name == "dense").params["weight"]
    assert (w3.type.width, w3.type.frac) == (3, w6.type.frac - 3)
    np.testing.assert_array_equal(w3.data, np.clip(np.floor(w6.data / 8 + 0.5), -4, 3))
    with pytest.raises(AccelError, match="weight_bits must be between 2 and 6"):
        models.autoencoder(7, 10, 11)


@pytest.mark.parametrize(
    ("doc", "want"),
    [
        (
            {"model": "deform_det", "params": {"variant": ["square", "bilinear"]}},
            {"square": {"a_depth": 2048, "bilinear_frac": 0}, "bilinear": {"bilinear_frac": 4}},
        ),
        (
            {"model": "moe_vit", "params": {"task": ["seg", "depth"], "vec_rows": 1}},
            {"seg": {"vec_rows": 1, "group": 8}, "depth": {"vec_rows": 1}},
        ),
    ],
)
def test_engine_sweeps_of_other_families(doc, want):
    """Any zoo model sweeps on the engine: the target configured for each point's graph
    (the model's bank depth, the bilinear sampler, the vector unit), its own quality."""
    from accel.dse import evaluate as ev
    from accel.zoo import sweeps

    s = dse.parse({**doc, "evaluate": {"batch": 2}})
    assert s.arch == "engine"
    axis = next(iter(s.axes))
    for t in tasks(s):
        row = ev.evaluate(t)
        assert row["status"] == "ok", row["error"]
        for k, v in want[t["params"][axis]].items():
            assert row[k] == v, (k, row[k])
        own = {k: t["params"][k] for k in sweeps.spec(doc["model"]).params}
        score = sweeps.spec(doc["model"]).score(own, 0)
        assert score and all(row[k] == v for k, v in score.items())
        assert row["cycles"] > 0 and row["samples_per_s"] > 0
