"""The ``accel`` command line.

Contract (see ARCHITECTURE.md): ``--json`` prints one JSON document on stdout
and nothing else there; progress goes to stderr; a bad model, input, option or
file ends with one line ``accel: error: ...`` and a non-zero exit, never a
traceback; outputs are written to a temporary place and moved into position,
so a failed run never leaves a half-written or clobbered result.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from accel import zoo
from accel.engines import ENGINES
from accel.errors import AccelError

EPILOG = """\
examples:
  accel zoo list                                 what models there are
  accel sim autoencoder --samples 10000 --json   RTL vs reference, cycles vs model
  accel sim autoencoder --reuse 4 --backpressure fewer multipliers, stalls on both ends
  accel predict autoencoder --engine rtl --inputs X.npy --out Y.npy
  accel train autoencoder --epochs 12 -o trained/
  accel train nm_sparse --nm 2:8 --net cnn       N:M sparse training (SAT's BDWP)
  accel train deform_det --variant bilinear      the deformable detector (after CoDeNet)
  accel sim moe_vit --task depth --arch engine   the MoE ViT's depth pathway on the engine

numbers: inputs and outputs are fixed-point; --out files hold the raw integers
(value = raw * 2**-frac, the types are printed by 'accel zoo list --json').
"""


def _console():
    from rich.console import Console

    return Console(stderr=True)


@contextmanager
def _status(message: str, quiet: bool = False):
    """Progress on stderr: a live spinner on a terminal, plain lines otherwise.

    Yields a function that reports the current step.
    """
    if quiet or not sys.stderr.isatty():
        print(message, file=sys.stderr)
        yield lambda step: print(f"  {step}", file=sys.stderr)
        return
    with _console().status(message) as status:
        yield lambda step: status.update(f"{message}: {step}")


# -- models -------------------------------------------------------------------------
def load_model(spec: str):
    """A zoo name or a QONNX/ONNX file -> (graph, zoo entry or None)."""
    if spec in zoo.MODELS or ("@" in spec and not Path(spec).exists()):
        model = zoo.get(spec)
        return model.build(), model
    path = Path(spec)
    if path.suffix == ".onnx" or path.exists():
        if not path.is_file():
            raise AccelError(f"model file {path} not found")
        from accel import qonnx

        return qonnx.load(path), None
    zoo.get(spec)  # raises: unknown model, listing the zoo
    raise AssertionError


def sample_inputs(graph, model, n: int, seed: int) -> np.ndarray:
    """Edge values first, then the model's own data (or uniform raw values), as raw ints."""
    from accel import reference
    from accel.sim import stimulus

    name = graph.inputs[0]
    if model is not None:
        rest = reference.quantize_inputs(graph, name, model.make_inputs(n, seed))
    else:
        rest = stimulus.random_inputs(graph, n, seed)
    return np.concatenate([stimulus.edge_inputs(graph), rest])[:n]


# -- accel zoo ----------------------------------------------------------------------
def cmd_zoo(args: argparse.Namespace) -> int:
    rows = []
    for m in zoo.MODELS.values():
        g = m.build()
        i, o = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
        rows.append(
            {
                "name": m.name,
                "family": m.family,
                "after": m.after,
                "description": m.description,
                "parameters": g.n_params(),
                "input": {"shape": list(i.shape), "type": g.input_quant[i.name].ap()},
                "output": {"shape": list(o.shape), "type": o.type.ap()},
                "variants": m.variants() if m.variants else [],
            }
        )
    if args.json:
        print(json.dumps({"models": rows}, indent=1))
        return 0
    from rich.table import Table

    table = Table("model", "family", "after", "params", "input", "output")
    for r in rows:
        table.add_row(
            r["name"],
            r["family"],
            r["after"],
            str(r["parameters"]),
            f"{tuple(r['input']['shape'])} {r['input']['type']}",
            f"{tuple(r['output']['shape'])} {r['output']['type']}",
        )
    from rich.console import Console

    Console().print(table)
    return 0


# -- accel train --------------------------------------------------------------------
def staged_dir(out: Path, force: bool):
    """The shared staging of outputs, with the CLI's ``--force`` to replace."""
    from accel.outputs import staged_dir as staged

    return staged(out, replace=force, hint="; pass --force to replace it")


def cmd_train(args: argparse.Namespace) -> int:
    model = zoo.get(args.model)
    module, func = model.train.split(":")
    try:
        train = getattr(importlib.import_module(module), func)
    except ImportError as e:
        raise AccelError(f"training needs torch: pip install 'accel[train]' ({e.name})") from None
    kwargs = {"seed": args.seed}
    if args.epochs is not None:
        kwargs["epochs"] = args.epochs
    if args.n_train is not None:
        kwargs["n_train"] = args.n_train
    accepted = inspect.signature(train).parameters
    options = (("--nm", "nm"), ("--net", "net"), ("--method", "method"), ("--variant", "variant"))
    for opt, key in options:
        value = getattr(args, key)
        if value is None:
            continue
        if key not in accepted:
            raise AccelError(f"{opt} is not an option of model {model.name}")
        kwargs[key] = value
    with staged_dir(Path(args.out), args.force) as tmp:
        metrics = train(out_dir=tmp, progress=not args.json, **kwargs)
    if args.json:
        print(json.dumps(metrics, indent=1))
    else:
        _console().print(f"trained {model.name}; weights and metrics in {args.out}")
        print(json.dumps(metrics.get("quality", metrics), indent=1))
    return 0


# -- accel predict ------------------------------------------------------------------
def task_graph(spec: str, task: str):
    """The graph of one task of a multi-task zoo model (``--task``)."""
    model = zoo.get(spec)
    if model.build_task is None:
        raise AccelError(f"--task is not an option of model {model.name} (it has one task)")
    return model.build_task(task)


def load_task_model(spec: str, task: str | None):
    """``load_model``, or with ``--task`` the task's graph of a multi-task zoo model."""
    if task is None:
        return load_model(spec)
    return task_graph(spec, task), zoo.get(spec)


# the engine a simulation builds must fit this board's part (its multipliers, its RAM)
SIM_BOARD = "ulx3s-85f"
MAX_SIM_SAMPLES = 1_000_000  # rows one simulator run takes (split larger files)
MAX_SIM_CYCLES = 1 << 28  # a few minutes of Verilator
CHUNK_ELEMENTS = 1 << 20  # input elements the reference takes at a time


def _raw(graph, x: np.ndarray, path: Path) -> np.ndarray:
    """Float values quantized with the graph's input mode; integers range-checked."""
    from accel import reference

    name = graph.inputs[0]
    if x.dtype.kind == "f":
        return reference.quantize_inputs(graph, name, x)
    if x.dtype.kind in "iu":
        return reference.check_raw_inputs(graph, name, x)
    raise AccelError(f"{path}: dtype {x.dtype} is neither floating point nor integer")


def open_inputs(path: Path, graph):
    """The input file, its shape and dtype checked from the header (nothing read yet)."""
    from accel.npyfile import open_npy

    x = open_npy(path, graph.tensors[graph.inputs[0]].shape)
    if x.dtype.kind not in "fiu":
        raise AccelError(f"{path}: dtype {x.dtype} is neither floating point nor integer")
    return x


def load_inputs(path: Path, graph, max_rows: int = MAX_SIM_SAMPLES) -> np.ndarray:
    """The whole input file as raw integers (at most ``max_rows`` rows)."""
    x = open_inputs(path, graph)
    if len(x) > max_rows:
        raise AccelError(
            f"{path} has {len(x):,} rows; a simulator run takes at most {max_rows:,} "
            "(split the file, or use --engine reference, which streams)"
        )
    return _raw(graph, x.load(), path)


def reference_to_file(graph, x, path: Path, out: Path) -> tuple[int, ...]:
    """The reference on the rows of ``x`` (an :class:`NpyFile`), a chunk at a time,
    written to the .npy ``out`` as they come: memory does not grow with the rows."""
    from accel import reference

    shape = (len(x), *graph.tensors[graph.outputs[0]].shape)
    step = max(1, CHUNK_ELEMENTS // max(1, graph.tensors[graph.inputs[0]].size))
    with open(out, "wb") as f:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<i8")), "shape": shape}
        np.lib.format.write_array_header_2_0(f, {**header, "fortran_order": False})
        for i in range(0, len(x), step):
            y = reference.predict(graph, _raw(graph, x.rows(i, i + step), path))
            f.write(np.ascontiguousarray(y, "<i8").tobytes())
    return shape


def cmd_predict(args: argparse.Namespace) -> int:
    from accel import engines
    from accel.outputs import staged_file

    graph, _ = load_task_model(args.model, args.task)
    path = Path(args.inputs)
    if args.arch == "engine" and args.engine != "rtl":
        raise AccelError("--arch engine runs the RTL: use it with --engine rtl")
    if args.engine != "reference":  # the numpy reference runs every graph
        _check_arch(graph, args)
    hint = "; pass --force to replace it"
    with staged_file(Path(args.out), replace=args.force, hint=hint, inputs=[path]) as tmp:
        if args.engine == "reference":
            shape = reference_to_file(graph, open_inputs(path, graph), path, tmp)
        else:
            x = load_inputs(path, graph)
            cfg = _engine_for(graph, args) if args.arch == "engine" else None
            with _status(f"running {len(x)} samples on the {args.engine} engine"):
                if cfg is not None:
                    y, _ = _run_engine(graph, cfg, x)
                else:
                    y = engines.predict(graph, x, args.engine, args.reuse)
            with open(tmp, "wb") as f:
                np.save(f, y)
            shape = y.shape
    print(
        f"wrote {shape} raw {graph.tensors[graph.outputs[0]].type.ap()} to {args.out}",
        file=sys.stderr,
    )
    return 0


# -- accel sim ----------------------------------------------------------------------
def cmd_sim(args: argparse.Namespace) -> int:
    from accel import engines, reference
    from accel.sim import stimulus

    if args.simulator != "verilator":
        raise AccelError(f"simulator {args.simulator!r} is not available (use verilator)")
    graph, model = load_task_model(args.model, args.task)
    _check_arch(graph, args)
    x = sample_inputs(graph, model, args.samples, args.seed)
    if args.arch == "engine":
        return _sim_engine(args, graph, x)
    from accel.compiler.dataflow import lower

    ii = max(lower(graph, args.reuse).reuse)  # a bad --reuse fails before any work
    if len(x) * ii > MAX_SIM_CYCLES:
        raise AccelError(
            f"{len(x):,} samples at II {ii} are {len(x) * ii:,} cycles; a simulation runs at "
            f"most {MAX_SIM_CYCLES:,} (fewer --samples or a smaller --reuse)"
        )
    pats = stimulus.backpressure(args.seed) if args.backpressure else (None, None)
    with _status(
        f"simulating {len(x)} samples under Verilator (first build takes a while)", quiet=args.json
    ):
        run = engines.run_rtl(graph, x, args.reuse, *pats)
    ref = reference.predict(graph, x)
    mismatches = int((run.outputs != ref).reshape(len(x), -1).any(axis=1).sum())
    m = run.measured
    report = {
        "model": graph.name,
        "simulator": "verilator",
        "reuse": args.reuse,
        "backpressure": args.backpressure,
        "samples": len(x),
        "mismatches": mismatches,
        "latency": {
            "measured": int(m["valid"][0] - m["present"][0]),
            "model": run.timing.latency,
        },
        "ii": {
            "measured": _measured_ii(m["accept"]) if not args.backpressure else None,
            "model": run.timing.ii,
        },
        "cycles_match_model": run.cycles_match,
        "cycles": run.cycles,
        "sim_seconds": round(run.wall_s, 4),
        "samples_per_s": round(len(x) / run.wall_s, 1),
        "cycles_per_s": round(run.cycles / run.wall_s, 1),
        "build_seconds": round(run.build_s, 2),
    }
    ok = mismatches == 0 and run.cycles_match
    return _sim_verdict(
        report,
        ok,
        args.json,
        [
            f"latency {report['latency']}  II {report['ii']}  cycles match model: "
            f"{run.cycles_match}",
            f"{report['samples_per_s']:.0f} samples/s, {report['cycles_per_s']:.0f} cycles/s "
            f"simulated (build {report['build_seconds']} s)",
        ],
    )


def _sim_verdict(report: dict, ok: bool, as_json: bool, lines: list[str]) -> int:
    """Print a sim report (JSON, or PASS/FAIL and ``lines``); the exit status."""
    if as_json:
        print(json.dumps(report, indent=1))
    else:
        from rich.console import Console

        c = Console()
        verdict = "[green]PASS[/]" if ok else "[red]FAIL[/]"
        c.print(
            f"{verdict} {report['samples']} samples, {report['mismatches']} mismatches vs reference"
        )
        for line in lines:
            c.print(line)
    return 0 if ok else 1


def _arch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--arch",
        choices=["dataflow", "engine"],
        default="dataflow",
        help="RTL architecture: dataflow, a pipeline per layer (default); engine, the N:M "
        "MAC-array engine running a compiled program",
    )
    p.add_argument(
        "--array", default="8x8", metavar="PxQ", help="engine array rows x columns (default 8x8)"
    )
    p.add_argument(
        "--bank-words",
        type=_bounded(1 << 16),
        default=512,
        metavar="N",
        help="engine activation bank depth in words (default 512; deform_det needs 2048)",
    )
    p.add_argument(
        "--vec-rows",
        type=lambda t: _integer(t, 0, 64),
        default=0,
        metavar="N",
        help="rows the vector unit (moe_vit) works on at once: all by default; 1 is 8x smaller, "
        "fits the ULX3S 85F's multipliers and makes the vector ops 8x longer",
    )
    p.add_argument(
        "--bilinear-frac",
        type=lambda t: _integer(t, 0, 6),
        default=4,
        metavar="F",
        help="fraction bits of the engine's bilinear sampler (default 4, as deform_det@bilinear; "
        "0 builds the engine without it)",
    )


def engine_config(array: str, bank_words: int = 512, bilinear_frac: int = 4):
    from accel.engine.config import EngineConfig

    if bank_words < 1:
        raise AccelError(f"--bank-words must be positive, got {bank_words}")
    if not 0 <= bilinear_frac <= 6:
        raise AccelError(f"--bilinear-frac must be 0..6, got {bilinear_frac}")
    try:
        return EngineConfig.array(
            array, a_depth=bank_words, b_depth=4096, bilinear_frac=bilinear_frac
        )
    except AccelError as e:
        raise AccelError(f"--array: {e}") from None


def _check_arch(graph, args: argparse.Namespace) -> None:
    from accel.engine.vit import is_token_graph

    if is_token_graph(graph) and args.arch != "engine":
        raise AccelError(
            f"{graph.name} runs on the engine (its softmax, GELU and LayerNorm need the vector "
            "unit): use --arch engine"
        )


def _engine_for(graph, args: argparse.Namespace):
    """The engine configuration the graph's ops need (the ViT's with the vector unit),
    checked against the part it would be built for before anything is elaborated."""
    from accel.dse.devices import check_engine
    from accel.engine import vit

    if vit.is_token_graph(graph):
        try:
            cfg = vit.engine_config(args.array, args.bank_words, args.vec_rows)
        except AccelError as e:
            raise AccelError(f"--array/--vec-rows: {e}") from None
    elif args.vec_rows:
        raise AccelError(f"--vec-rows is for the vector unit; {graph.name} does not use it")
    else:
        cfg = engine_config(args.array, args.bank_words, args.bilinear_frac)
    check_engine(cfg, SIM_BOARD)
    return cfg


def _run_engine(graph, cfg, x: np.ndarray):
    """The graph on the engine ``cfg`` under Verilator: (outputs, the run)."""
    from accel.engine import vit
    from accel.sim.engine import run_graph, run_tokens

    if vit.is_token_graph(graph):
        return run_tokens(graph, cfg, x)
    return run_graph(graph, cfg, x)


def _sim_engine(args: argparse.Namespace, graph, x: np.ndarray) -> int:
    from accel import reference

    if args.backpressure:
        raise AccelError("--backpressure is for the dataflow design; the engine test uses GEMMs")
    cfg = _engine_for(graph, args)
    with _status(f"running {len(x)} samples on the {args.array} engine", quiet=args.json):
        y, run = _run_engine(graph, cfg, x)
    mismatches = int((y != reference.predict(graph, x)).reshape(len(x), -1).any(axis=1).sum())
    report = {
        "model": graph.name,
        "arch": "engine",
        "engine": run.config.to_json(),
        "samples": len(x),
        "mismatches": mismatches,
        "last_output_cycle": {
            "measured": int(run.out_valid[-1]),
            "model": int(run.model.out_valid[-1]),
        },
        "cycles_match_model": run.cycles_match,
        "layers": [
            {"gemm": t.name, "cycles": t.cycles, "utilisation": round(t.utilisation, 3)}
            for t in run.model.gemms[: len(run.model.gemms) // max(1, _chunks(run))]
        ],
        "cycles_per_s": round(run.cycles / run.wall_s, 1),
        "build_seconds": round(run.build_s, 2),
    }
    ok = mismatches == 0 and run.cycles_match
    lines = [f"last output at {report['last_output_cycle']}; match model: {run.cycles_match}"]
    lines += [
        f"  {layer['gemm']:<10} {layer['cycles']:>8} cycles  util {layer['utilisation']}"
        for layer in report["layers"]
    ]
    return _sim_verdict(report, ok, args.json, lines)


def _chunks(run) -> int:
    names = [t.name for t in run.model.gemms]
    return names.count(names[0])


# -- accel generate -----------------------------------------------------------------
def cmd_generate(args: argparse.Namespace) -> int:
    graph, model = load_task_model(args.model, args.task)
    out = Path(args.out)
    board = None
    if args.target == "bitstream":
        from accel.flows import boards

        board = boards.get(args.board)  # an unknown board fails before any work
    with staged_dir(out, args.force) as tmp:
        if args.target == "verilog":
            from accel.flows import verilog

            x = sample_inputs(graph, model, args.vectors, args.seed)
            doc = verilog.write(graph, tmp, reuse=args.reuse, vectors=x)
            summary = {
                "top": doc["top"],
                "latency_cycles": doc["latency_cycles"],
                "ii_cycles": doc["ii_cycles"],
                "vectors": len(x),
            }
        elif args.target == "hls4ml":
            from accel.flows import hls4ml

            with _status("writing the hls4ml project", quiet=args.json):
                hls4ml.write_project(graph, tmp, reuse=args.reuse, backend=args.backend, final=out)
            summary = {"backend": args.backend, "reuse": args.reuse}
        else:
            summary = build_bitstream(graph, board, tmp, args)
    summary = {"model": graph.name, "target": args.target, "out": str(out), **summary}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"wrote the {args.target} target of {graph.name} to {out}", file=sys.stderr)
    return 0


def build_bitstream(graph, board, work: Path, args: argparse.Namespace) -> dict:
    from accel.compiler.dataflow import lower
    from accel.flows import fpga
    from accel.perf import DataflowTiming

    plan = lower(graph, args.reuse)
    top = fpga.BoardTop.dataflow(plan, args.baud)
    with _status(f"building a bitstream for {board.name}", quiet=args.json) as update:
        impl = fpga.implement(
            board,
            top,
            work,
            seed=args.seed,
            progress=update,
            multipliers=sum(s.n_mult for s in plan.stages),
        )
    timing = DataflowTiming(tuple(plan.reuse))
    report = impl.report(timing.latency, timing.ii)
    report.update(
        board=board.name,
        seed=args.seed,
        baud=args.baud,
        bitstream="accel_top.bit",
        logs=impl.logs,
    )
    (work / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    if not report["timing_met"]:
        print(
            f"accel: warning: timing not met: Fmax {impl.fmax_mhz} MHz is below the board "
            f"clock {impl.clock_mhz} MHz; raise --reuse or see report.json",
            file=sys.stderr,
        )
    return report


# -- accel report -------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from accel.compiler.dataflow import lower
    from accel.flows import boards, fpga
    from accel.perf import DataflowTiming
    from accel.sim.verilator import cache_root

    graph, _ = load_model(args.model)
    board = boards.get(args.board)
    plan = lower(graph, args.reuse)
    designs = {}
    with _status(
        f"implementing {graph.name} on {board.name} (cached after the first run)", quiet=args.json
    ) as update:
        timing = DataflowTiming(tuple(plan.reuse))
        try:
            impl = fpga.implement_cached(
                board,
                fpga.BoardTop.dataflow(plan),
                cache_root() / "fpga",
                seed=args.seed,
                multipliers=sum(s.n_mult for s in plan.stages),
                pnr_minutes=args.pnr_minutes,
                progress=update,
            )
            designs["accel"] = impl.report(timing.latency, timing.ii)
        except fpga.PlaceRouteTimeout as e:
            designs["accel"] = e.report(timing.latency, timing.ii)
        designs["accel"]["reuse"] = args.reuse
        designs["accel"]["multipliers"] = sum(s.n_mult for s in plan.stages)
        if not args.no_da4ml:
            from accel.flows import da4ml_board

            designs["da4ml"] = da4ml_board.report(
                graph, board, seed=args.seed, pnr_minutes=args.pnr_minutes, progress=update
            )
    doc = {
        "model": graph.name,
        "board": board.name,
        "seed": args.seed,
        "designs": designs,
        "note": "both designs behind the same UART bridge, same yosys/nextpnr script",
    }
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    rows = [
        "luts",
        "flip_flops",
        "dsps",
        "block_rams",
        "fmax_mhz",
        "latency_cycles",
        "ii_cycles",
        "latency_ns",
        "ii_ns",
        "samples_per_s",
    ]
    table = Table("", *designs, title=f"{graph.name} on {board.name}")
    for r in rows:
        table.add_row(r, *(str(d.get(r)) for d in designs.values()))
    console = Console()
    console.print(table)
    for name, d in designs.items():
        if not d["routed"]:
            console.print(f"{name}: {d['error']}", markup=False)
    return 0


# -- accel dse ----------------------------------------------------------------------
def cmd_dse(args: argparse.Namespace) -> int:
    from accel import dse

    sweep = dse.load(Path(args.sweep))
    out = Path(args.out) if args.out else Path(f"dse-{sweep.name}")
    summary = dse.run(
        sweep,
        out,
        scheduler=args.scheduler,
        workers=args.workers,
        retry_failed=args.retry_failed,
        force=args.force,
        quiet=args.json,
        plots=not args.no_plots,
    )
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
    else:
        print(
            f"{summary['points']} points ({summary['evaluated']} evaluated, "
            f"{summary['skipped']} already done): {summary['ok']} ok, {summary['failed']} "
            f"failed in {summary['seconds']} s; results in {summary['results']}",
            file=sys.stderr,
        )
        for f in summary["failures"][:3]:
            print(f"  failed {f['point_id']}: {f['error']}", file=sys.stderr)
    if summary["rtl_mismatches"]:
        print(
            f"accel: error: {summary['rtl_mismatches']} sampled point(s) disagree with the RTL "
            "(see rtl_* in the results)",
            file=sys.stderr,
        )
        return 1
    return 0


def _measured_ii(accept: np.ndarray) -> int | None:
    """Steady-state cycles between input handshakes (the largest gap when nothing stalls)."""
    return int(np.diff(accept).max()) if len(accept) > 1 else None


# -- parser -------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is the one ``accel: error:`` line (and the help to read)."""

    def error(self, message: str):
        raise AccelError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="accel",
        description="Design FPGA accelerators for quantized neural networks: a model zoo, "
        "bit-exact numpy references, Amaranth RTL verified under Verilator.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from accel import __version__

    p.add_argument("--version", action="version", version=f"accel {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    z = sub.add_parser("zoo", help="list the models in the zoo")
    z.add_argument("action", choices=["list"])
    z.add_argument("--json", action="store_true", help="one JSON document on stdout")
    z.set_defaults(func=cmd_zoo)

    t = sub.add_parser("train", help="train a zoo model quantization-aware (needs torch)")
    t.add_argument("model")
    t.add_argument("--epochs", type=_positive, help="passes over the data (default: the model's)")
    t.add_argument("--n-train", type=_positive, help="training samples (default: the model's)")
    t.add_argument("--seed", type=_seed, default=0)
    t.add_argument("-o", "--out", default="trained", help="output directory (default: trained)")
    t.add_argument("--force", action="store_true", help="replace an existing output directory")
    t.add_argument("--nm", metavar="N:M", help="nm_sparse: N:M pattern, or 'dense' (default 2:8)")
    t.add_argument("--net", help="nm_sparse: mlp (default) or cnn")
    t.add_argument(
        "--method", help="nm_sparse: bdwp (default), srste or dense (the baseline without masks)"
    )
    t.add_argument(
        "--variant", help="deform_det: square (default), bilinear or regular depthwise sampling"
    )
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser(
        "predict",
        help="run a model on an input file with one engine",
        description="X.npy holds float64 real values (quantized with the model's input "
        "rounding and saturation) or integers (already-quantized raw values, range-checked). "
        "Y.npy gets the raw integer outputs.",
    )
    pr.add_argument("model")
    pr.add_argument("--engine", choices=ENGINES, default="reference")
    pr.add_argument("--inputs", required=True, metavar="X.npy")
    pr.add_argument("--out", required=True, metavar="Y.npy")
    pr.add_argument("--force", action="store_true", help="replace an existing Y.npy")
    pr.add_argument("--reuse", type=_positive, default=1, help="RTL reuse factor (default 1)")
    pr.add_argument(
        "--task", metavar="NAME", help="multi-task models (moe_vit): the task's graph (seg, depth)"
    )
    _arch_options(pr)
    pr.set_defaults(func=cmd_predict)

    s = sub.add_parser(
        "sim",
        help="verify the RTL against the reference and the cycle model",
        description="Streams edge-value and synthetic samples through the generated RTL under "
        "Verilator; compares every output with the numpy reference and every interface cycle "
        "with the cycle model. Exit status 1 on any mismatch.",
    )
    s.add_argument("model")
    s.add_argument(
        "--samples",
        type=_bounded(MAX_SIM_SAMPLES),
        default=1000,
        help=f"samples to simulate (default 1000, at most {MAX_SIM_SAMPLES:,})",
    )
    s.add_argument("--reuse", type=_positive, default=1, help="reuse factor per layer")
    s.add_argument(
        "--backpressure", action="store_true", help="random source stalls and sink back-pressure"
    )
    s.add_argument("--simulator", default="verilator", help="verilator (default)")
    s.add_argument("--task", metavar="NAME", help="multi-task models (moe_vit): the task to run")
    _arch_options(s)
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--json", action="store_true", help="one JSON document on stdout")
    s.set_defaults(func=cmd_sim)

    ge = sub.add_parser(
        "generate",
        help="write Verilog, an hls4ml project or an ECP5 bitstream",
        description="verilog: the design, test vectors, a self-checking testbench, manifest.json. "
        "hls4ml: a project with every precision explicit, bit-exact in C simulation. "
        "bitstream: the design behind a UART bridge for an ECP5 board, through yosys, nextpnr "
        "and ecppack (logs and report.json kept in the output directory).",
    )
    ge.add_argument("model", help="a zoo name or a QONNX/ONNX file")
    ge.add_argument("--target", choices=["verilog", "hls4ml", "bitstream"], required=True)
    ge.add_argument("-o", "--out", required=True, metavar="DIR")
    ge.add_argument("--force", action="store_true", help="replace an existing DIR")
    ge.add_argument("--reuse", type=_positive, default=1, help="reuse factor (default 1)")
    ge.add_argument("--board", default="ulx3s-85f", help="bitstream board (default ulx3s-85f)")
    ge.add_argument("--baud", type=_positive, default=1_000_000, help="UART rate on the board")
    ge.add_argument(
        "--backend", choices=["Vitis", "Vivado"], default="Vitis", help="hls4ml backend"
    )
    ge.add_argument(
        "--vectors",
        type=_bounded(MAX_SIM_SAMPLES),
        default=1000,
        help=f"test vectors (verilog; default 1000, at most {MAX_SIM_SAMPLES:,})",
    )
    ge.add_argument(
        "--task", metavar="NAME", help="multi-task models (moe_vit): the task's static pathway"
    )
    ge.add_argument("--seed", type=_seed, default=1, help="stimulus and place-and-route seed")
    ge.add_argument("--json", action="store_true")
    ge.set_defaults(func=cmd_generate)

    re_ = sub.add_parser(
        "report",
        help="resources, Fmax, latency and throughput from real yosys/nextpnr runs",
        description="Implements the design for an ECP5 board (cached) and reports LUTs, "
        "flip-flops, DSPs, block RAM, Fmax, latency and II in cycles and ns, and samples/s; "
        "da4ml's Verilog of the same quantized network goes through the same flow beside it.",
    )
    re_.add_argument("model", help="a zoo name or a QONNX/ONNX file")
    re_.add_argument("--board", default="ulx3s-85f")
    re_.add_argument("--reuse", type=_positive, default=16, help="reuse factor (default 16)")
    re_.add_argument("--seed", type=_seed, default=1, help="place-and-route seed")
    re_.add_argument("--no-da4ml", action="store_true", help="skip the da4ml comparison")
    re_.add_argument(
        "--pnr-minutes",
        type=float,
        default=60,
        metavar="M",
        help="time allowed to each place and route (default 60); a design that does not "
        "route in time is reported with its synthesis figures and the router's last state",
    )
    re_.add_argument("--json", action="store_true")
    re_.set_defaults(func=cmd_report)

    d = sub.add_parser(
        "dse",
        help="design-space exploration: sweep parameters, estimate, Pareto plots",
        description="Evaluates every point of SWEEP.yaml (the cycle model, a resource estimate "
        "fitted to real yosys runs, quality; real RTL simulation, yosys and nextpnr runs on a "
        "random sample when the sweep asks) on Dask: a LocalCluster, or the cluster at "
        "--scheduler. DIR gets results.csv (one row per point), plots/ and summary.json; a "
        "re-run skips the points already in DIR.",
    )
    d.add_argument("sweep", metavar="SWEEP.yaml")
    d.add_argument("-o", "--out", metavar="DIR", help="results directory (default: dse-NAME)")
    d.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler, e.g. tcp://host:8786")
    d.add_argument(
        "--workers", type=_positive, help="LocalCluster worker processes (default: cores, max 4)"
    )
    d.add_argument("--retry-failed", action="store_true", help="evaluate failed points again")
    d.add_argument("--force", action="store_true", help="discard DIR's results and start over")
    d.add_argument("--no-plots", action="store_true", help="skip the Pareto plots")
    d.add_argument("--json", action="store_true", help="one JSON summary on stdout")
    d.set_defaults(func=cmd_dse)
    return p


def _integer(text: str, lo: int, hi: int | None = None) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < lo:
        raise argparse.ArgumentTypeError(f"must be at least {lo}, got {v}")
    if hi is not None and v > hi:
        raise argparse.ArgumentTypeError(f"must be at most {hi:,}, got {v:,}")
    return v


def _positive(text: str) -> int:
    return _integer(text, 1)


def _bounded(hi: int):
    """A positive integer of at most ``hi``."""

    def parse(text: str) -> int:
        return _integer(text, 1, hi)

    parse.__name__ = "count"
    return parse


def _seed(text: str) -> int:
    """A random seed: 0 .. 2**32 - 1 (numpy's and nextpnr's range)."""
    return _integer(text, 0, 2**32 - 1)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except AccelError as e:
        print(f"accel: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an output the system refused: permissions, a file for a folder
        print(f"accel: error: {_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("accel: interrupted", file=sys.stderr)
        return 130


def _os_error(e: OSError) -> str:
    text = e.strerror or str(e) or type(e).__name__
    return f"{text}: {e.filename}" if e.filename else text


if __name__ == "__main__":
    sys.exit(main())
