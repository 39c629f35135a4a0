"""Throughput of every engine on the autoencoder, measured in one run; prints JSON.

    python benchmarks/bench_autoencoder.py [--samples N] [--reuse 1 4]

* reference: numpy samples/s (best of 3);
* rtl: the generated Verilog under cocotb + Verilator, samples/s and cycles/s
  of the simulation itself (the wall time between reset release and the last
  output, measured inside the cocotb test; Verilator builds are cached and
  reported separately);
* amaranth: the same design in Amaranth's Python simulator;
* per reuse factor: multipliers, latency, II, and II against the ideal
  (useful MACs per sample / multipliers).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from timing import best_of

from accel import backends, reference, zoo
from accel.compiler.dataflow import lower
from accel.sim import pysim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=60000)
    ap.add_argument("--reuse", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--amaranth-samples", type=int, default=200)
    args = ap.parse_args()

    model = zoo.get("autoencoder")
    graph = model.build()
    x = reference.quantize_inputs(graph, "charges", model.make_inputs(args.samples, 123))
    want = reference.predict(graph, x)
    t_ref = best_of(lambda: reference.predict(graph, x))
    result = {
        "model": "autoencoder",
        "samples": args.samples,
        "reference": {"samples_per_s": round(args.samples / t_ref)},
        "rtl": [],
    }
    for r in args.reuse:
        plan = lower(graph, r)
        print(f"reuse {r}: building/running Verilator ...", file=sys.stderr)
        run = backends.run_rtl(graph, x, r)
        assert np.array_equal(run.outputs, want) and run.cycles_match
        macs = sum(s.n_taps for s in plan.stages)
        ideal_ii = max(s.n_taps / s.n_mult for s in plan.stages)
        result["rtl"].append(
            {
                "reuse": r,
                "multipliers": sum(s.n_mult for s in plan.stages),
                "useful_macs_per_sample": macs,
                "latency_cycles": run.timing.latency,
                "ii_cycles": run.timing.ii,
                "ii_ideal": round(ideal_ii, 3),
                "ii_efficiency": round(ideal_ii / run.timing.ii, 3),
                "sim_cycles": run.cycles,
                "sim_samples_per_s": round(args.samples / run.wall_s),
                "sim_cycles_per_s": round(run.cycles / run.wall_s),
                "sim_macs_per_s": round(macs * args.samples / run.wall_s),
                "build_s": round(run.build_s, 1),
                "bit_exact": True,
                "cycles_match_model": True,
            }
        )
    n = args.amaranth_samples
    y, stats = pysim.run(lower(graph, 1), x[:n])
    assert np.array_equal(y, want[:n])
    result["amaranth"] = {
        "reuse": 1,
        "samples": n,
        "samples_per_s": round(n / stats["wall_s"], 1),
        "cycles_per_s": round(stats["cycles"] / stats["wall_s"], 1),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
