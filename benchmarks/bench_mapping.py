"""Every GEMM of every engine model against its ideal, and where the rest goes; prints JSON.

    python benchmarks/bench_mapping.py [--batch 64] [--models nm_sparse@mlp_2-8_bdwp ...]
        [--below 0.9]

For each model the engine runs (by default: the nm_sparse MLP and CNN, dense and
2:8; deform_det regular, square and bilinear; moe_vit) the program of a batch of
its inputs under the engine's default configuration (the one ``accel sim
--arch engine`` builds), and per GEMM from the exact cycle model
(``accel.engine.cycles``, which the Verilator regression checks cycle for
cycle): cycles, ideal (useful MACs / MAC units), utilisation = ideal / cycles,
and the cycles beyond the ideal split three ways (``GemmTiming.losses``):

* ``padding``: issued steps whose MACs are not useful: padded rows (samples),
  columns (outputs past a multiple of the array's columns), reduction lanes (a
  reduction that is not a multiple of the group), zero weights an N:M group
  keeps;
* ``drain_wait``: tiles that wait for the previous tile's drain (a tile of
  fewer steps than the drain's words per tile);
* ``fill``: fetch, pipeline fill and the last tile's drain, once per GEMM.

A batch runs in chunks, so a GEMM name sums its runs. Every GEMM under
``--below`` gets ``causes``: the shape facts behind its padding (a reduction
not a multiple of the group, outputs not a multiple of the columns, samples
not a multiple of the rows, bilinear's four corner reads), or else the largest
of the three losses.
No simulation: the cycle model alone (seconds). One thread.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from accel import reference
from accel.engine.cycles import predict
from accel.targets import compile_for
from accel.zoo import get

MODELS = [
    "nm_sparse@mlp_dense",
    "nm_sparse@mlp_2-8_bdwp",
    "nm_sparse@cnn_dense",
    "nm_sparse@cnn_2-8_bdwp",
    "deform_det@regular",
    "deform_det@square",
    "deform_det@bilinear",
    "moe_vit",
]
FALLBACK = {
    "padding": "padded steps",
    "drain_wait": "tiles shorter than the drain",
    "fill": "pipeline fill and the last drain",
}


def causes(gemm, node, cfg) -> list[str]:
    """The shape facts that make ``gemm`` issue MACs that are not useful."""
    from accel.engine.isa import Deform

    out = []
    if gemm.geometry.deform == Deform.BILINEAR:
        out.append("bilinear sampling: four corner reads per tap")
    w = node.params.get("weight") if node is not None else None
    if w is not None and node.op in ("dense", "conv2d"):
        k_true, c_true = int(np.prod(w.data.shape[:-1])), int(w.data.shape[-1])
        if gemm.dense and k_true < gemm.k:
            out.append(f"reduction of {k_true} in {gemm.k} lanes (words of {cfg.group})")
        elif not gemm.dense and node.attrs.get("nm") is None and k_true < gemm.k:
            words = gemm.k // cfg.group  # a thin first layer's patch, packed N:M
            if k_true < words * gemm.n:
                out.append(f"a patch of {k_true} taps as {words} words of {gemm.n} lanes")
        if c_true < gemm.cols:
            out.append(f"{c_true} outputs on {gemm.cols} columns (tiles of {cfg.cols})")
    if gemm.rows % cfg.rows:
        out.append(f"{gemm.rows} samples in blocks of {cfg.rows} rows")
    return out


def model_rows(name: str, batch: int, below: float) -> dict:
    from accel.engine.program import Gemm

    model = get(name)
    g = model.build()
    design = compile_for(g, "engine", prefs=model.targets.get("engine", {}))
    cfg = design.config
    n = 1 if design.tokens else batch  # a ViT program is one image
    x = reference.quantize_inputs(g, g.inputs[0], model.make_inputs(n, 0))
    prog, _ = design.program(x)
    t = predict(prog)
    nodes = {nd.name: nd for nd in g.nodes}
    specs = [s for s in prog.steps if isinstance(s, Gemm)]
    # a batch runs in chunks (and a ViT per token block): one row per GEMM name
    rows: dict[str, dict] = {}
    for spec, gt in zip(specs, t.gemms, strict=True):
        loss = gt.losses()
        r = rows.setdefault(
            gt.name,
            {"gemm": gt.name, "runs": 0, "cycles": 0, "ideal": 0.0,
             "steps_per_tile": gt.steps, "tile_period": gt.period,
             **dict.fromkeys(loss, 0.0), "causes": causes(spec, nodes.get(gt.name), cfg)},
        )  # fmt: skip
        r["runs"] += 1
        r["cycles"] += gt.cycles
        r["ideal"] += gt.ideal
        for k, v in loss.items():
            r[k] += v
    total = sum(gt.cycles for gt in t.gemms)
    ideal = sum(gt.ideal for gt in t.gemms)
    lost = 0.0
    for r in rows.values():
        r["utilisation"] = round(r["ideal"] / r["cycles"], 3)
        r["share_of_gemm_cycles"] = round(r["cycles"] / total, 4)
        if r["utilisation"] < below:
            lost += r["cycles"] - r["ideal"]
            if not r["causes"]:
                worst = max(FALLBACK, key=lambda k: r[k])
                r["causes"] = [FALLBACK[worst]]
        else:
            r.pop("causes")
        for k in ("ideal", *FALLBACK):
            r[k] = round(r[k], 1)
    return {
        "model": name,
        "samples": n,
        "config": cfg.to_json(),
        "gemm_cycles": total,
        "ideal_cycles": round(ideal, 1),
        "utilisation": round(ideal / total, 3) if total else 0.0,
        "program_cycles": t.total,
        "gemms_below": sum(r["utilisation"] < below for r in rows.values()),
        "cycles_lost_below": round(lost),
        "share_lost_below": round(lost / total, 4) if total else 0.0,
        "gemms": list(rows.values()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--below", type=float, default=0.9)
    args = ap.parse_args()
    out = {
        "below": args.below,
        "models": [model_rows(m, args.batch, args.below) for m in args.models],
    }
    print(json.dumps(out, indent=1, default=_plain))


def _plain(o: object) -> object:
    return o.item() if isinstance(o, np.generic) else str(o)


if __name__ == "__main__":
    main()
