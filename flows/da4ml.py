"""da4ml flow: the Graph written in da4ml's tracing front end, emitted as da4ml's Verilog.

da4ml (distributed arithmetic for ML) turns every constant matrix-vector product
into a shared adder graph (no multipliers) and generates fully unrolled
Verilog with an initiation interval of 1. It is a second, independent
implementation of the same integer network, so its resources and Fmax can be
set against our Amaranth dataflow RTL and hls4ml under one synthesis script.

Mapping (every value is a da4ml ``FixedVariable`` carrying an exact interval):

- graph input: ``FixedVariableArray.from_kif`` with the input type's sign,
  integer and fraction bits, so the port carries exactly the graph's raw words.
- ``gather``: indexing of the symbolic array; ``-1`` becomes a constant zero.
- ``conv2d`` / ``dense``: one constant matrix for the whole layer (the conv's
  im2col with TensorFlow padding folded in) and one ``x @ M`` call, which da4ml
  solves as a single CMVM, so partial sums are shared across all output
  positions, not just across one position's filters (da4ml's cost estimate for
  the whole autoencoder: 24930 vs 25248 with one CMVM per conv position).
  Constant inputs (the gather's zeros) are folded into the bias exactly. Then a
  ``WRAP`` quantize to the graph's accumulator type, which da4ml drops when the
  exact interval already fits (it always does for derived accumulators).
- ``relu``: ``relu()``; ``requantize``: ``quantize(k, i, f, overflow, round)``
  with ``RND`` (add half an LSB, truncate: round half toward +inf, as
  ``AP_RND``) or ``TRN``, and ``SAT`` (compare and select) or ``WRAP``.
  ``RND_CONV`` (ties to even) has no da4ml rounding mode and is refused.
  Values da4ml proves constant (a conv position that sees only masked cells is
  its bias) are requantized by accel's own rule, see :func:`_fold`.
- ``reshape``: a numpy reshape of the symbolic array (C order).

Bit-exactness is checked without an HDL simulator by da4ml's C++ DAIS
interpreter (int64 arithmetic), run stage by stage on the very ``CombLogic``
objects the Verilog is generated from (:meth:`Design.predict`, :func:`load`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from accel.compiler.dataflow import conv_taps
from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding, requantize
from accel.ir.graph import Graph, Node
from accel.outputs import staged_dir

# Pipeline cut every 5 adder levels: da4ml's documented example value. For the
# autoencoder (17 adder levels) it gives 4 stages and 4767 flip-flops; 3 gives 6
# stages / 10.8k FFs, 6 gives 3 / 4.5k, 10 gives 2 / 3.9k, 17 only registers the
# ports (624). One level is one ripple adder of ~10-25 bits, so a stage is about
# five carry chains plus routing on an ECP5.
DEFAULT_LATENCY_CUTOFF = 5
MANIFEST = "accel_manifest.json"
FORMAT = "accel-da4ml/1"
_ROUND = {Rounding.TRN: "TRN", Rounding.RND: "RND"}
_OVERFLOW = {Overflow.WRAP: "WRAP", Overflow.SAT: "SAT"}
_SUPPORTED = ("gather", "conv2d", "dense", "relu", "requantize", "reshape")


def _da4ml() -> Any:
    try:
        import da4ml
    except ImportError as e:
        raise AccelError(f"the da4ml flow needs the da4ml package ({e})") from None
    return da4ml


def _kif(t: FixedType) -> tuple[int, int, int]:
    """da4ml's (keep_negative, integer bits without sign, fraction bits) of a type."""
    return int(t.signed), t.width - t.frac - int(t.signed), t.frac


def _real(raw: np.ndarray, t: FixedType) -> np.ndarray:
    return np.ldexp(np.asarray(raw, dtype=np.float64), -t.frac)


def _exact(raw: int, frac: int) -> Fraction:
    return Fraction(int(raw)) * Fraction(2) ** -frac


# -- tracing -------------------------------------------------------------------


def _conv_matrix(node: Node, in_shape: tuple[int, ...]) -> np.ndarray:
    """The conv as one (H*W*Cin, OH*OW*Cout) matrix of raw weights, from the lowering's taps."""
    idx, ws = conv_taps(node, in_shape, np.arange(int(np.prod(in_shape))))
    m = np.zeros((int(np.prod(in_shape)), len(idx)), dtype=np.int64)
    for o, (i, w) in enumerate(zip(idx, ws, strict=True)):
        m[i, o] = w
    return m


def _linear(
    node: Node, x: np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...], hw: Any
) -> np.ndarray:
    """Dense/conv2d: ``x @ M + b`` as one da4ml CMVM, then wrap to the accumulator."""
    from da4ml.trace import FixedVariable, FixedVariableArray

    w, b = node.params["weight"], node.params.get("bias")
    m_raw = w.data if node.op == "dense" else _conv_matrix(node, in_shape)
    m = _real(m_raw, w.type)
    flat = x.ravel()
    # Exact constant part: the bias plus every constant input (the gather's zeros).
    const = [Fraction(0)] * m.shape[1]
    if b is not None:
        bias = np.broadcast_to(b.data, (m.shape[1] // b.data.size, b.data.size)).ravel()
        const = [_exact(v, b.type.frac) for v in bias]
    rows: dict[int, int] = {}  # id(variable) -> row of the merged matrix
    variables: list[Any] = []
    weights: list[np.ndarray] = []
    for r, v in enumerate(flat):
        if not m_raw[r].any():
            continue
        if v.low == v.high:  # a constant
            c = Fraction(v.low)
            if c:
                for o in np.flatnonzero(m_raw[r]):
                    const[o] += c * _exact(m_raw[r, o], w.type.frac)
            continue
        if id(v) in rows:  # the same value twice (a gather duplicate): one input
            weights[rows[id(v)]] = weights[rows[id(v)]] + m[r]
            continue
        rows[id(v)] = len(variables)
        variables.append(v)
        weights.append(m[r])
    if variables:
        vec = FixedVariableArray(np.array(variables, dtype=object), hwconf=hw)
        out = (vec @ np.stack(weights))._vars.ravel()
    else:
        out = np.array([FixedVariable.from_const(0.0, hw)] * m.shape[1], dtype=object)
    for o, c in enumerate(const):
        if c:
            fc = float(c)
            if Fraction(fc) != c:
                raise AccelError(f"node {node.name}: bias/constant {c} is not exact in float64")
            out[o] = out[o] + fc
    acc = Quant(node.attrs["acc"], Rounding.TRN, Overflow.WRAP)
    return _quantize(out.reshape(out_shape), acc, hw, ("WRAP", "TRN"))


def _modes(node: Node) -> tuple[str, str]:
    """da4ml's (overflow, round) names for a requantize; RND_CONV has none."""
    q = node.attrs["quant"]
    if q.rounding not in _ROUND:
        raise AccelError(
            f"node {node.name}: rounding {q.rounding} ({q.ap()}) cannot be expressed in da4ml, "
            "which rounds only TRN (truncate) or RND (half toward +inf)"
        )
    return _OVERFLOW[q.overflow], _ROUND[q.rounding]


def _fold(v: Any, quant: Quant, hw: Any) -> Any:
    """A constant requantized by accel's exact integer rule, as a da4ml constant.

    da4ml 0.6's own constant folding in ``quantize(..., 'WRAP')`` is wrong for
    negative out-of-range constants (it uses ``Decimal`` remainders, which keep
    the dividend's sign, and a signed modulus for unsigned targets), e.g. -4.0
    to ap_ufixed<5,2> gives -4.0, not 0.0.
    """
    from da4ml.trace import FixedVariable

    c = Fraction(v.low)
    frac = max(c.denominator.bit_length() - 1, quant.type.frac)
    raw = requantize(np.array([int(c * 2**frac)], dtype=np.int64), frac, quant)[0]
    return FixedVariable.from_const(float(_exact(raw, quant.type.frac)), hw)


def _quantize(x: np.ndarray, quant: Quant, hw: Any, modes: tuple[str, str]) -> np.ndarray:
    """Element-wise da4ml ``quantize``; constants folded exactly (see :func:`_fold`)."""
    k, i, f = _kif(quant.type)
    out = np.empty(x.shape, dtype=object)
    for idx, v in np.ndenumerate(x):
        out[idx] = _fold(v, quant, hw) if v.low == v.high else v.quantize(k, i, f, *modes)
    return out


def _relu(x: np.ndarray, hw: Any) -> np.ndarray:
    from da4ml.trace import FixedVariable

    out = np.empty(x.shape, dtype=object)
    for idx, v in np.ndenumerate(x):
        if v.low == v.high:
            out[idx] = FixedVariable.from_const(float(max(Fraction(v.low), Fraction(0))), hw)
        else:
            out[idx] = v.relu()
    return out


def check(graph: Graph) -> None:
    """A one-line :class:`AccelError` if da4ml cannot express ``graph`` exactly."""
    _check_graph(graph)


def _check_graph(graph: Graph) -> None:
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise AccelError(
            f"graph {graph.name}: the da4ml flow needs one input and one output, got "
            f"{len(graph.inputs)} and {len(graph.outputs)}"
        )
    for node in graph.nodes:
        if node.op not in _SUPPORTED:
            raise AccelError(
                f"node {node.name}: op {node.op!r} has no da4ml mapping "
                f"(supported: {', '.join(_SUPPORTED)})"
            )
        if len(node.inputs) != 1:
            raise AccelError(f"node {node.name}: the da4ml flow maps single-input ops only")
        if node.op == "requantize":
            _modes(node)


def trace(graph: Graph) -> Any:
    """Replay ``graph`` on da4ml symbolic fixed-point variables: a da4ml ``CombLogic``.

    Raises :class:`AccelError` for anything da4ml cannot express exactly, before
    any tracing work, so a refused graph costs nothing.
    """
    _check_graph(graph)
    _da4ml()
    from da4ml.trace import FixedVariable, FixedVariableArray, HWConfig, comb_trace

    # da4ml's defaults: latency counted in adder levels, cost in LUT-sized adder bits.
    hw = HWConfig(1, -1, -1)
    src = graph.inputs[0]
    t_in = graph.tensors[src]
    n = t_in.size
    k, i, f = _kif(t_in.type)
    inp = FixedVariableArray.from_kif(
        np.full(n, k), np.full(n, i), np.full(n, f), hwconf=hw, solver_options={}
    )
    values: dict[str, np.ndarray] = {src: inp._vars.reshape(t_in.shape)}
    zero = FixedVariable.from_const(0.0, hw)
    for node in graph.nodes:
        x = values[node.inputs[0]]
        out_t = graph.tensors[node.outputs[0]]
        try:
            if node.op == "gather":
                flat = x.ravel()
                index = np.asarray(node.attrs["index"], dtype=np.int64)
                y = np.array([flat[j] if j >= 0 else zero for j in index], dtype=object)
            elif node.op in ("dense", "conv2d"):
                y = _linear(
                    node,
                    x,
                    graph.tensors[node.inputs[0]].shape,
                    graph.tensors[node.outputs[0]].shape,
                    hw,
                )
            elif node.op == "relu":
                y = _relu(x, hw)
            elif node.op == "requantize":
                y = _quantize(x, node.attrs["quant"], hw, _modes(node))
            else:  # reshape
                y = x
        except (AssertionError, ValueError, NotImplementedError) as e:
            raise AccelError(f"node {node.name}: da4ml cannot trace {node.op}: {e}") from None
        values[node.outputs[0]] = np.asarray(y, dtype=object).reshape(out_t.shape)
    out = FixedVariableArray(values[graph.outputs[0]].ravel(), hwconf=hw)
    return comb_trace(inp, out)


# -- the design ------------------------------------------------------------------


@dataclass(frozen=True)
class Design:
    """da4ml's logic for a graph: the stages its Verilog is generated from, plus the I/O types.

    ``stages`` holds one ``CombLogic`` when combinational, or the pipeline's
    stages (each becomes a ``<name>_stage<i>`` module). :meth:`predict` runs
    them in da4ml's bit-exact interpreter, which is how we check the Verilog's
    arithmetic without an HDL simulator.
    """

    name: str
    stages: tuple[Any, ...]
    pipelined: bool
    latency_cutoff: int | None
    in_type: FixedType
    in_shape: tuple[int, ...]
    out_type: FixedType
    out_shape: tuple[int, ...]

    @property
    def latency_cycles(self) -> int:
        """Register levels from ``model_inp`` to ``model_out``: stages + 1, or 0 if combinational.

        The core registers its input (``stage0_inp``), each stage's result and
        ``model_out``: an input present in cycle ``c`` (sampled at the edge that
        ends it) is on ``model_out`` in cycle ``c + latency``, the convention of
        accel's cycle model.
        """
        return len(self.stages) + 1 if self.pipelined else 0

    @property
    def cost(self) -> float:
        """da4ml's own area estimate (LUTs of its adder model), not a synthesis result."""
        return float(sum(s.cost for s in self.stages))

    def predict(self, x: np.ndarray, n_threads: int = 1) -> np.ndarray:
        """Raw integer outputs for raw integer inputs, through da4ml's DAIS interpreter."""
        x = np.asarray(x)
        if x.dtype.kind not in "iu":
            raise AccelError(f"da4ml predict: expected integer raw inputs, got dtype {x.dtype}")
        if x.shape[1:] != self.in_shape:
            raise AccelError(f"da4ml predict: expected shape (N, {self.in_shape}), got {x.shape}")
        if not self.in_type.contains(x):
            raise AccelError(f"da4ml predict: inputs outside the raw range of {self.in_type}")
        v = _real(x.reshape(len(x), -1), self.in_type)  # float64: exact below 2**53
        for stage in self.stages:
            v = stage.predict(v, n_threads=n_threads).reshape(len(x), -1)
        raw = np.ldexp(v, self.out_type.frac)
        out = raw.astype(np.int64)
        if not np.array_equal(out, raw):
            raise AccelError("da4ml predict: an output is not on the output type's grid")
        return out.reshape(len(x), *self.out_shape)


def _module_name(graph: Graph, name: str | None) -> str:
    base = name if name is not None else f"{graph.name}_da4ml"
    if not re.fullmatch(r"[A-Za-z_]\w*", base):
        raise AccelError(f"{base!r} is not a Verilog identifier")
    return base


def build(
    graph: Graph, *, latency_cutoff: int | None = DEFAULT_LATENCY_CUTOFF, name: str | None = None
) -> Design:
    """Trace ``graph`` and, if ``latency_cutoff`` is set, split it into pipeline stages.

    ``latency_cutoff`` is da4ml's budget per stage in adder levels (da4ml then
    retimes the cut points); ``None`` keeps the logic combinational.
    """
    if latency_cutoff is not None and (
        isinstance(latency_cutoff, bool)
        or not isinstance(latency_cutoff, int)
        or latency_cutoff < 1
    ):
        raise AccelError(
            f"latency_cutoff must be a positive integer or None, got {latency_cutoff!r}"
        )
    top = _module_name(graph, name)
    comb = trace(graph)
    if latency_cutoff is None:
        stages: tuple[Any, ...] = (comb,)
    else:
        from da4ml.trace import to_pipeline

        stages = tuple(to_pipeline(comb, latency_cutoff, verbose=False).solutions)
    t_in, t_out = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    return Design(
        top,
        stages,
        latency_cutoff is not None,
        latency_cutoff,
        t_in.type,
        t_in.shape,
        t_out.type,
        t_out.shape,
    )


# -- Verilog ---------------------------------------------------------------------


def _io_port(qints: list, t: FixedType, n_elem: int) -> dict[str, Any]:
    """The wrapper's uniform layout, as da4ml's ``hetero_io_map`` builds it."""
    from da4ml.types import minimal_kif

    kifs = [minimal_kif(q) for q in qints]
    ks, ints, fs = zip(*kifs, strict=True)
    signed = bool(max(ks))
    frac = max(fs)
    width = max(ints) + int(signed) + frac
    doc: dict[str, Any] = {
        "width": width * n_elem,
        "elements": n_elem,
        "element_width": width,
        "element_frac": frac,
        "element_signed": signed,
        "element_type": t.ap(),
        "layout": f"element k at bits [{width}*k + {width - 1} : {width}*k], C order",
    }
    if (width, frac, signed) != (t.width, t.frac, t.signed):
        doc["differs"] = (
            f"da4ml proved a narrower range than {t.ap()}: words are "
            f"{'signed' if signed else 'unsigned'} {width}-bit at scale 2^-{frac}"
        )
    return doc


def _instantiated(text: str) -> set[str]:
    return set(re.findall(r"\b([A-Za-z_]\w*)\s*#\(", text))


def _self_check(graph: Graph, design: Design, n: int = 2000) -> dict[str, int]:
    """Edge values and uniform random words through da4ml's interpreter vs the reference.

    A mismatch is a bug in this mapping (or da4ml): refuse to hand out that Verilog.
    """
    from accel import reference
    from accel.sim.stimulus import edge_inputs, random_inputs

    x = np.concatenate([edge_inputs(graph), random_inputs(graph, n, seed=0)])
    bad = int(np.sum(np.any(design.predict(x) != reference.predict(graph, x), axis=1)))
    if bad:
        raise AccelError(
            f"da4ml design for {graph.name}: {bad}/{len(x)} samples differ from the reference"
        )
    return {"samples": len(x), "mismatches": bad}


def _manifest(design: Design, prj: Path, seconds: float, check: dict[str, int]) -> dict[str, Any]:
    from importlib.metadata import version

    from da4ml.types import Pipeline

    first, last = design.stages[0], design.stages[-1]
    n_in, n_out = int(np.prod(design.in_shape)), int(np.prod(design.out_shape))
    src = prj / "src"
    name = design.name
    ordered = [f"{name}_stage{i}" for i in range(len(design.stages))] if design.pipelined else []
    ordered += [name, f"{name}_wrapper"]
    used: set[str] = set()
    for m in ordered:
        used |= _instantiated((src / f"{m}.v").read_text())
    static = sorted(p for p in (src / "static").glob("*.v") if p.stem in used)
    files = [str(p.relative_to(prj)) for p in static]
    files += [f"src/{m}.v" for m in ordered]
    ports: dict[str, Any] = {}
    if design.pipelined:
        ports["clk"] = {"direction": "in", "width": 1, "edge": "rising"}
    ports["model_inp"] = {"direction": "in", **_io_port(first.inp_qint, design.in_type, n_in)}
    ports["model_out"] = {"direction": "out", **_io_port(last.out_qint, design.out_type, n_out)}
    n_st = len(design.stages)
    timing = (
        f"pipelined: {n_st} da4ml stages (cut every {design.latency_cutoff} adder levels, then "
        f"retimed), {n_st + 1} register levels (model_inp is registered, model_out is a "
        f"register); a new input every cycle; no reset, no valid/ready"
        if design.pipelined
        else "combinational: no clock, no registers"
    )
    return {
        "format": FORMAT,
        "generator": f"da4ml {version('da4ml')}",
        "top": f"{name}_wrapper",
        "core": name,
        "files": files,
        "project_files": sorted(
            str(p.relative_to(prj)) for p in prj.rglob("*") if p.is_file() and p.name != MANIFEST
        ),
        "ports": ports,
        "latency_cycles": design.latency_cycles,
        "ii": 1,
        "stages": n_st if design.pipelined else 0,
        "latency_cutoff": design.latency_cutoff,
        "da4ml_cost_luts": design.cost,
        "da4ml_register_bits": int(Pipeline(design.stages).reg_bits) if design.pipelined else 0,
        "generation_seconds": round(seconds, 2),
        "self_check": check,
        "in_shape": list(design.in_shape),
        "out_shape": list(design.out_shape),
        "in_type": design.in_type.to_json(),
        "out_type": design.out_type.to_json(),
        "notes": (
            f"{timing}. Top {name}_wrapper is da4ml's I/O wrapper (uniform element widths) "
            f"around the core {name}. model_inp element k is the raw word of flat input "
            f"element k ({design.in_type.ap()}), model_out element k the raw word of flat output "
            "element k, element 0 in the low bits. Arithmetic: shift-and-add CMVM (no "
            "multipliers), exact accumulation, ReLU, and every requantize with the graph's "
            "rounding (TRN/RND) and overflow (WRAP/SAT); checked bit-exact against the "
            "reference with da4ml's interpreter on the emitted stages (self_check). da4ml's "
            "helper modules have generic names (shift_adder, mux, negative) that may clash with "
            "other designs in one synthesis run. The tcl/xdc/sdc files and sim/ are da4ml's "
            "Vivado/Quartus/Verilator project files, not needed for yosys."
        ),
    }


def generate(
    graph: Graph,
    out_dir: Path,
    *,
    latency_cutoff: int | None = DEFAULT_LATENCY_CUTOFF,
    name: str | None = None,
) -> dict[str, Any]:
    """Write da4ml's Verilog project for ``graph`` into ``out_dir`` (absent or empty).

    Everything da4ml's ``VerilogModel.write`` emits, plus ``accel_manifest.json``
    (the returned dict). Assembled next to ``out_dir`` and renamed into place,
    so a failure leaves nothing half-written.
    """
    import time

    t0 = time.perf_counter()
    from da4ml.codegen import VerilogModel
    from da4ml.types import Pipeline

    with staged_dir(out_dir) as tmp:
        design = build(graph, latency_cutoff=latency_cutoff, name=name)
        check = _self_check(graph, design)
        solution = Pipeline(design.stages) if design.pipelined else design.stages[0]
        VerilogModel(solution, design.name, tmp).write()
        doc = _manifest(design, tmp, time.perf_counter() - t0, check)
        (tmp / MANIFEST).write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def load(out_dir: Path) -> Design:
    """The design as written by :func:`generate`, from da4ml's saved model JSON.

    Predicting with it checks the emitted artifact itself, not a fresh trace.
    """
    _da4ml()
    from da4ml.types import CombLogic, Pipeline

    out_dir = Path(out_dir)
    try:
        doc = json.loads((out_dir / MANIFEST).read_text())
        if doc.get("format") != FORMAT:
            raise AccelError(f"{out_dir / MANIFEST}: not an {FORMAT} manifest")
        pipelined = bool(doc["stages"])
        if pipelined:
            stages = tuple(Pipeline.load(str(out_dir / "model" / "pipeline.json")).solutions)
        else:
            stages = (CombLogic.load(out_dir / "model" / "comb.json"),)
        return Design(
            doc["core"],
            stages,
            pipelined,
            doc["latency_cutoff"],
            FixedType.from_json(doc["in_type"]),
            tuple(doc["in_shape"]),
            FixedType.from_json(doc["out_type"]),
            tuple(doc["out_shape"]),
        )
    except (OSError, KeyError, ValueError) as e:
        raise AccelError(f"{out_dir}: not a readable da4ml project ({e})") from None
