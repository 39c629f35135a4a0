"""Deformable vs regular depthwise convolution on the engine; prints JSON.

    python benchmarks/bench_deform.py [--size 16] [--channels 32] [--batch 32]
        [--ranges 1 2 3 5 7] [--detector] [--no-layer] [--synth]

* one depthwise 3x3 layer at a fixed shape, run under Verilator (bit-exact
  with numpy and cycle-exact with the model, both asserted): cycles of the
  regular conv and of CoDeNet's square-shape deformable conv for each offset
  range R (the offset conv's GEMM and the depthwise GEMM separately), with
  the line buffer a streaming design needs (2R + 1 input rows), once with a
  1x1 offset conv, and the bilinear (general) form; ``ideal_cycles``: useful
  MACs / the array's MAC units, the cycles no mapping onto the array beats;
* ``--detector``: the zoo's deform_det (each shipped variant: regular, square,
  square1x1 with 1x1 offset convs, bilinear): cycles per frame, and frames/s at
  the clock given by ``--mhz``;
* ``--synth``: the engine core's yosys cells with the sampler, 8x8 array.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from accel import reference
from accel.engine.config import EngineConfig
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.ir import Graph, Param
from accel.sim.engine import run_graph

ACT = Quant(FixedType(8, 4, False), Rounding.RND, Overflow.SAT)
W4 = FixedType(4, 2)
FRAC = 4  # bilinear offsets' fraction bits: the engine's bilinear_frac


def layer(size: int, channels: int, mode: str, r: int, ok: int = 3, seed: int = 0) -> Graph:
    """One depthwise 3x3 layer (regular, or square-offset deformable with a ``ok`` x ``ok``
    offset conv), ReLU, 8-bit out."""
    rng = np.random.default_rng(seed)
    g = Graph(f"dw_{mode}_{r}_{ok}")
    x = g.add_input("x", (size, size, channels), ACT)
    params = {"weight": Param(rng.integers(-8, 8, (3, 3, channels)), W4)}
    n_off = {"regular": 0, "square": 1, "bilinear": 18}[mode]
    if n_off:
        params["offset_weight"] = Param(
            rng.integers(-2, 3, (ok, ok, channels, n_off)), FixedType(4, 3)
        )
        params["offset_bias"] = Param(np.full(n_off, 2 * r), FixedType(8, 2))
    frac = FRAC if mode == "bilinear" else 0
    y = g.add(
        "deform_conv2d", x, name="dw", mode=mode, max_offset=r, offset_frac=frac, params=params
    )
    g.mark_output(g.add("requantize", g.add("relu", y), quant=ACT))
    return g


def run_layer(cfg: EngineConfig, g: Graph, x: np.ndarray) -> dict:
    y, run = run_graph(g, cfg, x)
    assert np.array_equal(y, reference.predict(g, x)), g.name
    assert run.cycles_match, f"{g.name}: RTL cycles differ from the cycle model"
    cycles: dict[str, int] = {}
    ideal: dict[str, float] = {}
    for t in run.model.gemms:  # a layer runs once per chunk
        cycles[t.name] = cycles.get(t.name, 0) + t.cycles
        ideal[t.name] = ideal.get(t.name, 0) + t.ideal
    return {
        "gemms": cycles,
        "cycles": sum(cycles.values()),
        "utilisation": {k: round(ideal[k] / cycles[k], 3) for k in cycles},
        # useful MACs / MAC units: the cycles no mapping onto this array beats
        "ideal_cycles": round(sum(ideal.values())),
        "sim_cycles_per_s": round(run.cycles / run.wall_s),
    }


def sweep(cfg: EngineConfig, size: int, channels: int, batch: int, ranges: list[int]) -> dict:
    x = np.random.default_rng(1).integers(0, 256, (batch, size, size, channels))
    regular = run_layer(cfg, layer(size, channels, "regular", 0), x)
    rows = []
    cases = [("square", r, 3) for r in ranges] + [("square", ranges[-1], 1)]
    cases += [("bilinear", r, 3) for r in (1, 4)]
    for mode, r, ok in cases:
        print(f"{mode} offsets, R = {r}, {ok}x{ok} offset conv ...", file=sys.stderr)
        m = run_layer(cfg, layer(size, channels, mode, r, ok), x)
        # rows a streaming design buffers: every sample, and bilinear's lower corner
        lines = 2 * r + 1 + (mode == "bilinear")
        rows.append(
            {
                "mode": mode,
                "max_offset": r,
                "offset_kernel": ok,
                **m,
                "vs_regular": round(m["cycles"] / regular["cycles"], 3),
                "ideal_vs_regular": round(m["ideal_cycles"] / regular["cycles"], 3),
                "line_buffer_rows": lines,
                "line_buffer_bytes": lines * size * channels,
            }
        )
    return {
        "shape": [size, size, channels],
        "batch": batch,
        "regular": {**regular, "line_buffer_rows": 3, "line_buffer_bytes": 3 * size * channels},
        "deformable": rows,
    }


def detector(cfg: EngineConfig, mhz: float, n: int) -> list[dict]:
    from accel.zoo import get as get_model
    from accel.zoo.deform_det.model import available

    out = []
    shipped = available()
    for variant in [v for v in ("regular", "square", "square1x1", "bilinear") if v in shipped]:
        model = get_model(f"deform_det@{variant}")
        g = model.build()
        x = reference.quantize_inputs(g, g.inputs[0], model.make_inputs(n, 0))
        print(f"deform_det@{variant} on the engine ...", file=sys.stderr)
        m = run_layer(cfg, g, x)
        per_frame = m["cycles"] / n
        out.append(
            {
                "variant": variant,
                "frames": n,
                **m,
                "cycles_per_frame": round(per_frame, 1),
                "ideal_cycles_per_frame": round(m["ideal_cycles"] / n, 1),
                "clock_mhz": mhz,
                "frames_per_s": round(mhz * 1e6 / per_frame, 1),
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--ranges", type=int, nargs="*", default=[1, 2, 3, 5, 7])
    ap.add_argument("--detector", action="store_true")
    ap.add_argument("--no-layer", action="store_true", help="skip the one-layer sweep")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--mhz", type=float, default=25.0, help="clock for frames/s (default 25)")
    ap.add_argument("--synth", action="store_true")
    args = ap.parse_args()
    cfg = EngineConfig(rows=8, cols=8, group=8, a_depth=2048, b_depth=4096, bilinear_frac=FRAC)
    result = {"config": cfg.to_json()}
    if not args.no_layer:
        result["layer"] = sweep(cfg, args.size, args.channels, args.batch, args.ranges)
    if args.detector:
        result["detector"] = detector(cfg, args.mhz, args.frames)
    if args.synth:
        from accel.flows.fpga import synth_stats
        from accel.rtl.engine.core import to_verilog

        print("synthesizing the 8x8 engine (yosys) ...", file=sys.stderr)
        hw = EngineConfig(rows=8, cols=8, group=8, a_depth=512, b_depth=2048)
        cells = synth_stats(to_verilog(hw, "engine"), "engine", Path(tempfile.mkdtemp()))
        result["synth"] = {"config": hw.to_json(), "cells": cells}
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
