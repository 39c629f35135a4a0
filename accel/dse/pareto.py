"""Pareto fronts and the plots ``accel dse`` writes (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def front(values: np.ndarray, maximize: list[bool]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (n points x k objectives).

    A point is dominated when another is at least as good in every objective
    and strictly better in one. Rows with a NaN are never on the front.
    Duplicates of a front point are all on it.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 2 or v.shape[1] != len(maximize):
        raise ValueError("values must be (n, k) with one direction per objective")
    sign = np.where(maximize, -1.0, 1.0)
    v = v * sign  # now every objective is minimized
    ok = ~np.isnan(v).any(axis=1)
    mask = np.zeros(len(v), bool)
    idx = np.flatnonzero(ok)
    pts = v[idx]
    for j, p in enumerate(pts):
        no_worse = (pts <= p).all(axis=1)
        better = (pts < p).any(axis=1)
        mask[idx[j]] = not (no_worse & better).any()
    return mask


# name -> (x, y, maximize x, maximize y, color-by candidates, title)
PLOTS = {
    "engine": [
        ("throughput_vs_luts", "est_lut4", "samples_per_s", False, True, "pattern"),
        ("throughput_vs_dsps", "est_dsp", "samples_per_s", False, True, "pattern"),
        ("accuracy_vs_weight_bits", "weight_kbits", "accuracy", False, True, "pattern"),
        ("density_vs_cycles", "density", "cycles_per_sample", False, False, "macs"),
    ],
    "dataflow": [
        ("throughput_vs_luts", "est_lut4", "samples_per_s", False, True, "weight_bits"),
        ("throughput_vs_dsps", "est_dsp", "samples_per_s", False, True, "weight_bits"),
        ("quality_vs_weight_bits", "weight_kbits", "quality", False, False, "weight_bits"),
        ("accuracy_vs_weight_bits", "weight_kbits", "accuracy", False, True, "reuse"),
        ("latency_vs_luts", "est_lut4", "latency_us", False, False, "reuse"),
    ],
}
LABELS = {
    "est_lut4": "LUT4 (estimate)",
    "est_dsp": "MULT18X18D (estimate)",
    "samples_per_s": "samples/s at the clock",
    "accuracy": "held-out accuracy",
    "quality": "energy-weighted error (lower is better)",
    "weight_kbits": "stored weight kbit",
    "density": "N/M (kept weights per group)",
    "cycles_per_sample": "cycles per sample",
    "latency_us": "latency (µs)",
}


def fronts(df, arch: str) -> dict[str, list[str]]:
    """Point ids on each plot's front (ok rows only)."""
    ok = df[df["status"] == "ok"]
    out = {}
    for name, x, y, mx, my, _ in PLOTS[arch]:
        if x not in ok or y not in ok:
            continue
        vals = ok[[x, y]].apply(_numeric).to_numpy(float)
        if np.isnan(vals).all(axis=0).any():
            continue
        mask = front(vals, [mx, my])
        out[name] = list(ok["point_id"][mask])
    return out


def _numeric(col):
    import pandas as pd

    return pd.to_numeric(col, errors="coerce")


def plot(df, arch: str, out_dir: Path, title: str = "") -> list[Path]:
    """Every plot of ``arch`` that the table has data for, as PNGs in ``out_dir``."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    out_dir.mkdir(parents=True, exist_ok=True)
    ok = df[df["status"] == "ok"]
    paths = []
    for name, x, y, mx, my, by in PLOTS[arch]:
        if x not in ok or y not in ok:
            continue
        xs, ys = _numeric(ok[x]).to_numpy(float), _numeric(ok[y]).to_numpy(float)
        good = ~(np.isnan(xs) | np.isnan(ys))
        if not good.any():
            continue
        fig = Figure(figsize=(6, 4.2))
        ax = fig.subplots()
        draw(ax, ok[good], x, y, mx, my, by)
        ax.set_title(f"{title}: {name.replace('_', ' ')}" if title else name.replace("_", " "))
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        tmp = out_dir / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=110)
        tmp.replace(path)
        paths.append(path)
    return paths


def draw(ax, df, x: str, y: str, mx: bool, my: bool, by: str | None = None) -> None:
    """Scatter ``y`` against ``x`` (coloured by ``by``) with the Pareto front as a step line."""
    xs, ys = _numeric(df[x]).to_numpy(float), _numeric(df[y]).to_numpy(float)
    groups = [("", np.ones(len(df), bool))]
    if by and by in df and df[by].nunique() > 1:
        groups = [(f"{by}={v}", (df[by] == v).to_numpy()) for v in sorted(df[by].unique(), key=str)]
    for label, m in groups:
        ax.scatter(xs[m], ys[m], s=18, alpha=0.75, label=label or None)
    mask = front(np.stack([xs, ys], 1), [mx, my])
    order = np.argsort(xs[mask])
    ax.step(xs[mask][order], ys[mask][order], where="post", color="k", lw=1)  # best y at cost <= x
    ax.scatter(xs[mask], ys[mask], s=60, facecolors="none", edgecolors="k", label="Pareto front")
    ax.set_xlabel(LABELS.get(x, x))
    ax.set_ylabel(LABELS.get(y, y))
    if x in ("est_lut4", "est_dsp", "weight_kbits") and np.nanmin(xs) > 0:
        _log(ax.xaxis, ax.set_xscale, xs)
    if y in ("samples_per_s", "cycles_per_sample") and np.nanmin(ys) > 0:
        _log(ax.yaxis, ax.set_yscale, ys)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _log(axis, set_scale, values) -> None:
    """Log scale with plain numbers (10k, 1M) when the values span a decade or more."""
    from matplotlib.ticker import EngFormatter, NullFormatter

    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) and v.max() / v.min() >= 10:
        set_scale("log")
        axis.set_minor_formatter(NullFormatter())
    axis.set_major_formatter(EngFormatter(sep=""))
