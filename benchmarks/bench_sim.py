"""Simulation speed under cocotb + Verilator against the plain-Verilator ceiling; prints JSON.

    python benchmarks/bench_sim.py [--designs engine vector dataflow] [--repeat 3]

For each design, in the same run and on the same Verilated model (one build):

* ``cocotb``: the regression's path, cocotb driving the test through the
  harness (:mod:`accel.sim.harness`), cycles/s as the regression reports it
  (the test's wall time from its start to the harness's ``done``);
* ``plain``: the same model and input files in a bare C++ loop (no cocotb, no
  VPI), the ceiling; ``fraction`` is cocotb's best over plain's best.

Both are also given per CPU second of the simulator process (``*_cpu_s``,
``fraction_cpu``): on a shared machine the wall-clock figures move with the
load of other jobs, the CPU-time ones much less. Runs alternate cocotb and
plain, so both see the same load.

Designs: ``engine``, the nm_sparse MLP (2:8) on the 8x8 engine of
``bench_engine.py`` (groups of 8); ``engine_bilinear``, the same with the
bilinear sampler, as ``accel sim nm_sparse --arch engine`` builds it;
``vector``, two moe_vit images on the 8x8 engine with the vector unit
(``accel sim moe_vit --arch engine``);
``dataflow``, the autoencoder at reuse 1 (one cycle per sample). Every run's
outputs are checked against the reference (asserted), so a speed-up cannot
come from a broken model. ``--verilator-args`` / ``--make-vars`` / ``--passes``
(the yosys passes before Verilator) try other build options (a separate cached
build).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

from accel import reference, zoo


def engine_case(n: int, bilinear_frac: int = 0):
    from accel.engine.config import EngineConfig
    from accel.engine.graph import compile_graph, outputs

    graph = zoo.get("nm_sparse").build()
    # bench_engine.py's engine; the CLI's default adds the bilinear sampler (frac 4)
    cfg = EngineConfig(8, 8, group=8, a_depth=512, b_depth=4096, bilinear_frac=bilinear_frac)
    x = reference.quantize_inputs(graph, graph.inputs[0], zoo.get("nm_sparse").make_inputs(n, 1))
    program, sizes = compile_graph(graph, cfg, x)

    def check(lines):
        y = outputs(program, sizes, graph, lines).reshape(len(x), -1)
        assert np.array_equal(y, reference.predict(graph, x).reshape(len(x), -1))

    sampler = f", bilinear sampler (frac {bilinear_frac})" if bilinear_frac else ""
    return cfg, program, check, f"nm_sparse MLP 2:8, {n} samples, 8x8 engine{sampler}"


def vector_case(n: int):
    from accel.engine.vit import compile_tokens, engine_config, token_outputs

    model = zoo.get("moe_vit")
    graph = model.build()
    cfg = engine_config("8x8", 512)
    x = reference.quantize_inputs(graph, graph.inputs[0], model.make_inputs(n, 1))
    tp = compile_tokens(graph, cfg, x)

    def check(lines):
        assert np.array_equal(np.stack(token_outputs(tp, lines)), reference.predict(graph, x))

    return cfg, tp.program, check, f"moe_vit, {n} images, 8x8 engine with the vector unit"


def engine_sim(cfg, program, build_args, make_vars, passes=None):
    from accel.engine.isa import word_width
    from accel.sim.engine import SIM_PASSES, TOP, engine_rtlil, engine_verilog
    from accel.sim.verilator import StreamSim

    words, n_out = program.words(), program.n_out_words()
    sim = StreamSim(
        engine_verilog(cfg),
        TOP,
        word_width(cfg),
        cfg.group * cfg.acc_bits,
        max(len(words), n_out),
        build_args,
        make_vars,
        ("" if cfg.vector else SIM_PASSES) if passes is None else passes,
        engine_rtlil(cfg),
    )
    return sim, words, {"n_out": n_out}


def dataflow_sim(n: int, build_args, make_vars, passes=None):
    from accel.backends import dataflow_rtlil, dataflow_verilog
    from accel.compiler.dataflow import lower
    from accel.sim.harness import pack_hex, unpack_hex
    from accel.sim.verilator import StreamSim

    model = zoo.get("autoencoder")
    graph = model.build()
    x = reference.quantize_inputs(graph, graph.inputs[0], model.make_inputs(n, 1))
    plan = lower(graph, 1)
    top, verilog = dataflow_verilog(plan)
    w_in, w_out = plan.n_in * plan.in_type.width, plan.n_out * plan.out_type.width
    sim = StreamSim(
        verilog, top, w_in, w_out, n, build_args, make_vars, passes, dataflow_rtlil(plan)[1]
    )
    t = plan.out_type

    def check(lines):
        y = unpack_hex(lines, t.width, plan.n_out, t.signed).reshape(len(x), -1)
        assert np.array_equal(y, reference.predict(graph, x).reshape(len(x), -1))

    words = pack_hex(x.reshape(len(x), plan.n_in), plan.in_type.width)
    return sim, words, {}, check, f"autoencoder at reuse 1, {n} samples"


def measure(name, sim, words, kw, check, what, repeat: int) -> dict:
    t0 = time.perf_counter()
    build_s = sim.build()
    sim.build_plain()
    build_total = time.perf_counter() - t0
    cocotb, plain, cycles = [], [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        run = sim.run(words, **kw)
        process_s = time.perf_counter() - t0
        check(run.outputs)
        cycles = run.cycles
        cocotb.append(
            {
                "cycles_per_s": round(run.cycles / run.wall_s),
                "cycles_per_cpu_s": round(run.cycles / max(run.cpu_s, 1e-9)),
                "process_s": round(process_s, 3),
            }
        )
        p = sim.run_plain(words, **kw)
        assert p["cycles"] == run.cycles, (p, run.cycles)
        plain.append(
            {
                "cycles_per_s": round(p["cycles"] / p["wall_s"]),
                "cycles_per_cpu_s": round(p["cycles"] / max(p["cpu_s"], 1e-9)),
            }
        )
    best_c = max(r["cycles_per_s"] for r in cocotb)
    best_p = max(r["cycles_per_s"] for r in plain)
    return {
        "design": name,
        "workload": what,
        "cycles": cycles,
        "yosys_passes": sim.passes,
        "build_s": round(build_s, 1),
        "build_with_plain_s": round(build_total, 1),
        "cocotb_cycles_per_s": best_c,
        "cocotb_median": round(statistics.median(r["cycles_per_s"] for r in cocotb)),
        "cocotb_cycles_per_cpu_s": max(r["cycles_per_cpu_s"] for r in cocotb),
        "plain_cycles_per_s": best_p,
        "plain_median": round(statistics.median(r["cycles_per_s"] for r in plain)),
        "plain_cycles_per_cpu_s": max(r["cycles_per_cpu_s"] for r in plain),
        "fraction": round(best_c / best_p, 3),
        "fraction_cpu": round(
            max(r["cycles_per_cpu_s"] for r in cocotb) / max(r["cycles_per_cpu_s"] for r in plain),
            3,
        ),
        "runs": {"cocotb": cocotb, "plain": plain},
    }


def main(argv=None) -> int:
    from accel.sim import verilator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--designs", nargs="+", default=["engine", "vector", "dataflow"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--engine-samples", type=int, default=5000)
    ap.add_argument("--vector-images", type=int, default=2)
    ap.add_argument("--dataflow-samples", type=int, default=60000)
    ap.add_argument("--verilator-args", help="replaces the build's Verilator options")
    ap.add_argument("--make-vars", help="replaces the build's make variables")
    ap.add_argument("--passes", help="replaces the yosys passes before Verilator ('' for none)")
    args = ap.parse_args(argv)
    build_args = args.verilator_args.split() if args.verilator_args else None
    out = {
        "build_args": build_args or verilator.BUILD_ARGS,
        "make_vars": args.make_vars or verilator.MAKE_VARS,
        "load_average": os.getloadavg(),
        "designs": [],
    }
    for name in args.designs:
        print(f"bench_sim: {name}", file=sys.stderr, flush=True)
        if name == "dataflow":
            case = dataflow_sim(args.dataflow_samples, build_args, args.make_vars, args.passes)
        else:
            if name == "vector":
                cfg, program, check, what = vector_case(args.vector_images)
            else:
                frac = 4 if name == "engine_bilinear" else 0
                cfg, program, check, what = engine_case(args.engine_samples, frac)
            sim, words, kw = engine_sim(cfg, program, build_args, args.make_vars, args.passes)
            case = (sim, words, kw, check, what)
        out["designs"].append(measure(name, *case, repeat=args.repeat))
    out["load_average_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
