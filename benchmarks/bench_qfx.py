"""Trainable fixed point: the module's own types vs learned binary points vs
multiplier-free weights (K = 2, K = 1), at equal bit widths, over seeds. Prints JSON.

    python benchmarks/bench_qfx.py [--model autoencoder|nm_sparse] [--seeds 0 1 2]
        [--epochs N] [--n-train N] [--ship DIR]

autoencoder: ``accel.training.autoencoder.train`` (QAT only) scored on the README's
held-out set (energy-weighted error, sliced EMD proxy, MSE); ``--ship DIR`` keeps each
scheme's first-seed weights as ``encoder_int_<scheme>.npz``, ``decoder_<scheme>.npz``
and ``metrics_<scheme>.json``. nm_sparse: the MLP at 2:8 (BDWP), held-out accuracy of
the integer graph.
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


def _autoencoder(name: str, seed: int, args) -> dict:
    from accel.training.autoencoder import train

    with tempfile.TemporaryDirectory() as tmp:
        m = train(
            epochs=args.epochs or EPOCHS_AE,
            n_train=args.n_train or N_TRAIN_AE,
            seed=seed,
            out_dir=Path(tmp),
            progress=False,
            float_baseline=False,
            **SCHEMES[name],
        )
        if args.ship and seed == args.seeds[0]:
            args.ship.mkdir(parents=True, exist_ok=True)
            for f, ext in (("encoder_int", "npz"), ("decoder", "npz"), ("metrics", "json")):
                shutil.copy(Path(tmp) / f"{f}.{ext}", args.ship / f"{f}_{name}.{ext}")
    q = m["quantized"]
    return {**{k: q[k] for k in METRICS["autoencoder"]}, "types": m["types"]}


def _nm_sparse(name: str, seed: int, args) -> dict:
    from accel.training.nm_sparse import train

    doc = train(
        epochs=args.epochs, n_train=args.n_train, seed=seed, progress=False, nm="2:8",
        net="mlp", method="bdwp", **SCHEMES[name],
    )  # fmt: skip
    row = doc["rows"][0]
    return {"accuracy": row["accuracy"], "types": row.get("types")}


METRICS = {
    "autoencoder": ("energy_weighted_error", "sliced_emd_cm", "mse"),
    "nm_sparse": ("accuracy",),
}
RUN = {"autoencoder": _autoencoder, "nm_sparse": _nm_sparse}
EPOCHS_AE, N_TRAIN_AE = 25, 100_000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=list(RUN), default="autoencoder")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, help="default: the trainer's")
    p.add_argument("--n-train", type=int, help="default: the trainer's")
    p.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=list(SCHEMES))
    p.add_argument("--ship", type=Path, help="autoencoder: keep each scheme's weights here")
    args = p.parse_args()
    runs = []
    for name in args.schemes:
        for seed in args.seeds:
            t0 = time.perf_counter()
            r = RUN[args.model](name, seed, args)
            runs.append({"scheme": name, "seed": seed, **r,
                         "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
            first = METRICS[args.model][0]
            print(f"{name} seed {seed}: {first} {r[first]:.4f}", file=sys.stderr)
    summary = {}
    for name in args.schemes:
        rows = [r for r in runs if r["scheme"] == name]
        summary[name] = {
            k: {
                "mean": float(np.mean([r[k] for r in rows])),
                "std": float(np.std([r[k] for r in rows])),
            }
            for k in METRICS[args.model]
        }
    doc = {
        "model": args.model,
        "settings": {"epochs": args.epochs, "n_train": args.n_train, "seeds": args.seeds},
        "summary": summary,
        "runs": runs,
    }
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
