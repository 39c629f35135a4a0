"""Quantization-aware training in torch, bit-exact with accel.fixed (torch is an optional extra)."""


def retrain_main(prog: str, weights_dir, train_all, argv: list[str] | None = None) -> None:
    """``python -m PROG``: retrain a zoo model's shipped weights and metrics.json."""
    import argparse
    from pathlib import Path

    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("-o", "--out", type=Path, default=weights_dir)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    train_all(args.out, args.seed)
