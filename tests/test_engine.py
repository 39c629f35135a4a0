"""The MAC-array engine under Verilator: bit-exact GEMMs, dense and N:M, cycle-exact."""

import numpy as np
import pytest

from accel import nm
from accel.engine.compile import GemmSpec, compile_gemms, kept_per_group
from accel.engine.config import EngineConfig
from accel.engine.cycles import DRAIN_LATENCY, ISSUE_TO_DRAIN, predict
from accel.engine.program import DrainSpec
from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding, requantize
from accel.kernels import finish
from accel.sim.engine import run_program

CFG = EngineConfig(
    rows=4, cols=8, group=8, a_depth=512, b_depth=2048, bias_depth=64
)  # = engine_cfg
ACC = FixedType(32, 0)


def sparse(rng, k, c, pattern, lo=-256, hi=256):
    b = rng.integers(lo, hi, (k, c))
    return b if pattern is None else b * nm.mask(b, nm.NM.parse(pattern))


def expected(spec: GemmSpec) -> np.ndarray:
    acc = finish(spec.a @ spec.b, spec.bias, spec.drain.acc)
    if spec.drain.relu:
        acc = np.maximum(acc, 0)
    q = spec.drain.quant
    return acc if q is None else requantize(acc, spec.drain.acc.frac, q)


def check(specs, **kw):
    prog = compile_gemms(CFG, specs)
    run = run_program(prog, **kw)
    for spec, out in zip(specs, run.outputs, strict=True):
        r, c = spec.a.shape[0], spec.b.shape[1]
        np.testing.assert_array_equal(out[:r, :c], expected(spec), err_msg=spec.name)
    return run


@pytest.fixture(scope="module")
def pattern_run():
    rng = np.random.default_rng(0)
    a = rng.integers(-256, 256, (21, 64))
    a[0] = -256  # max negative
    a[1] = 255
    a[2] = 0
    specs = []
    for pattern in [None, "4:8", "2:4", "2:8", "1:4", "1:8"]:
        b = sparse(rng, 64, 24, pattern)
        b[:, 0] = -256 * (b[:, 0] != 0)  # a column of max-negative kept weights
        specs.append(
            GemmSpec(str(pattern), a, b, DrainSpec(ACC), nm.NM.parse(pattern) if pattern else None)
        )
    return specs, check(specs)


def test_dense_and_sparse_gemms_are_bit_exact_and_cycle_exact(pattern_run):
    specs, run = pattern_run
    assert run.cycles_match
    assert len(run.out_valid) == len(specs) * 6 * 3 * 4  # row blocks x col tiles x 4 words


def test_sparse_gemms_take_n_over_m_of_the_dense_cycles(pattern_run):
    _, run = pattern_run
    cycles = {g.name: g.cycles for g in run.model.gemms}
    dense = cycles["None"]
    for name, ratio in [("4:8", 2), ("2:4", 2), ("2:8", 4), ("1:4", 4)]:
        speedup = dense / cycles[name]
        assert 0.9 * ratio <= speedup <= ratio, (name, speedup)
    # utilisation: useful MACs over MAC units x cycles, against the ideal of 1
    util = {g.name: g.utilisation for g in run.model.gemms}
    assert util["None"] > 0.9 * (21 / 24)  # 21 real rows of 24 padded


def test_kept_per_group_maps_patterns_onto_the_hardware_group():
    assert [kept_per_group(CFG, nm.NM.parse(p)) for p in ["2:4", "2:8", "1:4", "3:16", "1:3"]] == [
        4,
        2,
        2,
        3,
        8,  # 1:3 cannot use a group of 8: dense
    ]
    assert kept_per_group(CFG, None) == 8


@pytest.mark.parametrize("seed", [1])
def test_drain_modes_match_the_reference(seed):
    """Bias, accumulator wrap, ReLU, every rounding and overflow mode, in one program."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-256, 256, (9, 40))
    a[0] = -256
    b = sparse(rng, 40, 16, "2:8")
    bias = rng.integers(-(2**20), 2**20, 16)
    specs = []
    modes = [
        (FixedType(32, 8), False, Quant(FixedType(8, 0, False), Rounding.RND, Overflow.SAT)),
        (FixedType(32, 8), True, Quant(FixedType(8, 2, False), Rounding.RND_CONV, Overflow.SAT)),
        (FixedType(32, 8), True, Quant(FixedType(6, 1, True), Rounding.TRN, Overflow.WRAP)),
        (FixedType(32, 8), False, Quant(FixedType(9, 0, True), Rounding.RND_CONV, Overflow.WRAP)),
        (FixedType(18, 4), False, None),  # sums wrap at 18 bits, as the reference does
        (FixedType(20, 8), True, Quant(FixedType(12, 0, True), Rounding.RND, Overflow.SAT)),
    ]
    for i, (acc, relu, quant) in enumerate(modes):
        specs.append(GemmSpec(f"mode{i}", a, b, DrainSpec(acc, relu, quant), nm.NM(2, 8), bias))
    wrapped = finish(a @ b, bias, FixedType(18, 4))
    assert (wrapped != a @ b + bias).any()  # the 18-bit accumulator really wraps
    run = check(specs)
    assert run.cycles_match


def test_drain_bound_tiles_stall_exactly():
    """A short K (2 steps per tile) against a 4-word drain: tiles wait for the drain."""
    rng = np.random.default_rng(2)
    a = rng.integers(-256, 256, (12, 8))
    spec = GemmSpec("short", a, sparse(rng, 8, 16, "2:8"), DrainSpec(ACC), nm.NM(2, 8))
    run = check([spec])
    assert run.cycles_match
    g = compile_gemms(CFG, [spec]).gemms[0]
    assert g.steps_per_tile(CFG) == 2 < CFG.rows * CFG.cols // CFG.group == 4


def test_back_pressure_keeps_results_exact(pattern_run):
    specs, _ = pattern_run
    rng = np.random.default_rng(5)
    check(specs[2:4], src_valid=rng.random(64) < 0.4, sink_ready=rng.random(64) < 0.3)


def test_bad_programs_name_the_problem():
    rng = np.random.default_rng(3)
    a = rng.integers(-8, 8, (4, 16))
    dense_b = rng.integers(1, 8, (16, 8))
    with pytest.raises(AccelError, match=r"fc: 16 group\(s\) have more than 2 non-zeros of 8"):
        compile_gemms(CFG, [GemmSpec("fc", a, dense_b, DrainSpec(ACC), nm.NM(2, 8))])
    with pytest.raises(AccelError, match="fc: M=8 does not divide the group dimension"):
        compile_gemms(CFG, [GemmSpec("fc", a[:, :12], dense_b[:12], DrainSpec(ACC), nm.NM(2, 8))])
    with pytest.raises(AccelError, match="fc: A: values outside the engine's 9-bit"):
        compile_gemms(CFG, [GemmSpec("fc", a * 100, dense_b, DrainSpec(ACC))])
    with pytest.raises(AccelError, match=r"fc: A \(4, 16\) and B \(8, 8\) do not multiply"):
        compile_gemms(CFG, [GemmSpec("fc", a, dense_b[:8], DrainSpec(ACC))])
    small = EngineConfig(rows=4, cols=8, group=8, a_depth=4, b_depth=32, bias_depth=4)
    with pytest.raises(
        AccelError, match="big: weights need 64 words of the weight buffer, which holds 32"
    ):
        compile_gemms(small, [GemmSpec("big", a, rng.integers(-8, 8, (16, 32)), DrainSpec(ACC))])
    tight = EngineConfig(rows=4, cols=8, group=8, a_depth=4, b_depth=64, bias_depth=2)
    with pytest.raises(AccelError, match="wide: biases need 4 words of the bias buffer, which"):
        b = rng.integers(-8, 8, (16, 32))
        compile_gemms(tight, [GemmSpec("wide", a, b, DrainSpec(ACC), bias=np.ones(32, int))])
    with pytest.raises(AccelError, match="rows: activations need 8 words per bank"):
        compile_gemms(
            small, [GemmSpec("rows", rng.integers(-8, 8, (16, 16)), dense_b, DrainSpec(ACC))]
        )
    with pytest.raises(AccelError, match="accumulator needs 40 bits, the engine has 32"):
        compile_gemms(
            CFG, [GemmSpec("wide", a, dense_b, DrainSpec(FixedType(40, 0)))]
        ).instructions()
    with pytest.raises(AccelError, match="must be a multiple of the group"):
        EngineConfig(cols=12, group=8)


def test_cycle_model_closed_form():
    """One GEMM: fetch+decode, T steps per tile at max(T, D) apart, then the drain."""
    rng = np.random.default_rng(4)
    a = rng.integers(-8, 8, (8, 64))
    spec = GemmSpec("g", a, sparse(rng, 64, 16, "2:8", -8, 8), DrainSpec(ACC), nm.NM(2, 8))
    prog = compile_gemms(CFG, [spec])
    t = predict(prog).gemms[0]
    tiles, steps, drain = 2 * 2, 8 * 2, 4
    latency = ISSUE_TO_DRAIN + 1 + DRAIN_LATENCY  # pipeline registers after the last step
    assert t.cycles == 2 + steps + (tiles - 1) * max(steps, drain) + drain + latency


def test_odd_reductions_and_column_tails_are_exact():
    """A reduction that is not a multiple of the group runs with its padding spread over
    its words (K = 10: 2 words of 5 lanes, 10 steps per tile, not 16; K = 13: 2 of 7);
    columns past the last full tile run as a tail whose reduction is split across the
    columns. Max-negative operands, wrapping and saturating drains, bias, ReLU, stalls."""
    from accel.engine.compile import spread_reduction

    rng = np.random.default_rng(9)
    wrap = FixedType(14, 0)
    sat = Quant(FixedType(8, 0), Rounding.RND, Overflow.SAT)
    specs = []
    for name, k, c, drain in [
        ("k10", 10, 16, DrainSpec(ACC)),
        ("k13", 13, 8, DrainSpec(wrap, True, sat)),
        ("tail", 64, 10, DrainSpec(wrap)),
        ("tail_only", 64, 3, DrainSpec(ACC, True, sat)),
        ("k10_c10", 10, 10, DrainSpec(ACC)),
    ]:
        a = rng.integers(-256, 256, (21, k))
        a[0], a[1] = -256, 0
        b = rng.integers(-256, 256, (k, c))
        b[:, 0] = -256
        bias = rng.integers(-1000, 1000, c)
        specs.append(GemmSpec(name, a, b, drain, None, bias))
    assert spread_reduction(CFG, specs[0]).pattern == nm.NM(5, 8)
    assert spread_reduction(CFG, specs[1]).pattern == nm.NM(7, 8)
    prog = compile_gemms(CFG, specs)
    names = [g.name for g in prog.gemms]
    assert names == ["k10", "k13", "tail", "tail.tail", "tail_only.tail", "k10_c10"]
    steps = {g.name: g.steps_per_tile(CFG) for g in prog.gemms}
    assert steps["k10"] == 10 and steps["k13"] == 14 and steps["tail.tail"] == 8
    wrapped = [s for s in specs if s.drain.acc == wrap]
    assert any(np.abs(s.a @ s.b).max() >= 1 << 13 for s in wrapped)  # the wrap matters
    run = check(specs)
    assert run.cycles_match
    check(specs, src_valid=rng.random(64) < 0.5, sink_ready=rng.random(64) < 0.3)
