"""The engine's vector unit under Verilator: each op bit-exact with accel.intops, cycle-exact.

Every test program loads rows into the banks, runs one VEC instruction, and
streams its result out through an identity GEMM, so the stream carries the
banks' words exactly; the cycle model predicts every output word's cycle.
"""

import numpy as np
import pytest

from accel import intops
from accel.engine.compile import Allocator, GemmSpec, place
from accel.engine.isa import Target, VecOp
from accel.engine.program import DrainSpec, Geometry, Load, Program, a_words, bias_words
from accel.engine.vector import (
    Vec,
    add_fields,
    exact_drain,
    gelu_fields,
    layernorm_fields,
    softmax_fields,
)
from accel.engine.vit import engine_config
from accel.fixed import FixedType, Overflow, Quant, Rounding, requantize
from accel.sim.engine import run_program

CFG = engine_config()  # the ViT's engine: one Verilator build for both test files
OUT = 128  # the result region in the banks
Y = 64  # ADD's second operand


def run_vec(x: np.ndarray, vec: Vec, out_type: FixedType, loads=()) -> tuple[np.ndarray, object]:
    """Rows ``x`` through ``vec``; the stored result rows (raw) and the run."""
    cfg = CFG
    k = vec.length * cfg.group
    prog = Program(cfg)
    prog.steps.append(Load(Target.A, 0, a_words(cfg, x, k)))
    prog.steps += list(loads)
    prog.steps.append(vec)
    # identity GEMM: streams the result region unchanged
    eye = np.eye(k, dtype=np.int64)
    spec = GemmSpec("copy", np.zeros((0, k), np.int64), eye, DrainSpec(out_type))
    alloc = Allocator(cfg)
    alloc.biases(4, "vec params")  # keep LAYERNORM's gamma and beta
    gemm, gl = place(cfg, spec, alloc, len(x), OUT, 0, True, Geometry.rows(k))
    prog.steps += [*gl, gemm]
    run = run_program(prog)
    return run.outputs[0][: len(x), : x.shape[1]], run


def _vec(vop, rows, n, drain, fields, **kw) -> Vec:
    length = -(-n // CFG.group)
    return Vec(
        vop.name.lower(), vop, rows // CFG.rows, length, n, 0, length, OUT, length, drain,
        fields=fields, **kw,
    )  # fmt: skip


def _edges(rng, shape, t: FixedType) -> np.ndarray:
    x = rng.integers(t.min_int, t.max_int + 1, shape)
    x[0] = t.min_int
    x[1] = t.max_int
    x[2] = 0
    x[3, ::2] = t.min_int
    return x


def check_cycles(run):
    assert run.cycles_match, "measured output cycles differ from the cycle model"


def test_add_requantized():
    rng = np.random.default_rng(1)
    ta, tb = FixedType(8, 4), FixedType(8, 2)
    a, b = _edges(rng, (16, 24), ta), _edges(rng, (16, 24), tb)
    exact, f = add_fields(ta, tb)
    q = Quant(FixedType(8, 3), Rounding.RND, Overflow.SAT)
    vec = _vec(VecOp.ADD, 16, 24, exact_drain(exact, q), f, b_base=Y)
    y_load = Load(Target.A, Y, a_words(CFG, b, 24))
    got, run = run_vec(a, vec, q.type, [y_load])
    want = requantize(intops.add(a, b, ta, tb), exact.frac, q)
    np.testing.assert_array_equal(got, want)
    check_cycles(run)


def test_softmax_rows():
    rng = np.random.default_rng(2)
    tx, out = FixedType(8, 4), FixedType(8, 8, signed=False)
    x = _edges(rng, (16, 20), tx)  # 20 of 24 lanes: padding is left out
    x[4] = 7  # a constant row
    exact, f = softmax_fields(tx, 20, out, "softmax")
    vec = _vec(VecOp.SOFTMAX, 16, 20, exact_drain(exact, None, out), f)
    got, run = run_vec(x, vec, out)
    span = intops.softmax_span(tx.min_int, tx.max_int, tx.frac)
    want = intops.shiftmax(x, tx.frac, out.frac, out.width, span)
    np.testing.assert_array_equal(got, want)
    check_cycles(run)


def test_gelu():
    rng = np.random.default_rng(3)
    tx = FixedType(8, 4)
    x = _edges(rng, (8, 16), tx)
    exact, f = gelu_fields(tx, 8, "gelu")
    q = Quant(FixedType(8, 4), Rounding.RND, Overflow.SAT)
    vec = _vec(VecOp.GELU, 8, 16, exact_drain(exact, q), f)
    got, run = run_vec(x, vec, q.type)
    want = requantize(intops.shiftgelu(x, tx.frac, 8), exact.frac, q)
    np.testing.assert_array_equal(got, want)
    check_cycles(run)


@pytest.mark.parametrize("beta", [True, False])
def test_layernorm(beta):
    rng = np.random.default_rng(4)
    tx, tg, tb = FixedType(8, 3), FixedType(8, 6), FixedType(8, 4)
    c = 16
    x = _edges(rng, (16, c), tx)
    x[4] = -5  # a constant row: sigma = 0
    gamma = rng.integers(-128, 128, c)
    bvals = rng.integers(-128, 128, c) if beta else None
    exact, f = layernorm_fields(tx, c, tg, tb if beta else None, 8, 4, 4)
    q = Quant(FixedType(8, 4), Rounding.RND, Overflow.SAT)
    vec = _vec(VecOp.LAYERNORM, 16, c, exact_drain(exact, q), f, bias_base=0)
    params = np.concatenate([gamma, bvals if beta else np.zeros(c, np.int64)])
    loads = [Load(Target.BIAS, 0, bias_words(CFG, params, 2 * c))]
    got, run = run_vec(x, vec, q.type, loads)
    ln = intops.layernorm(x, tx, gamma, bvals, tg, tb if beta else None, 8, 4, 4)
    np.testing.assert_array_equal(got, requantize(ln, exact.frac, q))
    check_cycles(run)
