"""Real tool runs for a sweep point: yosys ``synth_ecp5`` cell counts, optional full P&R.

Synthesis of the bare core (no board wrapper) is what the resource estimate is
calibrated on (``accel.dse.calibrate``). ``nodsp`` synthesizes every multiplier
into LUTs, as the bitstream flow does when a design has more multipliers than
the device has DSP blocks.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

from accel.errors import AccelError

# the cells a sweep reports, by their ECP5 primitive names
CELLS = {
    "lut4": "LUT4",
    "ff": "TRELLIS_FF",
    "dsp": "MULT18X18D",
    "bram": "DP16KD",
    "carry": "CCU2C",
    "lutram": "TRELLIS_DPR16X4",
}


def verilog_hash(verilog: str) -> str:
    return hashlib.sha256(verilog.encode()).hexdigest()[:16]


def synth(verilog: str, top: str, work: Path, nodsp: bool = False) -> tuple[dict[str, int], float]:
    """(cells by ECP5 primitive, seconds) of ``synth_ecp5`` on one Verilog module."""
    from accel.flows.fpga import _tool, synth_stats

    t0 = time.perf_counter()
    if not nodsp:
        cells = synth_stats(verilog, top, work)
        return cells, time.perf_counter() - t0
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{top}.v").write_text(verilog)
    script = f"read_verilog {top}.v; synth_ecp5 -nodsp -top {top}; tee -q -o stat.json stat -json"
    log = work / "yosys.log"
    with open(log, "w") as f:
        r = subprocess.run(
            [_tool("yosys"), "-q", "-p", script], cwd=work, stdout=f, stderr=subprocess.STDOUT
        )
    if r.returncode != 0:
        tail = (log.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise AccelError(f"synthesis of {top} failed: {tail}")
    cells = json.loads((work / "stat.json").read_text())["design"]["num_cells_by_type"]
    return cells, time.perf_counter() - t0


def summary(cells: dict[str, int]) -> dict[str, int]:
    """The cells a sweep reports, under their short names (0 when absent)."""
    return {k: int(cells.get(v, 0)) for k, v in CELLS.items()}
