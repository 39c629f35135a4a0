"""Evaluate one sweep point: cycle model, resource estimate, quality, optional real runs.

:func:`evaluate` never raises: a point that fails (a buffer too small, a
pattern the model does not ship, a tool error) comes back as a row with
``status`` ``failed`` and a one-line ``error``, and the sweep goes on.

Columns, by where their numbers come from:

- the cycle model (exact; checked against the RTL on sampled points): ``cycles``,
  ``cycles_per_sample``, ``latency_cycles``, ``ii_cycles``, ``utilisation``;
  in time at ``clock_mhz`` (the board's clock unless the sweep sets one;
  assumes timing is met): ``samples_per_s``, ``latency_us``;
- the reference and shipped metrics (:mod:`accel.zoo.sweeps`): ``accuracy``,
  higher is better (nm_sparse: held-out digits; deform_det: AP50; moe_vit seg:
  mIoU; from the zoo's metrics.json), ``quality``, lower is better (autoencoder:
  energy-weighted reconstruction error of the integer encoder and the shipped
  decoder; moe_vit depth: RMSE);
- the fitted estimate (``est_*``, :mod:`accel.dse.resources`) and ``fits``
  (estimate against the device's capacity; ``fits_detail`` says what overflows);
- measured, on the points a check ran on: ``rtl_*`` (Verilator),
  ``syn_*`` (yosys synth_ecp5), ``pnr_*`` and ``fmax_mhz`` (yosys + nextpnr).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from accel.dse import devices, resources
from accel.dse.synth import summary, synth
from accel.errors import AccelError

RESOURCE_COLS = list(resources.RESOURCES)
ENGINE_METRICS = [
    "macs",
    "density",
    "cycles",
    "last_out_cycle",
    "cycles_per_sample",
    "gemm_cycles",
    "utilisation",
    "clock_mhz",
    "samples_per_s",
    "latency_us",
    "accuracy",
    "quality",
    "weight_kbits",
]
DATAFLOW_METRICS = [
    "mults",
    "taps",
    "latency_cycles",
    "ii_cycles",
    "clock_mhz",
    "samples_per_s",
    "latency_us",
    "quality",
    "accuracy",
    "density",
    "weight_kbits",
    "multipliers_in",
]
METRICS = {"engine": ENGINE_METRICS, "dataflow": DATAFLOW_METRICS}
CHECK_COLS = [
    "check_error",
    "rtl_checked",
    "rtl_cycles_match",
    "rtl_bit_exact",
    "rtl_last_out",
    "rtl_latency",
    "rtl_ii",
    "rtl_seconds",
    *[f"syn_{r}" for r in RESOURCE_COLS],
    "syn_seconds",
    "pnr_luts",
    "pnr_ff",
    "pnr_dsp",
    "pnr_bram",
    "fmax_mhz",
    "pnr_seconds",
]
HEAD = ["point_id", "status", "error", "model", "arch"]
TAIL = ["eval_seconds"]


def columns(model: str, arch: str) -> list[str]:
    from accel.dse.sweep import parameters

    est = [f"est_{r}" for r in RESOURCE_COLS]
    params = list(parameters(model, arch))
    return [*HEAD, *params, *METRICS[arch], *est, "fits", "fits_detail", *CHECK_COLS, *TAIL]


@contextlib.contextmanager
def _tool_lock(name: str = "accel-dse-tools"):
    """One yosys/nextpnr/Verilator job at a time across the whole Dask cluster."""
    try:
        from distributed import Lock, get_worker

        get_worker()
    except (ImportError, ValueError):
        yield
        return
    with Lock(name):
        yield


def evaluate(task: dict[str, Any]) -> dict[str, Any]:
    """One row of the results table for ``task`` (see :mod:`accel.dse.runner`)."""
    t0 = time.perf_counter()
    p = task["params"]
    row: dict[str, Any] = {
        "point_id": task["id"],
        "model": task["model"],
        "arch": task["arch"],
        **p,
        "status": "ok",
        "error": "",
    }
    try:
        _point(task, row)
    except AccelError as e:
        row.update(status="failed", error=_one_line(str(e)))
    except Exception as e:  # a bug, but one point must not end the sweep
        where = traceback.extract_tb(e.__traceback__)[-1]
        row.update(
            status="failed",
            error=_one_line(
                f"{type(e).__name__}: {e} ({Path(where.filename).name}:{where.lineno})"
            ),
        )
    row["eval_seconds"] = round(time.perf_counter() - t0, 3)
    return row


def _check(row: dict, name: str, checks: dict, run) -> None:
    """Run a real-tool check if the point was sampled for it; a tool's failure is noted in
    ``check_error`` and leaves the point's model columns standing."""
    if not checks.get(name):
        return
    try:
        run()
    except AccelError as e:
        note = f"{name}: {_one_line(str(e))}"
        row["check_error"] = f"{row['check_error']}; {note}" if row.get("check_error") else note


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return (lines[0] if lines else "unknown error")[:300]


def _fit_columns(row: dict, est: dict[str, int], dev: devices.Device) -> None:
    row.update({f"est_{k}": v for k, v in est.items()})
    over = devices.fits(dev, est["lut4"], est["carry"], est["ff"], est["dsp"], est["bram"])
    row["fits"] = not over
    row["fits_detail"] = over


def design(model: str, arch: str, p: dict[str, Any]):
    """The design of a point: the model's graph at its own parameters, on the target
    configured with the point's knobs (the others as the graph and model need)."""
    from accel import targets, zoo
    from accel.zoo.sweeps import spec

    target = targets.get(arch)
    graph = spec(model).build(**{k: p[k] for k in spec(model).params})
    given = {k: p[k] for k in target.knob_names() if p.get(k) is not None}
    prefs = zoo.get(model).targets.get(arch, {})
    return target.compile(graph, target.configure(graph, given, prefs))


def _point(task: dict, row: dict) -> None:
    """Cycle model, estimate, quality and the sampled real-tool checks of one point."""
    from accel.zoo.sweeps import spec

    p, arch = task["params"], task["arch"]
    sp = spec(task["model"])
    own = {k: p[k] for k in sp.params}
    dev = devices.get(p["device"])
    d = design(task["model"], arch, p)
    row.update({k: getattr(d.config, k) for k in d.config.__dataclass_fields__ if k in row})
    x = sp.inputs(own, task["batch"], task["seed"])
    t = d.timing(x)
    clock = task["clock_mhz"] or dev.clock_mhz
    nodsp = d.multipliers > dev.dsps  # as the bitstream flow decides
    row.update({k: v for k, v in t.items() if k in METRICS[arch]})
    row.update(
        clock_mhz=clock,
        samples_per_s=round(clock * 1e6 / t["cycles_per_sample"], 1),
        latency_us=round(t["latency_cycles"] / clock, 4),
    )
    if "cycles_per_sample" in row:
        row["cycles_per_sample"] = round(t["cycles_per_sample"], 2)
    if arch == "dataflow":
        row["multipliers_in"] = "LUTs" if nodsp else "DSPs"
    row.update({k: v for k, v in sp.score(own, task["quality_samples"]).items() if v is not None})
    _fit_columns(row, resources.estimate(arch, d.features(nodsp=nodsp)), dev)
    if d.estimate_gap():
        row.update(fits=None, fits_detail=d.estimate_gap())
    checks = task["checks"]
    _check(row, "rtl", checks, lambda: _rtl(d, x, row))  # the batch the model timed
    _check(row, "synth", checks, lambda: _synth(d.top, d.verilog(), nodsp, row))
    _check(row, "implement", checks, lambda: _implement(dev, d, row))


def _rtl(d, x, row: dict) -> None:
    import numpy as np

    from accel import reference

    with _tool_lock():
        run = d.simulate(x)
    r = run.report
    row.update(
        rtl_checked=True,
        # against this point's cycle model: every output word's valid cycle (engine) or
        # the four interface stamps of every sample (dataflow)
        rtl_cycles_match=bool(run.cycles_match),
        rtl_bit_exact=bool(np.array_equal(run.outputs, reference.predict(d.graph, x))),
        rtl_last_out=r.get("last_output_cycle", {}).get("measured"),
        rtl_latency=r.get("latency", {}).get("measured"),
        rtl_ii=r.get("ii", {}).get("measured"),
        rtl_seconds=round(run.wall_s + run.build_s, 2),
    )


# -- real tool runs -----------------------------------------------------------------
def _synth(top: str, verilog: str, nodsp: bool, row: dict) -> None:
    with _tool_lock(), tempfile.TemporaryDirectory(prefix="accel-dse-syn-") as tmp:
        cells, seconds = synth(verilog, top, Path(tmp), nodsp)
    s = summary(cells)
    row.update({f"syn_{r}": s[r] for r in RESOURCE_COLS})
    row["syn_seconds"] = round(seconds, 1)


def _implement(dev: devices.Device, d, row: dict) -> None:
    from accel.flows import boards, fpga
    from accel.sim.verilator import cache_root

    t0 = time.perf_counter()
    with _tool_lock():
        impl = fpga.implement_cached(
            boards.get(dev.board),
            fpga.BoardTop(d.component),
            cache_root() / "fpga",
            multipliers=d.multipliers,
        )
    comb = impl.utilization.get("TRELLIS_COMB", {}).get("used")
    row.update(
        pnr_luts=comb,
        pnr_ff=impl.flip_flops,
        pnr_dsp=impl.dsps,
        pnr_bram=impl.block_rams,
        fmax_mhz=impl.fmax_mhz,
        pnr_seconds=round(time.perf_counter() - t0, 1),
    )
