"""Each RTL block alone on the ULX3S 85F's part: logic depth, Fmax, the critical path.

    python benchmarks/bench_blocks.py [BLOCK ...] [--synth-only] [--vec-rows N] [--reuse R]
                                      [--freq MHZ] [--seed S] [--minutes M]
    python benchmarks/bench_blocks.py --engine [--vec-rows N] [--minutes M] [--router R]
                                      [--placer heap|static]

Blocks (``accel.flows.blocks``): requant, drain, agen, sampler, mac_array,
vector, dot_conv, dot_dense (default: all). Each is built between registers
(inputs from a shift chain, outputs captured), synthesized with yosys
``synth_ecp5`` (LUT levels on the worst register-to-register path, and the
signals it runs between), then placed and routed alone with nextpnr-ecp5
(one seed; ``--freq`` is the target the placer and router work towards).
Results are cached under ``$ACCEL_CACHE/blocks`` by the block's Verilog.

``--engine``: the whole 8x8 engine of the timing goal (``blocks.engine_config``;
with ``--vec-rows`` the vector engine) behind the UART bridge on the ULX3S 85F,
clocked from the PLL at the engine's ``target_mhz``, through the board flow
(``accel.flows.fpga.implement_cached``): cells, routed Fmax and critical path,
or the router's state when ``--minutes`` runs out.
Prints one JSON document; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from accel.flows import blocks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", metavar="BLOCK")
    ap.add_argument("--synth-only", action="store_true", help="logic depth only, no nextpnr")
    ap.add_argument("--vec-rows", type=int, default=1, help="the vector unit's rows (0: all)")
    ap.add_argument("--reuse", type=int, default=16, help="the autoencoder's reuse factor")
    ap.add_argument("--freq", type=float, default=150, help="nextpnr's target (MHz)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=10, help="bound on each place and route")
    ap.add_argument("--engine", action="store_true", help="the whole engine on the board")
    ap.add_argument("--model", default="autoencoder", help="whose dataflow layers (a zoo name)")
    ap.add_argument("--mult", default="dsp", help="dataflow products: dsp or fabric")
    ap.add_argument("--router", default="router2", help="nextpnr's router (router1, router2)")
    ap.add_argument("--placer", default="heap", help="nextpnr's placer (heap, static)")
    args = ap.parse_args()
    if args.engine:
        print(json.dumps(engine(args), indent=1))
        return
    from accel import zoo

    graph = zoo.get(args.model).build()
    table = blocks.blocks(vec_rows=args.vec_rows, reuse=args.reuse, graph=graph, mult=args.mult)
    names = args.names or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        ap.error(f"unknown block(s) {', '.join(unknown)} (known: {', '.join(table)})")
    out = []
    for name in names:
        block = table[name]

        def say(s: str, name=name) -> None:
            print(f"{name}: {s}", file=sys.stderr, flush=True)

        doc = blocks.synthesize(block, progress=say)
        doc.pop("cells")
        if not args.synth_only:
            pnr = blocks.place_and_route(
                block, seed=args.seed, freq_mhz=args.freq, minutes=args.minutes, progress=say
            )
            doc.update(
                {k: pnr[k] for k in ("fmax_mhz", "critical_path", "seconds")},
                target_mhz=args.freq,
            )
            say(f"{doc['fmax_mhz']} MHz, {doc['levels']} LUT levels")
        out.append(doc)
    print(json.dumps({"board": "ulx3s-85f", "seed": args.seed, "blocks": out}, indent=1))


def engine(args) -> dict:
    from accel.flows import fpga
    from accel.flows.boards import get as get_board
    from accel.rtl.engine.core import Engine
    from accel.sim.verilator import cache_root

    vec = "--vec-rows" in sys.argv
    cfg = blocks.vector_config(args.vec_rows) if vec else blocks.engine_config()
    t0 = time.perf_counter()
    try:
        impl = fpga.implement_cached(
            get_board("ulx3s-85f"),
            fpga.BoardTop(lambda: Engine(cfg)),
            cache_root() / "fpga",
            seed=args.seed,
            multipliers=cfg.macs,
            pnr_minutes=args.minutes,
            router=args.router,
            placer=args.placer,
            progress=lambda s: print(f"engine: {s}", file=sys.stderr, flush=True),
        )
        doc = {"routed": True, **impl.summary(), "timing_met": impl.report(0, 1)["timing_met"]}
    except fpga.PlaceRouteTimeout as e:
        doc = e.summary()
    doc.update(config=cfg.to_json(), wall_s=round(time.perf_counter() - t0))
    return doc


if __name__ == "__main__":
    main()
