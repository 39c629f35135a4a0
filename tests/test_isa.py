"""The engine's instructions: the compiler's plain-Python packing equals the controller's
Amaranth layout bit for bit, and a value too wide for its field is never cut."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.engine.config import EngineConfig
from accel.engine.isa import Opcode, _width, encode, fields, instruction_bits, instruction_layout

CONFIGS = [
    EngineConfig(rows=4, cols=8, group=8, a_depth=512, b_depth=4096, bias_depth=64),
    EngineConfig(rows=8, cols=8, group=8, bilinear_frac=4, a_depth=2048),
    EngineConfig(rows=8, cols=8, group=8, vector=True, b_depth=1024, imem_depth=512),
]


@st.composite
def instructions(draw):
    cfg = draw(st.sampled_from(CONFIGS))
    values = {}
    for name, f in fields(cfg).items():
        if not draw(st.booleans()):
            continue
        if isinstance(f, tuple):
            width, signed = f
            lo, hi = (
                (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
            )
            values[name] = draw(st.sampled_from([lo, hi, 0]) | st.integers(lo, hi))
        else:
            values[name] = draw(st.sampled_from(list(f)))
    values.setdefault("op", Opcode.GEMM)
    return cfg, values


@settings(max_examples=300, deadline=None)
@given(instructions())
def test_packing_equals_the_amaranth_layout(case):
    cfg, values = case
    layout = instruction_layout(cfg)
    assert layout.size == instruction_bits(cfg) == sum(_width(f) for f in fields(cfg).values())
    amaranth_values = {k: (int(v) if isinstance(v, int) else v) for k, v in values.items()}
    assert encode(cfg, **values) == layout.const(amaranth_values).as_bits()


def test_a_value_too_wide_is_refused():
    cfg = CONFIGS[0]
    width = fields(cfg)["kh"][0]
    with pytest.raises(AssertionError, match="does not fit"):
        encode(cfg, op=Opcode.GEMM, kh=1 << width)
    with pytest.raises(AssertionError, match="does not fit"):
        encode(cfg, op=Opcode.GEMM, origin=-(1 << 40))
