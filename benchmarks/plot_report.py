"""Plot an ``accel report --json`` document: our design beside da4ml's.

accel report autoencoder --json > report.json
python benchmarks/plot_report.py report.json docs/report_autoencoder.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

METRICS = [
    ("luts", "LUT4"),
    ("flip_flops", "flip-flops"),
    ("dsps", "DSP blocks"),
    ("fmax_mhz", "Fmax (MHz)"),
    ("latency_ns", "latency (ns)"),
    ("samples_per_s", "samples/s at Fmax"),
]


def main(src: str, dst: str) -> None:
    doc = json.loads(Path(src).read_text())
    designs = doc["designs"]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3 * len(METRICS), 3.2))
    for ax, (key, label) in zip(axes, METRICS, strict=True):
        names = list(designs)
        raw = [designs[n].get(key) for n in names]
        values = [v or 0 for v in raw]
        bars = ax.bar(names, values, color=["#3b6ea5", "#c46b2d"][: len(names)])
        # a design that did not route has no Fmax, nor anything timed by it
        labels = [f"{v:,.4g}" if v is not None else "not routed" for v in raw]
        ax.bar_label(bars, labels=labels, fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.tick_params(labelsize=8)
        ax.margins(y=0.2)
    fig.suptitle(f"{doc['model']} on {doc['board']}: same UART bridge, same yosys/nextpnr flow")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:3])
