"""The MoE ViT on the engine: cost per task, gated vs all experts; prints JSON.

    python benchmarks/bench_moe_vit.py [--images 1] [--vec-rows N] [--fpga | --fpga-only]

* per task (seg, depth), for the task's own top-2 experts ("gated") and for
  all four experts of each MoE layer ("all_experts", a cost comparison only):
  MACs (FLOPs = 2 x MACs) of the whole network and of its MoE layers, engine
  cycles per inference (cycle model; the gated graphs are also run under
  Verilator here, bit-exact with the reference and cycle-exact, asserted),
  weight bytes fetched per inference, and where the cycles go: per layer
  type, the cycles and the MAC-array utilisation (useful MACs / (the array's MAC units
  x cycles)), the vector unit's ops and the loads;
* the task switch: cycles of a seg inference after a depth inference vs
  after another seg inference (the cycle model, checked under Verilator in
  tests/test_engine_vit.py);
* simulation speed (cycles/s of the Verilator run) and reference throughput;
* ``--vec-rows N``: the engine with a vector unit of N rows' lanes (a unit
  8 / N times smaller, vector instructions 8 / N times longer);
* ``--fpga``: also the engine behind the UART bridge on the ULX3S 85F (yosys,
  nextpnr router2 for at most ``--pnr-minutes``): cells, and the routed Fmax
  or, when routing does not finish, nextpnr's post-placement estimate;
  ``--fpga-only`` skips everything else.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

import numpy as np
from timing import best_of

from accel import reference
from accel.engine.cycles import predict
from accel.engine.isa import Target
from accel.engine.program import Gemm, Load
from accel.engine.vector import Vec
from accel.engine.vit import compile_inferences, engine_config, step_cycles
from accel.sim.engine import run_inferences
from accel.zoo import MODELS
from accel.zoo.moe_vit.model import build

KINDS = [  # moe_vit's GEMMs by node name
    (r"^embed$", "embed"),
    (r"_[qkv]\d+$", "qkv"),
    (r"_s\d+$", "scores QK^T"),
    (r"_o\d+$", "attention PV"),
    (r"_proj$", "proj"),
    (r"_mlp_fc\d$", "mlp"),
    (r"_e\d+_fc\d$", "experts"),
    (r"_head$", "head"),
]
LOADS = {Target.A: "load inputs", Target.B: "load weights", Target.BIAS: "load biases"}


def kind(step) -> str:
    if isinstance(step, Load):
        return LOADS[step.target]
    if isinstance(step, Vec):
        return f"vector {step.vop.name.lower()}"
    return next(name for pattern, name in KINDS if re.search(pattern, step.name))


def profile(cfg, tp, timing, index: int = 0) -> dict:
    """Cycles, MACs and utilisation per kind of step for one inference."""
    rows: dict[str, dict] = {}
    for step, cycles in step_cycles(tp, timing, index):
        r = rows.setdefault(kind(step), {"cycles": 0, "useful_macs": 0})
        r["cycles"] += cycles
        if isinstance(step, Gemm):
            r["useful_macs"] += step.useful_macs
    for r in rows.values():
        if r["useful_macs"]:
            r["utilisation"] = round(r["useful_macs"] / (cfg.macs * r["cycles"]), 3)
        else:
            del r["useful_macs"]
    return rows


def weight_bytes(graph) -> dict:
    """Bytes of parameters an inference fetches (8-bit weights, wider biases and betas)."""
    w = b = 0
    for n in graph.nodes:
        for name, p in n.params.items():
            size = p.data.size * -(-p.type.width // 8)
            if name in ("weight", "value", "gamma"):
                w += size
            else:
                b += size
    return {"weights": w, "biases_and_betas": b, "total": w + b}


def moe_macs(graph) -> int:
    return sum(
        n.params["weight"].data.size * graph.tensors[n.inputs[0]].shape[0]
        for n in graph.nodes
        if n.op == "dense" and re.search(r"_e\d+_fc\d$", n.name)
    )


def task_costs(cfg, task: str, images: np.ndarray) -> dict:
    out = {}
    for label, all_experts in (("gated", False), ("all_experts", True)):
        g = build(task=task, all_experts=all_experts)
        tp = compile_inferences(cfg, [(g, images[0]), (g, images[0])])
        timing = predict(tp.program)
        prof = profile(cfg, tp, timing, 1)
        macs = sum(s.useful_macs for s in tp.program.steps[slice(*tp.bodies[1])]
                   if isinstance(s, Gemm))  # fmt: skip
        out[label] = {
            "cycles_per_inference": sum(r["cycles"] for r in prof.values()),
            "macs": macs,
            "moe_macs": moe_macs(g),
            "fetched_bytes": weight_bytes(g),
            "profile": prof,
        }
    gated, full = out["gated"], out["all_experts"]
    out["saving"] = {
        "macs": round(1 - gated["macs"] / full["macs"], 3),
        "moe_macs": round(1 - gated["moe_macs"] / full["moe_macs"], 3),
        "cycles": round(1 - gated["cycles_per_inference"] / full["cycles_per_inference"], 3),
        "fetched_bytes": round(
            1 - gated["fetched_bytes"]["total"] / full["fetched_bytes"]["total"], 3
        ),
    }
    return out


def switch(cfg, images: np.ndarray) -> dict:
    seg, depth = build(task="seg"), build(task="depth")
    after = {}
    for label, prev in (("after_seg", seg), ("after_depth", depth)):
        tp = compile_inferences(cfg, [(prev, images[0]), (seg, images[1])])
        ends = [0, *predict(tp.program).ends]
        first, end = tp.bodies[1]
        after[label] = ends[end] - ends[first]
    after["extra_cycles"] = after["after_depth"] - after["after_seg"]
    return {"seg_inference_cycles": after}


def simulate(cfg, images: np.ndarray) -> dict:
    """Both tasks under Verilator, asserted bit-exact and cycle-exact."""
    graphs = [build(task=t) for t in ("seg", "depth")]
    runs = [(g, x) for x in images for g in graphs]
    tp = compile_inferences(cfg, runs)
    outs, run = run_inferences(tp)
    for (g, x), y in zip(runs, outs, strict=True):
        assert np.array_equal(y, reference.predict(g, x[np.newaxis])[0]), g.name
    assert run.cycles_match, "Verilator cycles differ from the cycle model"
    return {
        "inferences": len(runs),
        "cycles": run.cycles,
        "sim_cycles_per_s": round(run.cycles / run.wall_s),
        "mismatches": 0,
        "cycles_match_model": True,
    }


def fpga(cfg, pnr_minutes: float) -> dict:
    """The engine behind the UART bridge on the ULX3S 85F: yosys, nextpnr (router2)."""
    from accel.flows.boards import get as get_board
    from accel.flows.fpga import BoardTop, PlaceRouteTimeout, implement_cached
    from accel.rtl.engine.core import Engine
    from accel.sim.verilator import cache_root

    print("implementing the vector engine (yosys, nextpnr) ...", file=sys.stderr)
    try:
        impl = implement_cached(
            get_board("ulx3s-85f"),
            BoardTop(lambda: Engine(cfg)),
            cache_root() / "fpga",
            multipliers=cfg.macs,
            pnr_minutes=pnr_minutes,
            router="router2",
            progress=lambda s: print(f"  {s}", file=sys.stderr),
        )
    except PlaceRouteTimeout as e:
        return e.summary()
    return {"routed": True, **impl.summary()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--images",
        type=int,
        default=1,
        help="images per task under Verilator (2 fill the 512-instruction memory past its end)",
    )
    ap.add_argument(
        "--array",
        default="8x8",
        help="square array (4x4 needs --bank-words 2048 for the all-experts comparison)",
    )
    ap.add_argument("--bank-words", type=int, default=512)
    ap.add_argument(
        "--vec-rows", type=int, default=0, help="rows the vector unit holds at once (0: all 8)"
    )
    ap.add_argument("--fpga", action="store_true", help="also implement it on the ULX3S 85F")
    ap.add_argument("--pnr-minutes", type=float, default=60)
    ap.add_argument("--fpga-only", action="store_true", help="only the FPGA implementation")
    args = ap.parse_args()
    cfg = engine_config(args.array, args.bank_words, args.vec_rows)
    if args.fpga_only:
        print(json.dumps({"config": cfg.to_json(), "fpga": fpga(cfg, args.pnr_minutes)}, indent=1))
        return
    g = build(task="seg")
    floats = MODELS["moe_vit"].make_inputs(max(args.images, 200), 0)
    raw = reference.quantize_inputs(g, g.inputs[0], floats)
    t_ref = best_of(lambda: reference.predict(g, raw))
    result = {
        "config": cfg.to_json(),
        "reference_images_per_s": round(len(raw) / t_ref, 1),
        "tasks": {},
    }
    for task in ("seg", "depth"):
        print(f"costs of {task} ...", file=sys.stderr)
        result["tasks"][task] = task_costs(cfg, task, raw)
    result["task_switch"] = switch(cfg, raw)
    print("running both tasks under Verilator ...", file=sys.stderr)
    result["verilator"] = simulate(cfg, raw[: args.images])
    if args.fpga:
        result["fpga"] = fpga(cfg, args.pnr_minutes)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
