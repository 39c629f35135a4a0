"""deform_det training recipes over seeds: AP50 and dilation shares; one JSON line per run.

    python benchmarks/deform_det_seeds.py RUN [RUN ...] [-o runs.jsonl] [--weights DIR]

A RUN is ``variant:seed[:frozen[:offset_lr]]``: ``frozen`` the float epochs the
offset convs stay fixed before they learn (default: the trainer's, all of them
for square variants), ``offset_lr`` their learning rate relative to the rest's
(default 0.1). Every run trains on the shipped recipe's 5,000 images and scores
float and quantized (integer Graph, ``accel.reference``) AP50 on the 1,000
held-out images; ``dilation_above_1`` is the share of each square layer's
output pixels (those 1,000 images) whose integer dilation is above 1. With
``--weights`` each run's weights go to ``DIR/{variant}_s{seed}_f{frozen}_l{lr}.npz``.
One thread; runs one after another.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("-o", "--out", type=Path)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()

    from accel.training import deform_det as dd
    from accel.zoo.deform_det import model as zm

    train_data, test = dd.training_set(dd.N_TRAIN), dd.test_set()
    for run in args.runs:
        parts = run.split(":")
        variant, seed = parts[0], int(parts[1])
        frozen = int(parts[2]) if len(parts) > 2 and parts[2] != "" else None
        lr = float(parts[3]) if len(parts) > 3 else dd.OFFSET_LR
        print(f"{run} ...", file=sys.stderr)
        row, weights, fracs = dd.train_variant(
            variant, seed=seed, progress=args.progress, train_data=train_data, test=test,
            frozen_float=frozen, offset_lr=lr,
        )  # fmt: skip
        row["run"] = run
        if args.weights is not None:
            args.weights.mkdir(parents=True, exist_ok=True)
            name = f"{variant}_s{seed}_f{row['offsets_frozen_epochs']}_l{lr}.npz"
            zm.save_weights(args.weights / name, zm.get_variant(variant), weights, fracs)
            row["file"] = name
        line = json.dumps(row)
        print(line, flush=True)
        if args.out is not None:
            with args.out.open("a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
