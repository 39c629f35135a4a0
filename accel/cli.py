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
import json
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from accel import zoo
from accel.backends import ENGINES
from accel.errors import AccelError
from accel.knobs import integer as _integer

EPILOG = """\
examples:
  accel zoo list                                 what models there are
  accel sim autoencoder --samples 10000 --json   RTL vs reference, cycles vs model
  accel sim autoencoder --reuse 4 --backpressure fewer multipliers, stalls on both ends
  accel predict autoencoder --engine rtl --inputs X.npy --out Y.npy
  accel generate autoencoder --target bitstream -o ae/
                                                 ECON-T's rate: no multipliers, II 1, 40 MHz
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


def _train_options() -> dict[str, list[str]]:
    """Every trainer's own option -> the models that take it."""
    out: dict[str, list[str]] = {}
    for m in zoo.MODELS.values():
        for name in m.train_options:
            out.setdefault(name, []).append(m.name)
    return out


def cmd_train(args: argparse.Namespace) -> int:
    model = zoo.get(args.model)
    kwargs = {"seed": args.seed}
    if args.epochs is not None:
        kwargs["epochs"] = args.epochs
    if args.n_train is not None:
        kwargs["n_train"] = args.n_train
    for key in _train_options():
        value = getattr(args, f"train_{key}")
        if value is None:
            continue
        if key not in model.train_options:
            raise AccelError(f"--{key} is not an option of model {model.name}")
        kwargs[key] = value
    module, func = model.train.split(":")
    try:
        train = getattr(importlib.import_module(module), func)
    except ImportError as e:
        raise AccelError(f"training needs torch: pip install 'accel[train]' ({e.name})") from None
    with staged_dir(Path(args.out), args.force) as tmp:
        metrics = train(out_dir=tmp, progress=not args.json, **kwargs)
    if args.json:
        print(json.dumps(metrics, indent=1))
    else:
        _console().print(f"trained {model.name}; weights and metrics in {args.out}")
        print(json.dumps(metrics.get("quality", metrics), indent=1))
    return 0


# -- models on targets --------------------------------------------------------------
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


def _knob_dest(target: str, name: str) -> str:
    return f"knob_{target}_{name}"


def _given_knobs(args: argparse.Namespace) -> dict[str, dict]:
    """Each target's knobs the user gave, ``--array PxQ`` as the engine's rows and cols."""
    from accel import targets
    from accel.knobs import given

    out = {name: given(t.Config, args, _knob_dest(name, "")) for name, t in targets.TARGETS.items()}
    if getattr(args, "array", None) is not None:
        try:
            rows, cols = (int(v) for v in args.array.lower().split("x"))
        except ValueError:
            raise AccelError(
                f"--array: an array size must look like 8x8, got {args.array!r}"
            ) from None
        if {"rows", "cols"} & set(out["engine"]):
            raise AccelError("give --array or --rows/--cols, not both")
        out["engine"].update(rows=rows, cols=cols)
    return out


def _flags(target: str, names) -> str:
    from accel import targets
    from accel.knobs import flag, knobs

    by_name = {f.name: f for f in knobs(targets.get(target).Config)}
    return ", ".join(flag(by_name[n]) for n in names)


def design_for(args: argparse.Namespace, graph, model, *, board: str, build: bool = False):
    """The design of ``graph`` on the target ``--arch`` names (default: the first that runs
    it), configured with the model's preferences and the user's knobs. A knob of another
    target is an error, not ignored. ``build``: the design is for ``board`` (its defaults
    chosen to fit; refused if it does not), else only simulated."""
    from accel import targets

    preferred = args.arch or (model.arch if model is not None else None)
    target = targets.for_graph(graph, preferred)
    target.check(graph)
    given = _given_knobs(args)
    for other, knobs in given.items():
        if other != target.name and knobs:
            raise AccelError(
                f"{_flags(other, knobs)} is an option of the {other} target, not of the "
                f"{target.name} ({graph.name} runs on the {target.name}; see --arch)"
            )
    prefs = model.targets.get(target.name, {}) if model is not None else {}
    config = target.configure(graph, given[target.name], prefs, board if build else None)
    design = target.compile(graph, config)
    target.fit(design, board, build=build)
    return design


# the engine a simulation builds must fit this board's part (its multipliers, its RAM)
SIM_BOARD = "ulx3s-85f"
MAX_SIM_SAMPLES = 1_000_000  # rows one simulator run takes (split larger files)
MAX_SIM_CYCLES = 1 << 28  # a few minutes of Verilator
CHUNK_ELEMENTS = 1 << 20  # input elements the reference takes at a time


# -- accel predict ------------------------------------------------------------------
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


def _refuse_hardware_options(args: argparse.Namespace, what: str) -> None:
    """Hardware knobs and ``--arch`` mean nothing to ``what``: refuse them."""
    given = {k: v for k, v in _given_knobs(args).items() if v}
    if args.arch or given:
        flags = [f"--arch {args.arch}"] if args.arch else []
        flags += [_flags(t, knobs) for t, knobs in given.items()]
        raise AccelError(f"{', '.join(flags)} does not apply to {what}")


def cmd_predict(args: argparse.Namespace) -> int:
    from accel import backends
    from accel.outputs import staged_file

    graph, model = load_task_model(args.model, args.task)
    path = Path(args.inputs)
    design = None
    if args.engine == "rtl":
        design = design_for(args, graph, model, board=SIM_BOARD)
    else:
        _refuse_hardware_options(args, f"the {args.engine} engine (only to --engine rtl)")
    if args.hls4ml_reuse is not None and args.engine != "hls4ml":
        raise AccelError("--hls4ml-reuse is for --engine hls4ml")
    hint = "; pass --force to replace it"
    with staged_file(Path(args.out), replace=args.force, hint=hint, inputs=[path]) as tmp:
        if args.engine == "reference":
            shape = reference_to_file(graph, open_inputs(path, graph), path, tmp)
        else:
            x = load_inputs(path, graph)
            with _status(f"running {len(x)} samples on the {args.engine} engine"):
                if design is not None:
                    y = design.simulate(x).outputs
                else:
                    y = backends.predict(graph, x, args.engine, args.hls4ml_reuse or 1)
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
    from accel import reference

    if args.simulator != "verilator":
        raise AccelError(f"simulator {args.simulator!r} is not available (use verilator)")
    graph, model = load_task_model(args.model, args.task)
    design = design_for(args, graph, model, board=SIM_BOARD)
    x = sample_inputs(graph, model, args.samples, args.seed)
    per_sample = round(design.timing(x[: min(len(x), 64)])["cycles_per_sample"], 2)
    if len(x) * per_sample > MAX_SIM_CYCLES:
        raise AccelError(
            f"{len(x):,} samples at {per_sample} cycles each are over {MAX_SIM_CYCLES:,} "
            "cycles, the most a simulation runs (fewer --samples, or a faster design)"
        )
    seed = args.seed if args.backpressure else None
    with _status(
        f"simulating {len(x)} samples of {graph.name} on the {design.target} design under "
        "Verilator (a new design builds first)",
        quiet=args.json,
    ):
        run = design.simulate(x, backpressure_seed=seed)
    ref = reference.predict(graph, x)
    mismatches = int((run.outputs != ref).reshape(len(x), -1).any(axis=1).sum())
    report = {
        "model": graph.name,
        "arch": design.target,
        "simulator": "verilator",
        "samples": len(x),
        "mismatches": mismatches,
        "cycles_match_model": run.cycles_match,
        **run.report,
        "cycles": run.cycles,
        "sim_seconds": round(run.wall_s, 4),
        "samples_per_s": round(len(x) / run.wall_s, 1),
        "cycles_per_s": round(run.cycles / run.wall_s, 1),
        "build_seconds": round(run.build_s, 2),
    }
    ok = mismatches == 0 and run.cycles_match
    lines = [f"cycles match the model: {run.cycles_match}"]
    for key in ("latency", "ii", "last_output_cycle"):
        if key in report:
            lines.append(f"{key}: {report[key]}")
    lines += [
        f"  {layer['gemm']:<10} {layer['cycles']:>8} cycles  util {layer['utilisation']}"
        for layer in report.get("layers", [])
    ]
    lines.append(
        f"{report['samples_per_s']:.0f} samples/s, {report['cycles_per_s']:.0f} cycles/s "
        f"simulated (build {report['build_seconds']} s)"
    )
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        from rich.console import Console

        c = Console()
        verdict = "[green]PASS[/]" if ok else "[red]FAIL[/]"
        c.print(f"{verdict} {len(x)} samples, {mismatches} mismatches vs reference")
        for line in lines:
            c.print(line, markup=False)
    return 0 if ok else 1


# -- accel generate -----------------------------------------------------------------
def _applies(args: argparse.Namespace, option: str, value, targets_: tuple[str, ...]) -> None:
    if value is not None and args.target not in targets_:
        raise AccelError(f"{option} is for --target {' or '.join(targets_)}, not {args.target}")


def cmd_generate(args: argparse.Namespace) -> int:
    graph, model = load_task_model(args.model, args.task)
    out = Path(args.out)
    _applies(args, "--vectors", args.vectors, ("verilog",))
    _applies(args, "--board", args.board, ("bitstream",))
    _applies(args, "--baud", args.baud, ("bitstream",))
    _applies(args, "--clock-mhz", args.clock_mhz, ("bitstream",))
    _applies(args, "--router", args.router, ("bitstream",))
    _applies(args, "--placer-density", args.placer_density, ("bitstream",))
    _applies(args, "--placer", args.placer, ("bitstream",))
    _applies(args, "--tmg-ripup", args.tmg_ripup or None, ("bitstream",))
    _applies(args, "--backend", args.backend, ("hls4ml",))
    _applies(args, "--hls4ml-reuse", args.hls4ml_reuse, ("hls4ml",))
    board = None
    design = None
    if args.target == "hls4ml":
        _refuse_hardware_options(args, "an hls4ml project (its ReuseFactor is --hls4ml-reuse)")
    elif args.target == "bitstream":
        from accel.flows import boards

        board = boards.get(args.board or DEFAULT_BOARD)  # an unknown board fails first
        design = design_for(args, graph, model, board=board.name, build=True)
    else:
        design = design_for(args, graph, model, board=SIM_BOARD)
    with staged_dir(out, args.force) as tmp:
        if args.target == "verilog":
            x = sample_inputs(graph, model, args.vectors or design.test_samples, args.seed)
            with _status(f"writing the {design.target} design's Verilog", quiet=args.json):
                summary = {"arch": design.target, **design.write_verilog(tmp, x)}
        elif args.target == "hls4ml":
            from accel.flows import hls4ml

            reuse, backend = args.hls4ml_reuse or 1, args.backend or "Vitis"
            with _status("writing the hls4ml project", quiet=args.json):
                hls4ml.write_project(graph, tmp, reuse=reuse, backend=backend, final=out)
            summary = {"backend": backend, "reuse": reuse}
        else:
            summary = build_bitstream(design, model, board, tmp, args)
    summary = {"model": graph.name, "target": args.target, "out": str(out), **summary}
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
    else:
        print(f"wrote the {args.target} target of {graph.name} to {out}", file=sys.stderr)
    return 0


DEFAULT_BOARD = "ulx3s-85f"
ROUTERS = ("router1", "router2")
ROUTER_HELP = (
    "nextpnr's router (default: the design's choice, router2 for multiplier-free layers and "
    "the engine, else router1)"
)
DENSITY_HELP = (
    "the placer's highest cell density, 0.3-1.0 (nextpnr's --placer-heap-beta, default "
    "0.9); lower spreads a congested design so it routes"
)


TMG_RIPUP_HELP = (
    "nextpnr's timing-driven rip-up (experimental): reroutes nets that fail timing, and "
    "keeps at it while any does (bound it with --pnr-minutes)"
)
PLACER_HELP = (
    "nextpnr's placer: heap (analytical) or static (electrostatic, spreads a design that "
    "fills little of the part); default: what the design routes best with"
)


def _pnr(design, args: argparse.Namespace) -> dict:
    """nextpnr's router, placer and density: the user's, else the design's own choice."""
    own = design.place_and_route()
    return {
        "router": args.router or own.get("router", ROUTERS[0]),
        # a density is the heap placer's
        "placer": args.placer
        or ("heap" if args.placer_density is not None else own.get("placer", "heap")),
        "density": args.placer_density,
        "tmg_ripup": args.tmg_ripup,
    }


def _density(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.3 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside 0.3-1.0")
    return value


CLOCK_HELP = (
    "bitstream: the clock the design runs at, from the board's PLL (default: the "
    "design's own target, else the board's oscillator)"
)


def _rate(design, model) -> tuple[int, float]:
    """(latency, cycles per sample) of the design for a report: the dataflow design's
    latency and II; the engine's cycles for one sample and per sample of a batch."""
    from accel.sim import stimulus

    t = design.timing(np.zeros((1, *design.graph.tensors[design.graph.inputs[0]].shape), int))
    if design.target == "dataflow":
        return t["latency_cycles"], t["ii_cycles"]
    batch = design.config.rows * 8
    x = stimulus.random_inputs(design.graph, batch, 0)
    return t["last_out_cycle"] + 1, round(design.timing(x)["cycles_per_sample"], 2)


def build_bitstream(design, model, board, work: Path, args: argparse.Namespace) -> dict:
    from accel.flows import fpga

    baud = args.baud or fpga.DEFAULT_BAUD
    top = fpga.BoardTop(design.component, baud, args.clock_mhz)
    with _status(f"building a bitstream for {board.name}", quiet=args.json) as update:
        impl = fpga.implement(
            board,
            top,
            work,
            seed=args.seed,
            progress=update,
            multipliers=design.multipliers,
            **_pnr(design, args),
        )
    report = impl.report(*_rate(design, model))
    report.update(
        arch=design.target,
        config=design.describe(),
        board=board.name,
        seed=args.seed,
        baud=baud,
        bitstream="accel_top.bit",
        logs=impl.logs,
    )
    (work / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    if not report["timing_met"]:
        print(
            f"accel: warning: timing not met: Fmax {impl.fmax_mhz} MHz is below the board "
            f"clock {impl.clock_mhz} MHz; see report.json",
            file=sys.stderr,
        )
    return report


# -- accel report -------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from accel.flows import boards, fpga
    from accel.sim.verilator import cache_root

    graph, model = load_task_model(args.model, args.task)
    board = boards.get(args.board)
    design = design_for(args, graph, model, board=board.name, build=True)
    compare = design.target == "dataflow" and not args.no_da4ml
    if compare:  # a model da4ml cannot express fails before any place and route
        from accel.flows import da4ml

        da4ml.check(graph)
    designs = {}
    with _status(
        f"implementing {graph.name} ({design.target}) on {board.name} (cached after the first run)",
        quiet=args.json,
    ) as update:
        rate = _rate(design, model)
        try:
            impl = fpga.implement_cached(
                board,
                fpga.BoardTop(design.component, clock_mhz=args.clock_mhz),
                cache_root() / "fpga",
                seed=args.seed,
                multipliers=design.multipliers,
                pnr_minutes=args.pnr_minutes,
                progress=update,
                **_pnr(design, args),
            )
            designs["accel"] = impl.report(*rate)
        except fpga.PlaceRouteTimeout as e:
            designs["accel"] = e.report(*rate)
        designs["accel"].update(
            arch=design.target, config=design.describe(), multipliers=design.multipliers
        )
        if compare:
            from accel.flows import da4ml_board

            designs["da4ml"] = da4ml_board.report(
                graph, board, seed=args.seed, pnr_minutes=args.pnr_minutes, progress=update
            )
    doc = {
        "model": graph.name,
        "board": board.name,
        "seed": args.seed,
        "designs": designs,
        **({"hls4ml": _hls4ml_note(graph)} if design.target == "dataflow" else {}),
        "note": "every design behind the same UART bridge, same yosys/nextpnr script"
        + ("" if design.target == "dataflow" else "; for the engine, ii_cycles is the cycles "
           f"per sample of a batch of {design.config.rows * 8}"),
    }  # fmt: skip
    if args.json:
        print(json.dumps(doc, indent=1, default=str))
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
    if "hls4ml" in doc:
        console.print(f"hls4ml: {doc['hls4ml']['note']}", markup=False)
    return 0


def _hls4ml_note(graph) -> dict:
    """What an hls4ml user of the same network would need for a figure beside these."""
    from accel.flows import hls4ml

    try:
        bound = sum(hls4ml.multiplier_count(graph, reuse=1).values())
    except AccelError:
        bound = None
    allows = f"; its Latency strategy allows {bound:,} multipliers at ReuseFactor 1"
    return {
        "multiplier_bound_reuse_1": bound,
        "note": "hls4ml has no ECP5 flow: its project (accel generate MODEL --target hls4ml) "
        "gets resources, latency and Fmax only from Vitis HLS and Vivado on an AMD part, "
        "neither of which is installed here" + (allows if bound else ""),
    }


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


# -- parser -------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is the one ``accel: error:`` line (and the help to read)."""

    def error(self, message: str):
        raise AccelError(f"{message} (see '{self.prog} --help')")


def _parents() -> dict[str, argparse.ArgumentParser]:
    """Option groups several commands share, as argparse parent parsers."""
    from accel import targets
    from accel.knobs import add_arguments

    model = Parser(add_help=False)
    model.add_argument("model", help="a zoo name (accel zoo list) or a QONNX/ONNX file")
    model.add_argument(
        "--task", metavar="NAME", help="multi-task models (moe_vit): the task's graph (seg, depth)"
    )
    arch = Parser(add_help=False)
    arch.add_argument(
        "--arch",
        choices=list(targets.TARGETS),
        help="the hardware: "
        + "; ".join(f"{n}, {t.description}" for n, t in targets.TARGETS.items())
        + " (default: the first that runs the model)",
    )
    groups = {
        name: add_arguments(
            arch, t.Config, f"{name} target (--arch {name}; defaults before the model's)",
            _knob_dest(name, ""),
        )
        for name, t in targets.TARGETS.items()
    }  # fmt: skip
    groups["engine"].add_argument(
        "--array", metavar="PxQ", help="engine array rows x columns, e.g. 8x8 (= --rows --cols)"
    )
    as_json = Parser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="one JSON document on stdout")
    output = Parser(add_help=False)
    output.add_argument("--force", action="store_true", help="replace an existing output")
    return {"model": model, "arch": arch, "json": as_json, "output": output}


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
    par = _parents()

    z = sub.add_parser("zoo", help="list the models in the zoo", parents=[par["json"]])
    z.add_argument("action", choices=["list"])
    z.set_defaults(func=cmd_zoo)

    t = sub.add_parser(
        "train",
        help="train a zoo model quantization-aware (needs torch)",
        parents=[par["json"], par["output"]],
    )
    t.add_argument("model")
    t.add_argument("--epochs", type=_positive, help="passes over the data (default: the model's)")
    t.add_argument("--n-train", type=_positive, help="training samples (default: the model's)")
    t.add_argument("--seed", type=_seed, default=0)
    t.add_argument("-o", "--out", default="trained", help="output directory (default: trained)")
    trainers = t.add_argument_group("the trainers' own options")
    for key, models in _train_options().items():
        helps = {zoo.MODELS[m].train_options[key] for m in models}
        trainers.add_argument(
            f"--{key.replace('_', '-')}",
            dest=f"train_{key}",
            metavar=key.upper(),
            help=f"{', '.join(models)}: {' / '.join(sorted(helps))}",
        )
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser(
        "predict",
        help="run a model on an input file with one engine",
        description="X.npy holds float64 real values (quantized with the model's input "
        "rounding and saturation) or integers (already-quantized raw values, range-checked). "
        "Y.npy gets the raw integer outputs. --engine rtl runs the --arch design under "
        "Verilator; the reference streams files of any length.",
        parents=[par["model"], par["arch"], par["output"]],
    )
    pr.add_argument("--engine", choices=ENGINES, default="reference")
    pr.add_argument("--inputs", required=True, metavar="X.npy")
    pr.add_argument("--out", required=True, metavar="Y.npy")
    pr.add_argument(
        "--hls4ml-reuse", type=_positive, help="hls4ml's ReuseFactor (--engine hls4ml; default 1)"
    )
    pr.set_defaults(func=cmd_predict)

    s = sub.add_parser(
        "sim",
        help="verify the RTL against the reference and the cycle model",
        description="Streams edge-value and synthetic samples through the generated RTL under "
        "Verilator; compares every output with the numpy reference and the cycles with the "
        "cycle model (the dataflow design's four interface stamps per sample, the engine's "
        "every output word). Exit status 1 on any mismatch.",
        parents=[par["model"], par["arch"], par["json"]],
    )
    s.add_argument(
        "--samples",
        type=_bounded(MAX_SIM_SAMPLES),
        default=1000,
        help=f"samples to simulate (default 1000, at most {MAX_SIM_SAMPLES:,})",
    )
    s.add_argument(
        "--backpressure",
        action="store_true",
        help="random source stalls and sink back-pressure (dataflow)",
    )
    s.add_argument("--simulator", default="verilator", help="verilator (default)")
    s.add_argument("--seed", type=_seed, default=0)
    s.set_defaults(func=cmd_sim)

    ge = sub.add_parser(
        "generate",
        help="write Verilog, an hls4ml project or an ECP5 bitstream",
        description="verilog: the --arch design, test vectors (for the engine: the compiled "
        "program and its data), a self-checking testbench, manifest.json. hls4ml: a project "
        "with every precision explicit, bit-exact in C simulation. bitstream: the --arch "
        "design behind a UART bridge for an ECP5 board, through yosys, nextpnr and ecppack "
        "(logs and report.json kept in the output directory).",
        parents=[par["model"], par["arch"], par["json"], par["output"]],
    )
    ge.add_argument("--target", choices=["verilog", "hls4ml", "bitstream"], required=True)
    ge.add_argument("-o", "--out", required=True, metavar="DIR")
    ge.add_argument("--board", help=f"bitstream: the board (default {DEFAULT_BOARD})")
    ge.add_argument("--baud", type=_positive, help="bitstream: UART rate (default 1,000,000)")
    ge.add_argument("--clock-mhz", type=float, metavar="F", help=CLOCK_HELP)
    ge.add_argument("--router", choices=ROUTERS, help=ROUTER_HELP)
    ge.add_argument("--placer", choices=("heap", "static"), help=PLACER_HELP)
    ge.add_argument("--placer-density", type=_density, metavar="D", help=DENSITY_HELP)
    ge.add_argument("--tmg-ripup", action="store_true", help=TMG_RIPUP_HELP)
    ge.add_argument("--backend", choices=["Vitis", "Vivado"], help="hls4ml backend (Vitis)")
    ge.add_argument("--hls4ml-reuse", type=_positive, help="hls4ml's ReuseFactor (default 1)")
    ge.add_argument(
        "--vectors",
        type=_bounded(MAX_SIM_SAMPLES),
        help="verilog: test vectors (default 1000 on the dataflow design, 64 on the engine; "
        f"at most {MAX_SIM_SAMPLES:,})",
    )
    ge.add_argument("--seed", type=_seed, default=1, help="stimulus and place-and-route seed")
    ge.set_defaults(func=cmd_generate)

    re_ = sub.add_parser(
        "report",
        help="resources, Fmax, latency and throughput from real yosys/nextpnr runs",
        description="Implements the --arch design for an ECP5 board (cached) and reports LUTs, "
        "flip-flops, DSPs, block RAM, Fmax, latency and II in cycles and ns, and samples/s; "
        "for the dataflow design, da4ml's Verilog of the same quantized network goes through "
        "the same flow beside it. Without --mult or --reuse, the dataflow design is "
        "multiplier-free (a sample every cycle) when its estimate is within the fullest such "
        "design measured to route, else on multipliers at the smallest power-of-two reuse "
        "whose estimate fits the board.",
        parents=[par["model"], par["arch"], par["json"]],
    )
    re_.add_argument("--board", default=DEFAULT_BOARD)
    re_.add_argument("--clock-mhz", type=float, metavar="F", help=CLOCK_HELP)
    re_.add_argument("--router", choices=ROUTERS, help=ROUTER_HELP)
    re_.add_argument("--placer", choices=("heap", "static"), help=PLACER_HELP)
    re_.add_argument("--placer-density", type=_density, metavar="D", help=DENSITY_HELP)
    re_.add_argument("--tmg-ripup", action="store_true", help=TMG_RIPUP_HELP)
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
    re_.set_defaults(func=cmd_report)

    d = sub.add_parser(
        "dse",
        help="design-space exploration: sweep parameters, estimate, Pareto plots",
        description="Evaluates every point of SWEEP.yaml (the cycle model, a resource estimate "
        "fitted to real yosys runs, quality; real RTL simulation, yosys and nextpnr runs on a "
        "random sample when the sweep asks) on Dask: a LocalCluster, or the cluster at "
        "--scheduler. DIR gets results.csv (one row per point), plots/ and summary.json; a "
        "re-run skips the points already in DIR.",
        parents=[par["json"]],
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
    d.set_defaults(func=cmd_dse)
    return p


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
