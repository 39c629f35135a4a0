"""Trainable fixed point on the autoencoder: the ECON-T types vs learned binary points vs
multiplier-free weights (K = 2, K = 1), at equal bit widths, over seeds. Prints JSON.

    python benchmarks/bench_qfx.py [--seeds 0 1 2] [--epochs 25] [--n-train 100000]
        [--ship DIR]

Each run is ``accel.training.autoencoder.train`` (QAT only) scored on the README's
held-out set; ``--ship DIR`` keeps each scheme's seed-0 weights as
``encoder_int_<scheme>.npz``, ``decoder_<scheme>.npz`` and ``metrics_<scheme>.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCHEMES = {
    "fixed": {"points": "fixed"},
    "learned": {"points": "learned"},
    "khot2": {"points": "learned", "khot": 2},
    "khot1": {"points": "learned", "khot": 1},
}
METRICS = ("energy_weighted_error", "sliced_emd_cm", "mse")


def main() -> None:
    from accel.training.autoencoder import EPOCHS, N_TRAIN, train

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--n-train", type=int, default=N_TRAIN)
    p.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=list(SCHEMES))
    p.add_argument("--ship", type=Path, help="keep each scheme's first-seed weights here")
    args = p.parse_args()
    runs = []
    for name in args.schemes:
        for seed in args.seeds:
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                m = train(
                    epochs=args.epochs,
                    n_train=args.n_train,
                    seed=seed,
                    out_dir=Path(tmp),
                    progress=False,
                    float_baseline=False,
                    **SCHEMES[name],
                )
                if args.ship and seed == args.seeds[0]:
                    args.ship.mkdir(parents=True, exist_ok=True)
                    for f, stem in (
                        ("encoder_int", "npz"),
                        ("decoder", "npz"),
                        ("metrics", "json"),
                    ):
                        shutil.copy(Path(tmp) / f"{f}.{stem}", args.ship / f"{f}_{name}.{stem}")
            q = m["quantized"]
            runs.append(
                {
                    "scheme": name,
                    "seed": seed,
                    **{k: q[k] for k in METRICS},
                    "types": m["types"],
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            print(f"{name} seed {seed}: {q['energy_weighted_error']:.4f}", file=sys.stderr)
    summary = {}
    for name in args.schemes:
        rows = [r for r in runs if r["scheme"] == name]
        summary[name] = {
            k: {
                "mean": float(np.mean([r[k] for r in rows])),
                "std": float(np.std([r[k] for r in rows])),
            }
            for k in METRICS
        }
    doc = {
        "settings": {"epochs": args.epochs, "n_train": args.n_train, "seeds": args.seeds},
        "summary": summary,
        "runs": runs,
    }
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
