"""Evaluate one sweep point: cycle model, resource estimate, quality, optional real runs.

:func:`evaluate` never raises: a point that fails (a buffer too small, a
pattern the model does not ship, a tool error) comes back as a row with
``status`` ``failed`` and a one-line ``error``, and the sweep goes on.

Columns, by where their numbers come from:

- the cycle model (exact; checked against the RTL on sampled points): ``cycles``,
  ``cycles_per_sample``, ``latency_cycles``, ``ii_cycles``, ``utilisation``;
  in time at ``clock_mhz`` (the board's clock unless the sweep sets one;
  assumes timing is met): ``samples_per_s``, ``latency_us``;
- the reference and shipped metrics: ``accuracy`` (nm_sparse, held-out digits,
  from the zoo's metrics.json), ``quality`` (autoencoder: energy-weighted
  reconstruction error, lower is better, integer encoder + shipped decoder);
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

from accel.dse import designs, devices, models, resources
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
    "weight_kbits",
    "multipliers_in",
]
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


def columns(arch: str) -> list[str]:
    from accel.dse.sweep import PARAMS

    metrics = ENGINE_METRICS if arch == "engine" else DATAFLOW_METRICS
    est = [f"est_{r}" for r in RESOURCE_COLS]
    return [*HEAD, *PARAMS[arch], *metrics, *est, "fits", "fits_detail", *CHECK_COLS, *TAIL]


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
        if task["arch"] == "engine":
            _engine(task, row)
        else:
            _dataflow(task, row)
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


def _clock(task: dict, dev: devices.Device) -> float:
    return task["clock_mhz"] or dev.clock_mhz


def _fit_columns(row: dict, est: dict[str, int], dev: devices.Device) -> None:
    row.update({f"est_{k}": v for k, v in est.items()})
    over = devices.fits(dev, est["lut4"], est["carry"], est["ff"], est["dsp"], est["bram"])
    row["fits"] = not over
    row["fits_detail"] = over


# -- the engine ---------------------------------------------------------------------
def engine_config(p: dict):
    from accel.engine.config import EngineConfig

    return EngineConfig(**{k: p[k] for k in designs.ENGINE_CONFIG_KEYS})


def _engine(task: dict, row: dict) -> None:
    from accel.engine.cycles import predict
    from accel.engine.graph import compile_graph
    from accel.nm import NM

    p = task["params"]
    dev = devices.get(p["device"])
    cfg = engine_config(p)
    method = None if p["method"] == "default" else p["method"]
    graph = models.nm_sparse(p["net"], p["pattern"], method)
    x = models.nm_sparse_inputs(p["net"], task["batch"], task["seed"])
    program, _ = compile_graph(graph, cfg, x)
    timing = predict(program)
    gemm = sum(g.cycles for g in timing.gemms)
    useful = sum(g.useful_macs for g in timing.gemms)
    clock = _clock(task, dev)
    pattern = None if p["pattern"].strip().lower() == "dense" else NM.parse(p["pattern"])
    b_words = sum(len(s.words) for s in program.steps if getattr(s, "target", None) == _b())
    row.update(
        macs=cfg.macs,
        density=1.0 if pattern is None else pattern.n / pattern.m,
        cycles=timing.total,
        last_out_cycle=int(timing.out_valid[-1]),
        cycles_per_sample=round(timing.total / len(x), 2),
        gemm_cycles=gemm,
        utilisation=round(useful / (cfg.macs * gemm), 4),
        clock_mhz=clock,
        samples_per_s=round(clock * 1e6 * len(x) / timing.total, 1),
        latency_us=round(timing.total / clock, 3),
        accuracy=models.nm_sparse_accuracy(p["net"], p["pattern"], method),
        weight_kbits=round(b_words * cfg.cols * (cfg.b_bits + cfg.idx_bits) / 1000, 1),
    )
    est = resources.estimate("engine", designs.engine_features(cfg))
    _fit_columns(row, est, dev)
    checks = task["checks"]
    _check(row, "rtl", checks, lambda: _engine_rtl(graph, cfg, x, timing, row))
    _check(row, "synth", checks, lambda: _synth(*designs.engine_verilog(cfg), False, row))
    _check(row, "implement", checks, lambda: _implement_engine(dev, cfg, row))


def _implement_engine(dev, cfg, row: dict) -> None:
    from accel.flows.fpga import BoardTop
    from accel.rtl.engine.core import Engine

    _implement(dev, BoardTop(lambda: Engine(cfg)), cfg.macs, row)


def _b():
    from accel.engine.isa import Target

    return Target.B


def _engine_rtl(graph, cfg, x, timing, row: dict) -> None:
    import numpy as np

    from accel import reference
    from accel.sim.engine import run_graph

    with _tool_lock():
        y, run = run_graph(graph, cfg, x)
    row.update(
        rtl_checked=True,
        # every output word's valid cycle, measured, against this row's cycle model
        rtl_cycles_match=bool(np.array_equal(run.out_valid, timing.out_valid)),
        rtl_bit_exact=bool(np.array_equal(y, reference.predict(graph, x))),
        rtl_last_out=int(run.out_valid[-1]),
        rtl_seconds=round(run.wall_s + run.build_s, 2),
    )


# -- the dataflow pipeline ----------------------------------------------------------
def dataflow_graph(model: str, p: dict):
    """The graph of a dataflow point: the autoencoder at the point's widths, or a zoo model."""
    if model == "autoencoder":
        return models.autoencoder(p["weight_bits"], p["input_bits"], p["act_bits"])
    from accel import zoo
    from accel.dse.sweep import DATAFLOW_PARAMS

    for k in ("weight_bits", "input_bits", "act_bits"):
        if p[k] != DATAFLOW_PARAMS[k][1]:
            raise AccelError(f"{k}: only the autoencoder is requantized to other widths")
    return zoo.get(model).build()


def _dataflow(task: dict, row: dict) -> None:
    from accel.compiler.dataflow import lower
    from accel.perf import DataflowTiming

    p = task["params"]
    dev = devices.get(p["device"])
    graph = dataflow_graph(task["model"], p)
    plan = lower(graph, p["reuse"])
    timing = DataflowTiming(tuple(plan.reuse))
    n_mult = sum(st.n_mult for st in plan.stages)
    nodsp = n_mult > dev.dsps  # as the bitstream flow decides
    feats = designs.dataflow_features(graph, plan, nodsp)
    clock = _clock(task, dev)
    weight_bits = {
        n.name: n.params["weight"].type.width for n in graph.nodes if "weight" in n.params
    }
    row.update(
        mults=int(feats["mults"]),
        taps=int(feats["taps"]),
        latency_cycles=timing.latency,
        ii_cycles=timing.ii,
        clock_mhz=clock,
        samples_per_s=round(clock * 1e6 / timing.ii, 1),
        latency_us=round(timing.latency / clock, 4),
        weight_kbits=round(sum(st.n_taps * weight_bits[st.name] for st in plan.stages) / 1000, 2),
        multipliers_in="LUTs" if nodsp else "DSPs",
    )
    if task["model"] == "autoencoder":
        row["quality"] = round(
            models.autoencoder_quality(
                p["weight_bits"], p["input_bits"], p["act_bits"], task["quality_samples"]
            ),
            5,
        )
    elif graph.meta.get("family") == "N:M sparse training":
        m = graph.meta
        row["accuracy"] = models.nm_sparse_accuracy(m["net"], m["pattern"], m["method"])
    est = resources.estimate("dataflow", feats)
    _fit_columns(row, est, dev)
    checks = task["checks"]
    _check(row, "rtl", checks, lambda: _dataflow_rtl(graph, p["reuse"], task, row))
    _check(row, "synth", checks, lambda: _synth(*designs.dataflow_verilog(plan), nodsp, row))
    _check(
        row,
        "implement",
        checks,
        lambda: _implement(dev, _dataflow_top(plan), int(feats["mults"]), row),
    )


def _dataflow_top(plan):
    from accel.flows.fpga import BoardTop

    return BoardTop.dataflow(plan)


def _dataflow_rtl(graph, reuse: int, task: dict, row: dict) -> None:
    import numpy as np

    from accel import engines, reference, zoo

    name = graph.inputs[0]
    model = zoo.get(task["model"])
    x = reference.quantize_inputs(graph, name, model.make_inputs(task["rtl_samples"], task["seed"]))
    with _tool_lock():
        run = engines.run_rtl(graph, x, reuse)
    m = run.measured
    row.update(
        rtl_checked=True,
        # four interface stamps of every sample, measured, against the cycle model
        rtl_cycles_match=bool(run.cycles_match),
        rtl_bit_exact=bool(np.array_equal(run.outputs, reference.predict(graph, x))),
        rtl_last_out=int(m["valid"][-1]),
        rtl_latency=int(m["valid"][0] - m["present"][0]),
        rtl_ii=int(np.diff(m["accept"]).max()) if len(x) > 1 else None,
        rtl_seconds=round(run.wall_s + run.build_s, 2),
    )


# -- real tool runs -----------------------------------------------------------------
def _synth(top: str, verilog: str, nodsp: bool, row: dict) -> None:
    with _tool_lock(), tempfile.TemporaryDirectory(prefix="accel-dse-syn-") as tmp:
        cells, seconds = synth(verilog, top, Path(tmp), nodsp)
    s = summary(cells)
    row.update({f"syn_{r}": s[r] for r in RESOURCE_COLS})
    row["syn_seconds"] = round(seconds, 1)


def _implement(dev: devices.Device, top, multipliers: int, row: dict) -> None:
    from accel.flows import boards, fpga
    from accel.sim.verilator import cache_root

    t0 = time.perf_counter()
    with _tool_lock():
        impl = fpga.implement_cached(
            boards.get(dev.board), top, cache_root() / "fpga", multipliers=multipliers
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
