"""The layering ARCHITECTURE.md draws, enforced: the IR, the reference, the compilers, the
cycle models and the targets layer import no hardware or simulator code."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE = [
    "accel.ir",
    "accel.fixed",
    "accel.reference",
    "accel.kernels",
    "accel.intops",
    "accel.deform",
    "accel.nm",
    "accel.compiler.dataflow",
    "accel.perf",
    "accel.engine.config",
    "accel.engine.isa",
    "accel.engine.program",
    "accel.engine.compile",
    "accel.engine.graph",
    "accel.engine.vit",
    "accel.engine.vector",
    "accel.engine.cycles",
    "accel.targets",
    "accel.zoo",
    "accel.zoo.sweeps",
    "accel.hexio",
    "accel.knobs",
]
HARDWARE = ("amaranth", "accel.rtl", "accel.sim", "accel.flows")


@pytest.mark.parametrize("module", PURE)
def test_pure_layers_import_no_hardware(module):
    code = (
        f"import sys, {module}\n"
        f"bad = sorted(m for m in sys.modules if m.startswith({HARDWARE!r}))\n"
        "print(' '.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [], f"{module} imports {out[:5]}"
