"""The resource estimate: linear in structural features, fitted to real yosys runs.

For each kind of design (the engine; the dataflow pipeline, its multipliers in
DSP blocks or in LUTs) and each ECP5 cell count yosys ``synth_ecp5`` reports (LUT4,
TRELLIS_FF, MULT18X18D, DP16KD, CCU2C), the estimate is a non-negative
combination of a few features (:mod:`accel.dse.designs`), fitted by
non-negative least squares on *relative* error over the ``fit`` runs of
``data/calibration.json``. Its error is measured on the ``holdout`` runs,
which the fit never sees. ``python -m accel.dse.resources`` refits and writes
``data/fit.json``; a test refits from the shipped runs and compares.

Everything here estimates synthesis of the bare core: place and route packs
LUT4s and carries into slices (nextpnr's TRELLIS_COMB = LUT4 + 2 x CCU2C,
roughly) and a board wrapper adds a little; a real run is the
``implement`` check of a sweep.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

from accel.errors import AccelError

DATA = Path(__file__).parent / "data"
FIT = DATA / "fit.json"
RESOURCES = ("lut4", "ff", "dsp", "bram", "carry")
CELL = {"lut4": "LUT4", "ff": "TRELLIS_FF", "dsp": "MULT18X18D", "bram": "DP16KD", "carry": "CCU2C"}

# (design kind) -> resource -> features; [] means the resource is always 0
MODELS: dict[str, dict[str, list[str]]] = {
    "engine": {
        "lut4": ["one", "mux_bits", "acc_bits", "drain_bits", "a_word_bits"],
        "ff": ["one", "acc_bits", "word_bits", "a_word_bits", "b_word_bits"],
        "dsp": ["macs"],
        "bram": ["bram_blocks"],
        "carry": ["one", "acc_bits", "drain_bits", "rows"],
    },
    # one model for DSP and LUT multipliers: the features say which (dsp_mults, lut_mult_area)
    "dataflow": {
        "lut4": ["one", "mults", "mux_bits", "in_bits", "lut_mult_area", "lane_reg_bits"],
        "ff": ["one", "mult_bits", "acc_bits", "out_bits", "in_bits", "lane_reg_bits"],
        "dsp": ["dsp_mults"],
        "bram": [],
        "carry": ["one", "taps", "in_bits", "lut_mult_area"],
    },
}


def _runs(calibration: dict, kind: str) -> list[dict]:
    return [r for r in calibration["runs"] if r["arch"] == kind]


def _nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls

    return nnls(x, y)[0]


def _errors(pred: np.ndarray, meas: np.ndarray) -> dict[str, float | None]:
    """Relative errors in percent of the measured count (absolute when it is 0)."""
    if len(meas) == 0:
        return {"n": 0, "mean_abs_pct": None, "max_abs_pct": None}
    rel = np.abs(pred - meas) / np.maximum(meas, 1) * 100
    return {
        "n": len(meas),
        "mean_abs_pct": round(float(rel.mean()), 2),
        "max_abs_pct": round(float(rel.max()), 2),
    }


def fit(calibration: dict) -> dict:
    """Coefficients and errors (on the fit runs and on the held-out runs) of every model."""
    out: dict = {"models": {}}
    for k, spec in MODELS.items():
        runs = _runs(calibration, k)
        train = [r for r in runs if r["split"] == "fit"]
        held = [r for r in runs if r["split"] == "holdout"]
        model = {"runs": {"fit": len(train), "holdout": len(held)}, "resources": {}}
        for res, feats in spec.items():
            meas_t = np.array([r["cells"].get(CELL[res], 0) for r in train], float)
            meas_h = np.array([r["cells"].get(CELL[res], 0) for r in held], float)
            if not feats or not train:
                coef = np.zeros(len(feats))
            else:
                x = np.array([[r["features"][f] for f in feats] for r in train], float)
                w = 1 / np.maximum(meas_t, 1)  # relative error
                coef = _nnls(x * w[:, None], meas_t * w)
            entry = {
                "features": feats,
                "coef": [float(c) for c in coef],
                "fit_error": _errors(_predict(feats, coef, train), meas_t),
                "holdout_error": _errors(_predict(feats, coef, held), meas_h),
            }
            model["resources"][res] = entry
        out["models"][k] = model
    out["tools"] = calibration.get("tools", {})
    return out


def _predict(feats: list[str], coef, runs: list[dict]) -> np.ndarray:
    if not feats or not runs:
        return np.zeros(len(runs))
    x = np.array([[r["features"][f] for f in feats] for r in runs], float).reshape(len(runs), -1)
    return x @ np.asarray(coef, float)


@lru_cache(maxsize=1)
def shipped() -> dict:
    if not FIT.is_file():
        raise AccelError(f"no resource fit at {FIT}; run python -m accel.dse.resources")
    return json.loads(FIT.read_text())


def estimate(arch: str, features: dict[str, float]) -> dict[str, int]:
    """Estimated synth_ecp5 cells of one design (``lut4``, ``ff``, ``dsp``, ``bram``, ``carry``)."""
    model = shipped()["models"][arch]["resources"]
    out = {}
    for res in RESOURCES:
        m = model[res]
        v = sum(c * features[f] for f, c in zip(m["features"], m["coef"], strict=True))
        out[res] = round(v)
    return out


def table(doc: dict) -> list[dict]:
    """Flat rows (kind, resource, fit and held-out errors) for reports and the README."""
    rows = []
    for k, model in doc["models"].items():
        for res, m in model["resources"].items():
            if m["features"]:
                rows.append(
                    {
                        "kind": k,
                        "resource": res,
                        "features": " + ".join(m["features"]),
                        "fit_runs": m["fit_error"]["n"],
                        "fit_mean_pct": m["fit_error"]["mean_abs_pct"],
                        "holdout_runs": m["holdout_error"]["n"],
                        "holdout_mean_pct": m["holdout_error"]["mean_abs_pct"],
                        "holdout_max_pct": m["holdout_error"]["max_abs_pct"],
                    }
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    from accel.dse.calibrate import load

    doc = fit(load())
    FIT.write_text(json.dumps(doc, indent=1) + "\n")
    for r in table(doc):
        print(
            f"{r['kind']:<15} {r['resource']:<6} fit {r['fit_mean_pct']}% "
            f"({r['fit_runs']} runs)  held out: mean {r['holdout_mean_pct']}% "
            f"max {r['holdout_max_pct']}% ({r['holdout_runs']} runs)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
