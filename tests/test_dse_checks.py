"""accel dse against the real tools: the cycle model against the RTL on randomly sampled
sweep points (exact), and the resource estimate against the shipped yosys runs."""

import json

import numpy as np
import pytest

from accel import dse
from accel.dse import calibrate, designs, resources

# README, "Design-space exploration": the held-out errors it states (mean |error| in %)
STATED_HOLDOUT_MEAN_PCT = {
    ("engine", "lut4"): 6,
    ("engine", "ff"): 2,
    ("engine", "dsp"): 0,
    ("engine", "bram"): 1,
    ("engine", "carry"): 1,
    ("dataflow", "lut4"): 12,
    ("dataflow", "ff"): 3,
    ("dataflow", "dsp"): 1,
    ("dataflow", "carry"): 10,
}


@pytest.fixture(scope="module")
def cal():
    return calibrate.load()


def test_refit_from_the_shipped_runs_gives_the_shipped_fit(cal):
    doc = resources.fit(cal)
    shipped = json.loads(resources.FIT.read_text())
    for kind, model in shipped["models"].items():
        for res, m in model["resources"].items():
            new = doc["models"][kind]["resources"][res]
            assert new["features"] == m["features"]
            # float NNLS coefficients: the refit reproduces them up to float rounding
            np.testing.assert_allclose(new["coef"], m["coef"], rtol=1e-9, atol=1e-9)
            assert new["holdout_error"] == m["holdout_error"], (kind, res)


def test_held_out_error_is_what_the_readme_says(cal):
    doc = resources.fit(cal)
    for (kind, res), bound in STATED_HOLDOUT_MEAN_PCT.items():
        err = doc["models"][kind]["resources"][res]["holdout_error"]
        assert err["n"] >= 4, (kind, res)
        assert err["mean_abs_pct"] <= bound, (kind, res, err)


def test_held_out_runs_are_never_fitted(cal):
    """Refitting without the held-out runs changes nothing: they carry no weight in the fit."""
    doc = resources.fit(cal)
    only_fit = {**cal, "runs": [r for r in cal["runs"] if r["split"] == "fit"]}
    doc2 = resources.fit(only_fit)
    for kind, model in doc["models"].items():
        for res, m in model["resources"].items():
            assert m["coef"] == doc2["models"][kind]["resources"][res]["coef"]
    assert {r["split"] for r in cal["runs"]} == {"fit", "holdout", "reference"}


def test_features_of_the_calibration_runs_are_what_the_code_computes(cal):
    """The shipped features come from the same functions the sweep calls (engine points; the
    dataflow ones need a lowering each, two of them are enough to catch a change)."""
    from accel.compiler.dataflow import lower
    from accel.engine.config import EngineConfig
    from accel.zoo import sweeps as models

    eng = [r for r in cal["runs"] if r["arch"] == "engine"]
    for r in eng:
        assert designs.engine_features(EngineConfig(**r["point"])) == r["features"]
    df = [r for r in cal["runs"] if r["arch"] == "dataflow"][:2]
    for r in df:
        p = r["point"]
        g = models.autoencoder(p["weight_bits"], p["input_bits"], p["act_bits"])
        assert designs.dataflow_features(g, lower(g, p["reuse"]), p["nodsp"]) == r["features"]


def test_dsp_and_bram_follow_the_structure(cal):
    """DSP blocks are the multipliers (engine: one per MAC; dataflow: a few lanes whose
    weights are all powers of two become shifts); BRAMs are the block count computed from
    the engine's buffer shapes."""
    for r in cal["runs"]:
        dsp = r["cells"].get("MULT18X18D", 0)
        if r["arch"] == "engine":
            assert dsp == r["features"]["macs"]
            assert r["cells"].get("DP16KD", 0) == r["features"]["bram_blocks"]
        elif r["arch"] == "dataflow":
            mults = r["features"]["dsp_mults"]
            assert 0.95 * mults <= dsp <= mults


# -- the cycle model against the RTL, on sampled points ----------------------------
@pytest.mark.slow  # builds several engines; the dataflow check below runs by default
def test_engine_cycle_model_equals_rtl_on_sampled_points(tmp_path):
    """nm_sparse MLP and CNN, four patterns, two batch sizes' worth of chunking; three
    points drawn at random are run under Verilator (one engine build, the regression's)."""
    sweep = dse.parse(
        {
            "model": "nm_sparse",
            "params": {
                "rows": 4,
                "cols": 8,
                "a_depth": 512,
                "b_depth": 4096,
                "bias_depth": 64,
                "net": ["mlp", "cnn"],
                "pattern": ["dense", "2:4", "2:8", "1:4"],
            },
            "evaluate": {"batch": 24, "rtl": {"points": 3, "seed": 7}},
        }
    )
    s = dse.run(sweep, tmp_path / "out", workers=2, quiet=True, plots=False)
    df = dse.frame(tmp_path / "out" / "results.csv")
    checked = df[df["rtl_checked"] == True]  # noqa: E712
    assert len(checked) == 3 and s["checks"]["rtl"]["points"] == 3
    assert (checked["rtl_cycles_match"] == True).all()  # noqa: E712
    assert (checked["rtl_bit_exact"] == True).all()  # noqa: E712
    assert (checked["rtl_last_out"] == checked["last_out_cycle"]).all()
    assert s["rtl_mismatches"] == 0
    assert (df["status"] == "ok").all()


def test_dataflow_cycle_model_equals_rtl_on_a_sampled_point(tmp_path):
    sweep = dse.parse(
        {
            "model": "autoencoder",
            "params": {"reuse": [4, 6], "weight_bits": [6, 4]},
            "evaluate": {"quality_samples": 200, "batch": 24, "rtl": {"points": 1}},
        }
    )
    dse.run(sweep, tmp_path / "out", workers=1, quiet=True, plots=False)
    df = dse.frame(tmp_path / "out" / "results.csv")
    (r,) = df[df["rtl_checked"] == True].itertuples()  # noqa: E712
    assert r.rtl_cycles_match and r.rtl_bit_exact
    assert (r.rtl_latency, r.rtl_ii) == (r.latency_cycles, r.ii_cycles)


@pytest.mark.slow
def test_synth_check_against_the_estimate(tmp_path):
    """A real yosys run on a sampled point lands within the stated held-out error."""
    sweep = dse.parse(
        {
            "model": "nm_sparse",
            "params": {"rows": [2, 4], "cols": 8, "b_depth": 2048, "bias_depth": 64},
            "evaluate": {"synth": {"points": 1}},
        }
    )
    s = dse.run(sweep, tmp_path / "out", workers=1, quiet=True, plots=False)
    err = s["checks"]["synth"]["estimate_mean_abs_pct"]
    assert err["dsp"] == 0
    assert err["lut4"] < 3 * STATED_HOLDOUT_MEAN_PCT[("engine", "lut4")]


@pytest.mark.slow
def test_synth_check_of_a_dataflow_point_with_lut_multipliers(tmp_path):
    """On the 12F (28 DSP blocks) reuse 64's 38 multipliers go to LUTs, as in the bitstream
    flow; the real synthesis with -nodsp lands within the stated error."""
    sweep = dse.parse(
        {
            "model": "autoencoder",
            "params": {"reuse": 64, "device": "ulx3s-12f"},
            "evaluate": {"synth": True, "quality_samples": 100},
        }
    )
    s = dse.run(sweep, tmp_path / "out", workers=1, quiet=True, plots=False)
    (r,) = dse.frame(tmp_path / "out" / "results.csv").itertuples()
    assert r.multipliers_in == "LUTs" and r.syn_dsp == 0 and r.est_dsp == 0
    assert abs(r.est_lut4 - r.syn_lut4) / r.syn_lut4 < 0.15, (r.est_lut4, r.syn_lut4)
    assert s["checks"]["synth"]["points"] == 1
