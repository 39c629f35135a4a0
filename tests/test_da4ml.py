"""The da4ml flow: bit-exact with the reference, and the emitted Verilog is what it says.

Two independent checks of the arithmetic, neither needing an HDL simulator:
da4ml's own interpreter on the saved stages (:func:`accel.flows.da4ml.load`),
and a small evaluator of the emitted Verilog text below, which knows only the
statement forms da4ml's code generator writes and the three helper modules it
instantiates here (transcribed from ``src/static/*.v``), and fails on anything
else.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from accel import reference, zoo
from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.flows import da4ml as fd
from accel.ir import Graph, Param
from accel.ir.graph import Node
from accel.sim.stimulus import edge_inputs, random_inputs

pytest.importorskip("da4ml")  # not a declared dependency of accel


@pytest.fixture(scope="module")
def graph():
    return zoo.get("autoencoder").build()


@pytest.fixture(scope="module")
def samples(graph):
    """Edge values, uniform words over the whole input range (they saturate), showers."""
    showers = zoo.get("autoencoder").make_inputs(2000, 2)
    return np.concatenate(
        [
            edge_inputs(graph),
            random_inputs(graph, 5000, seed=1),
            reference.quantize_inputs(graph, graph.inputs[0], showers),
        ]
    )


@pytest.fixture(scope="module")
def expected(graph, samples):
    return reference.predict(graph, samples)


@pytest.fixture(scope="module")
def piped(graph, tmp_path_factory):
    out = tmp_path_factory.mktemp("da4ml") / "piped"
    return out, fd.generate(graph, out)


@pytest.fixture(scope="module")
def comb(graph, tmp_path_factory):
    out = tmp_path_factory.mktemp("da4ml") / "comb"
    return out, fd.generate(graph, out, latency_cutoff=None)


# -- a tiny evaluator for the Verilog da4ml emits ------------------------------------

_KEYWORDS = {"if", "else", "generate", "begin", "end", "always", "assign", "wire", "reg"}
_SEL = r"(\w+)(?:\[(\d+)(?::(\d+))?\])?"
_NUM = r"(\d+)'b([01]+)"


def _mask(w: int) -> int:
    return (1 << w) - 1


def _sext(v: np.ndarray, w: int, to: int) -> np.ndarray:
    """Sign-extend the w-bit words ``v`` to ``to`` bits (still as unsigned patterns)."""
    return np.where((v >> (w - 1)) & 1, v | (_mask(to) ^ _mask(w)), v)


def _ext(v: np.ndarray, w: int, signed: int, pad_left: int, pad_right: int) -> np.ndarray:
    """``{{pad_left{sign or 0}}, v, {pad_right{1'b0}}}`` of da4ml's helper modules."""
    assert pad_left >= 0 and pad_right >= 0
    v = _sext(v, w, w + pad_left) if signed else v
    return v << pad_right


class _Module:
    """Wires of one evaluated module: name -> (unsigned words, width); buses as bit arrays."""

    def __init__(self, model_inp: np.ndarray, out_width: int) -> None:
        self.inp = model_inp  # (n, width) uint8, bit 0 first
        self.out = np.zeros((len(model_inp), out_width), dtype=np.uint8)
        self.wires: dict[str, tuple[np.ndarray, int]] = {}

    def operand(self, text: str) -> tuple[np.ndarray, int]:
        text = text.strip()
        if m := re.fullmatch(_NUM, text):
            w = int(m[1])
            return np.full(len(self.inp), int(m[2], 2), dtype=np.int64), w
        m = re.fullmatch(_SEL, text)
        assert m, f"cannot read operand {text!r}"
        name, hi, lo = m[1], m[2], m[3]
        if name == "model_inp":
            hi, lo = int(hi), int(lo if lo is not None else hi)
            bits = self.inp[:, lo : hi + 1].astype(np.int64)
            return bits @ (np.int64(1) << np.arange(hi - lo + 1)), hi - lo + 1
        v, w = self.wires[name]
        if hi is None:
            return v, w
        hi, lo = int(hi), int(lo if lo is not None else hi)
        assert hi < w, f"{text}: select beyond the {w}-bit wire"
        return (v >> lo) & _mask(hi - lo + 1), hi - lo + 1

    def expr(self, text: str, width: int) -> np.ndarray:
        text = text.strip()
        if m := re.fullmatch(r"'b([01]+)", text):
            return np.full(len(self.inp), int(m[1], 2) & _mask(width), dtype=np.int64)
        if m := re.fullmatch(r"(\S+) & \{(\d+)\{~(\S+)\}\}", text):  # ReLU
            v, w = self.operand(m[1])
            s, _ = self.operand(m[3])
            assert int(m[2]) == w
            return np.where(s & 1, 0, v)
        if m := re.fullmatch(r"\{\{(\d+)\{(\S+)\}\}, (\S+)\}", text):  # sign-extending slice
            s, _ = self.operand(m[2])
            v, w = self.operand(m[3])
            return v | np.where(s & 1, _mask(int(m[1])) << w, 0)
        if m := re.fullmatch(r"\{(\d+)\{(\S+)\}\}", text):
            s, _ = self.operand(m[2])
            return np.where(s & 1, _mask(int(m[1])), 0)
        v, _ = self.operand(text)
        return v

    def line(self, text: str) -> None:
        text = text.split("//")[0].strip()
        for decl in re.findall(r"wire \[(\d+):0\] (\w+);", text):
            self.wires[decl[1]] = (np.zeros(len(self.inp), dtype=np.int64), int(decl[0]) + 1)
        text = re.sub(r"wire \[\d+:0\] \w+;", "", text).strip()
        if not text:
            return
        if m := re.fullmatch(r"assign model_out\[(\d+):(\d+)\] = (.+);", text):
            hi, lo = int(m[1]), int(m[2])
            v, w = self.operand(m[3])
            assert w == hi - lo + 1
            self.out[:, lo : hi + 1] = (v[:, None] >> np.arange(w)) & 1
            return
        if m := re.fullmatch(r"assign (\w+)\[(\d+):0\] = (.+);", text):
            self.set(m[1], self.expr(m[3], int(m[2]) + 1))
            return
        m = re.fullmatch(r"(\w+) #\(([-\d, ]+)\) \w+ \((.+)\);", text)
        assert m, f"unknown statement {text!r}"
        kind, params = m[1], [int(p) for p in m[2].split(",")]
        args = [a.strip() for a in m[3].split(",")]
        out = re.fullmatch(_SEL, args[-1])[1]
        if kind == "shift_adder":
            bw0, bw1, s0, s1, bw, shift, sub = params
            need0 = bw0 - shift if shift < 0 else bw0
            need1 = bw1 + shift if shift > 0 else bw1
            badd = max(need0, need1) + (sub + 1 if s0 != s1 else sub) + 1
            r0, r1 = max(-shift, 0), max(shift, 0)
            (a, wa), (b, wb) = self.operand(args[0]), self.operand(args[1])
            assert (wa, wb) == (bw0, bw1) and bw <= badd
            a = _ext(a, bw0, s0, badd - bw0 - r0, r0)
            b = _ext(b, bw1, s1, badd - bw1 - r1, r1)
            self.set(out, (a - b if sub else a + b) & _mask(bw))
        elif kind == "mux":
            bw0, bw1, s0, s1, bw, shift, inv = params
            need0 = bw0 - shift if shift < 0 else bw0
            need1 = bw1 + shift if shift > 0 else bw1
            bbuf = max(need0, need1) + (inv + 1 if s0 != s1 else inv)
            r0, r1 = max(-shift, 0), max(shift, 0)
            key, wk = self.operand(args[0])
            (a, wa), (b, wb) = self.operand(args[1]), self.operand(args[2])
            assert wk == 1 and (wa, wb) == (bw0, bw1) and bw <= bbuf
            a = _ext(a, bw0, s0, bbuf - bw0 - r0, r0) & _mask(bw)
            b = _ext(b, bw1, s1, bbuf - bw1 - r1, r1) & _mask(bw)
            self.set(out, np.where(key & 1, a, (-b if inv else b) & _mask(bw)))
        elif kind == "negative":
            bw_in, bw_out, signed = params
            v, w = self.operand(args[0])
            assert w == bw_in
            if bw_in < bw_out:
                v = _sext(v, bw_in, bw_out) if signed else v
                self.set(out, (-v) & _mask(bw_out))
            else:
                self.set(out, ((-v) & _mask(bw_in)) & _mask(bw_out))
        else:
            raise AssertionError(f"helper module {kind} is not modelled here")

    def set(self, name: str, v: np.ndarray) -> None:
        _, w = self.wires[name]
        self.wires[name] = (v & _mask(w), w)


def _ports(text: str, module: str) -> dict[str, tuple[str, int]]:
    """Port name -> (direction, width) of ``module`` as declared in ``text``."""
    m = re.search(rf"module {module} \((.*?)\);", text, re.S)
    assert m, f"module {module} not declared"
    ports = {}
    for d, hi, name in re.findall(r"(input|output)(?: reg)?\s*(?:\[(\d+):0\])?\s*(\w+)", m[1]):
        ports[name] = (d, int(hi) + 1 if hi else 1)
    return ports


def _eval_comb(path: Path, module: str, bits: np.ndarray) -> np.ndarray:
    text = path.read_text()
    ports = _ports(text, module)
    assert ports["model_inp"] == ("input", bits.shape[1])
    mod = _Module(bits, ports["model_out"][1])
    body = text.split(");", 1)[1].rsplit("endmodule", 1)[0]
    for ln in body.splitlines():
        if ln.strip() and not ln.strip().startswith("//"):
            mod.line(ln)
    return mod.out


def _eval_core(src: Path, core: str, bits: np.ndarray) -> tuple[np.ndarray, int]:
    """The core's function and its register levels (model_inp -> model_out)."""
    text = (src / f"{core}.v").read_text()
    if "always" not in text:
        return _eval_comb(src / f"{core}.v", core, bits), 0
    # The pipeline must be exactly: model_inp -> stage0 -> ... -> stageN-1 -> model_out.
    chain = re.findall(r"(\w+) <= (\w+);", text)
    n = len(re.findall(rf"{core}_stage(\d+) stage\1 \(", text))
    want = [("stage0_inp", "model_inp")]
    want += [(f"stage{i}_inp", f"stage{i - 1}_out") for i in range(1, n)]
    want += [("model_out", f"stage{n - 1}_out")]
    assert chain == want
    for i in range(n):
        assert f".model_inp(stage{i}_inp), .model_out(stage{i}_out)" in text
        bits = _eval_comb(src / f"{core}_stage{i}.v", f"{core}_stage{i}", bits)
    return bits, len(chain)


def _eval_wrapper(src: Path, doc: dict, x: np.ndarray) -> tuple[np.ndarray, int]:
    """Graph-raw outputs of the top for raw inputs ``x``, through the emitted Verilog text."""
    text = (src / f"{doc['top']}.v").read_text()
    p_in, p_out = doc["ports"]["model_inp"], doc["ports"]["model_out"]
    w_in, w_out = p_in["element_width"], p_out["element_width"]
    x = x.reshape(len(x), -1) >> (doc["in_type"]["frac"] - p_in["element_frac"])
    top = ((x[:, :, None] >> np.arange(w_in)) & 1).astype(np.uint8).reshape(len(x), -1)
    packed = np.zeros((len(x), int(re.search(r"wire \[(\d+):0\] packed_inp", text)[1]) + 1), "u1")
    for hi, lo, ihi, ilo in re.findall(
        r"assign packed_inp\[(\d+):(\d+)\] = model_inp\[(\d+):(\d+)\];", text
    ):
        packed[:, int(lo) : int(hi) + 1] = top[:, int(ilo) : int(ihi) + 1]
    core_out, regs = _eval_core(src, doc["core"], packed)
    out = np.zeros((len(x), p_out["width"]), "u1")
    for hi, lo, rhs in re.findall(r"assign model_out\[(\d+):(\d+)\] = (.+);", text):
        lo, hi = int(lo), int(hi)
        if m := re.fullmatch(r"packed_out\[(\d+):(\d+)\]", rhs):
            out[:, lo : hi + 1] = core_out[:, int(m[2]) : int(m[1]) + 1]
        elif m := re.fullmatch(r"\{\d+\{packed_out\[(\d+)\]\}\}", rhs):  # sign extension
            out[:, lo : hi + 1] = core_out[:, int(m[1]), None]
        else:
            assert re.fullmatch(r"\d+'b0", rhs), rhs
    words = out.reshape(len(x), -1, w_out).astype(np.int64) @ (np.int64(1) << np.arange(w_out))
    if p_out["element_signed"]:
        words = np.where(words >> (w_out - 1), words - (1 << w_out), words)
    return words << (doc["out_type"]["frac"] - p_out["element_frac"]), regs


def _synthetic(rq1: Quant, rq2: Quant, padding: str, stride: int, dup: bool) -> Graph:
    """Gather (masked, maybe duplicated cells) -> conv -> requantize -> dense -> relu -> q.

    Bias on the conv and all-masked output positions make constant conv outputs
    (exactly the bias), a zero filter makes constant zeros, and WRAP/TRN
    requantizes to signed and unsigned types cover what the autoencoder does not.
    """
    rng = np.random.default_rng(7)
    g = Graph("synthetic")
    x = g.add_input("x", (20,), Quant(FixedType(8, 3)))
    index = rng.integers(-1, 20, size=36) if dup else np.r_[np.arange(20), -np.ones(16, int)]
    x = g.add("gather", x, index=index, shape=(6, 6, 1))
    w = rng.integers(-8, 8, size=(3, 3, 1, 3))
    w[..., 1] = 0
    p = {"weight": Param(w, FixedType(4, 2)), "bias": Param([-8, 5, 7], FixedType(4, 1))}
    x = g.add("conv2d", x, stride=stride, padding=padding, params=p)
    x = g.add("requantize", x, quant=rq1)
    x = g.add("reshape", x, shape=(g.tensors[x].size,))
    w = Param(rng.integers(-16, 16, size=(g.tensors[x].size, 5)), FixedType(5, 3))
    x = g.add("dense", x, params={"weight": w})
    x = g.add("relu", x)
    g.mark_output(g.add("requantize", x, quant=rq2))
    return g


# -- tests ------------------------------------------------------------------------


def test_samples_exercise_rounding_ties_and_saturation(graph, samples):
    values = reference.run(graph, samples)
    for node in graph.nodes:
        if node.op != "requantize":
            continue
        q = node.attrs["quant"]
        src = values[node.inputs[0]]
        shift = graph.tensors[node.inputs[0]].type.frac - q.type.frac
        out = values[node.outputs[0]]
        assert ((src & ((1 << shift) - 1)) == 1 << (shift - 1)).sum() > 100, node.name
        assert (out == q.type.max_int).sum() > 100, node.name
        assert (out == 0).sum() > 100, node.name


def test_emitted_pipeline_is_bit_exact(graph, piped, samples, expected):
    out, doc = piped
    assert doc["self_check"]["mismatches"] == 0
    got = fd.load(out).predict(samples)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


def test_combinational_is_bit_exact(graph, comb, samples, expected):
    out, doc = comb
    assert doc["latency_cycles"] == 0 and "clk" not in doc["ports"]
    np.testing.assert_array_equal(fd.load(out).predict(samples), expected)


@pytest.mark.parametrize("variant", ["piped", "comb"])
def test_verilog_text_computes_the_reference(variant, request, samples, expected):
    out, doc = request.getfixturevalue(variant)
    got, regs = _eval_wrapper(out / "src", doc, samples)
    np.testing.assert_array_equal(got, expected.reshape(len(samples), -1))
    assert regs == doc["latency_cycles"]


def test_files_declare_the_reported_top_and_ports(graph, piped):
    out, doc = piped
    assert doc["top"] == f"{doc['core']}_wrapper" == "autoencoder_da4ml_wrapper"
    assert doc["ii"] == 1 and doc["latency_cycles"] == doc["stages"] + 1 >= 2
    texts = {}
    for f in doc["files"]:
        assert (out / f).is_file(), f
        texts[f] = (out / f).read_text()
    defined = {m for t in texts.values() for m in re.findall(r"^module (\w+)", t, re.M)}
    used = {m for t in texts.values() for m in re.findall(r"\b(\w+)\s*#\(", t)}
    for t in texts.values():  # instances without parameters: "<module> <instance> ("
        used |= set(re.findall(r"^[ \t]*(?!module\b)(\w+)[ \t]+\w+[ \t]*\(", t, re.M)) - _KEYWORDS
    assert doc["top"] in defined and used <= defined  # nothing missing for synthesis
    n_in, n_out = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    ports = _ports(texts[f"src/{doc['top']}.v"], doc["top"])
    assert ports == {
        "clk": ("input", 1),
        "model_inp": ("input", n_in.size * n_in.type.width),
        "model_out": ("output", n_out.size * n_out.type.width),
    }
    for name, p in doc["ports"].items():
        assert ports[name] == (p["direction"] + "put", p["width"])
    p_in, p_out = doc["ports"]["model_inp"], doc["ports"]["model_out"]
    assert (p_in["element_width"], p_in["element_frac"], p_in["element_signed"]) == (10, 6, True)
    assert (p_out["element_width"], p_out["element_frac"], p_out["element_signed"]) == (9, 8, False)
    # Every stage's ports match the registers the core connects them to.
    core = texts[f"src/{doc['core']}.v"]
    regs = {n: int(hi) + 1 for hi, n in re.findall(r"reg \[(\d+):0\] (stage\d+_inp);", core)}
    assert len(regs) == doc["stages"]
    for i in range(doc["stages"]):
        st = _ports(texts[f"src/{doc['core']}_stage{i}.v"], f"{doc['core']}_stage{i}")
        assert st["model_inp"] == ("input", regs[f"stage{i}_inp"])


_RND, _TRN, _SAT, _WRAP = Rounding.RND, Rounding.TRN, Overflow.SAT, Overflow.WRAP


@pytest.mark.parametrize(
    ("rq1", "rq2", "padding", "stride", "dup"),
    [
        (
            Quant(FixedType(5, 3, False), _RND, _WRAP),
            Quant(FixedType(5, 1), _TRN, _WRAP),
            "same",
            1,
            False,
        ),
        (
            Quant(FixedType(6, 2), _TRN, _WRAP),
            Quant(FixedType(6, 3, False), _RND, _SAT),
            "valid",
            2,
            True,
        ),
        (
            Quant(FixedType(9, 5), _TRN, _SAT),
            Quant(FixedType(8, 6, False), _TRN, _WRAP),
            "same",
            2,
            True,
        ),
    ],
)
def test_other_modes_and_shapes_are_bit_exact(rq1, rq2, padding, stride, dup, tmp_path):
    g = _synthetic(rq1, rq2, padding, stride, dup)
    x = np.concatenate([edge_inputs(g), random_inputs(g, 2000, seed=3)])
    want = reference.predict(g, x)
    np.testing.assert_array_equal(fd.build(g, latency_cutoff=None).predict(x), want)
    doc = fd.generate(g, tmp_path / "prj", latency_cutoff=2)
    np.testing.assert_array_equal(fd.load(tmp_path / "prj").predict(x), want)
    got, regs = _eval_wrapper(tmp_path / "prj" / "src", doc, x)
    np.testing.assert_array_equal(got, want)
    assert regs == doc["latency_cycles"] > 2


def test_refuses_what_da4ml_cannot_express(graph, tmp_path):
    conv = zoo.get("autoencoder").build()
    q = conv.node("conv_q").attrs["quant"]
    conv.node("conv_q").attrs["quant"] = Quant(q.type, Rounding.RND_CONV, Overflow.SAT)
    with pytest.raises(AccelError, match=r"conv_q: rounding RND_CONV .* cannot be expressed"):
        fd.generate(conv, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    odd = zoo.get("autoencoder").build()  # an op the flow has no mapping for
    odd.nodes.append(Node("mystery", "softmax", [odd.outputs[0]], ["probs"]))
    with pytest.raises(AccelError, match="mystery: op 'softmax' has no da4ml mapping"):
        fd.build(odd)
    two = zoo.get("autoencoder").build()
    two.mark_output("flatten")
    with pytest.raises(AccelError, match="one input and one output"):
        fd.build(two)
    with pytest.raises(AccelError, match="latency_cutoff"):
        fd.build(graph, latency_cutoff=0)
    with pytest.raises(AccelError, match="not a Verilog identifier"):
        fd.build(graph, name="bad name")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("x")
    with pytest.raises(AccelError, match="not an empty directory"):
        fd.generate(graph, tmp_path / "full")
    with pytest.raises(AccelError, match="not a readable da4ml project"):
        fd.load(tmp_path / "full")
