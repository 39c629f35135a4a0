"""VEC instructions: the vector unit's ops as program steps, with their register sizing.

Each constructor takes the op's operand types (as the IR has them) and works
out what the hardware needs at run time: shifts, the exponent span of a
softmax sum, and how many iterations each row division and square root takes
(the bit widths :mod:`accel.intops` derives), so the unit's cycles are fixed
by the instruction (:func:`vec_cycles`, which ``accel.rtl.engine.vector`` implements).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from accel import intops
from accel.engine.config import EngineConfig
from accel.engine.isa import VecOp, VecOpcode, encode
from accel.engine.program import DrainSpec
from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant, Rounding

GELU_MAX_SIG = 12  # sig_bits the GELU lanes are built for


def vec_cycles(vop: VecOp, rows_blocks: int, length: int, f: dict) -> int:
    """Cycles the unit is busy for one instruction (``f``: its division and root counts).

    ``rows_blocks`` counts blocks of ``vec_rows`` rows: the unit's passes.
    """
    pass_ = length + 1
    per_block = {
        VecOp.ADD: pass_,
        VecOp.GELU: length * (f.get("sig_bits", 0) + 4),
        VecOp.SOFTMAX: 2 * pass_ + 1 + f.get("div_n", 0),
        VecOp.LAYERNORM: 3 * pass_ + 3 + f.get("mu_n", 0) + f.get("sqrt_n", 0) + f.get("div_n", 0),
    }[vop]
    return rows_blocks * per_block


@dataclass
class Vec:
    """One vector-unit instruction over ``row_blocks`` blocks of rows of ``length`` words.

    Row block ``i``'s words are read at ``a_base + i * a_stride`` (and, for ADD,
    ``b_base + i * a_stride``) and written at ``out_base + i * out_stride``.
    ``drain`` requantizes the op's exact result (its ``acc`` is the exact type).
    """

    name: str
    vop: VecOp
    row_blocks: int
    length: int
    count: int  # real values per row (the rest of the last word is padding)
    a_base: int
    a_stride: int
    out_base: int
    out_stride: int
    drain: DrainSpec
    b_base: int = 0
    bias_base: int = 0  # LAYERNORM: gamma words, then beta words
    fields: dict = field(default_factory=dict)  # op parameters (isa's VEC fields)

    def cycles(self, cfg: EngineConfig) -> int:
        """Cycles the unit is busy: a pass per ``vec_rows`` rows of each block."""
        passes = self.row_blocks * cfg.vec_passes
        return vec_cycles(self.vop, passes, self.length, self.fields)

    def encode(self, cfg: EngineConfig) -> int:
        return encode(
            cfg,
            op=VecOpcode.VEC,
            vop=self.vop,
            row_blocks=self.row_blocks,
            v_len=self.length,
            v_count=self.count,
            a_base=self.a_base,
            a_stride=self.a_stride,
            v_b=self.b_base,
            out_base=self.out_base,
            out_stride=self.out_stride,
            bias_base=self.bias_base,
            **self.fields,
            **self.drain.fields(cfg.acc_bits, self.name),
        )


def _frac(t: FixedType, what: str, hi: int = 24) -> int:
    if not 0 <= t.frac <= hi:
        raise AccelError(
            f"{what}: the vector unit takes inputs with 0..{hi} fraction bits, got {t}"
        )
    return t.frac


def add_fields(a: FixedType, b: FixedType) -> tuple[FixedType, dict]:
    """The exact sum's type and the alignment shifts."""
    out = intops.add_type(a, b)
    return out, {"sh_a": out.frac - a.frac, "sh_b": out.frac - b.frac}


def softmax_fields(x: FixedType, n: int, out: FixedType, what: str) -> tuple[FixedType, dict]:
    """Shiftmax over rows of ``n`` values of ``x`` into the unsigned type ``out``.

    The exact result is ``out``'s raw before saturation (below ``2**(B + 1)``),
    so the requantizer saturates it, as :func:`accel.intops.shiftmax` does.
    """
    f = _frac(x, what)
    span = intops.softmax_span(x.min_int, x.max_int, f)
    widths = intops.softmax_widths(n, f, span, out.frac)
    if widths["sum"] > 62:
        raise AccelError(f"{what}: the softmax sum needs {widths['sum']} bits, the unit has 62")
    if out.frac > 15:
        raise AccelError(f"{what}: softmax output with {out.frac} fraction bits, at most 15")
    exact = FixedType(out.frac + 3, out.frac)
    fields = {"x_frac": f, "span": span, "sm_bits": out.frac, "div_n": widths["dividend"]}
    return exact, fields


def gelu_fields(x: FixedType, sig_bits: int, what: str) -> tuple[FixedType, dict]:
    _frac(x, what)
    if not 1 <= sig_bits <= GELU_MAX_SIG:
        raise AccelError(
            f"{what}: the GELU lanes take 1..{GELU_MAX_SIG} sigmoid bits, got {sig_bits}"
        )
    return intops.gelu_out_type(x, sig_bits), {"x_frac": x.frac, "sig_bits": sig_bits}


def layernorm_fields(
    x: FixedType,
    c: int,
    gamma: FixedType,
    beta: FixedType | None,
    norm_frac: int,
    sqrt_guard: int,
    mean_frac: int,
) -> tuple[FixedType, dict]:
    """I-LayerNorm's shifts and the iteration counts of its mean, root and division."""
    w = intops.layernorm_widths(x, c, norm_frac, sqrt_guard, mean_frac)
    # |2**(m+1) sum + C| plus the 2C - 1 a floor of a negative quotient adds
    mag = ((c * max(-x.min_int, x.max_int)) << (mean_frac + 1)) + 3 * c
    out = intops.layernorm_out_type(c, norm_frac, gamma, beta)
    # the lanes' datapath widths (rtl.engine.vector): deviations, 1/sigma, n, beta
    limits = {
        "the deviation from the mean": (((x.max_int - x.min_int) << mean_frac).bit_length(), 26),
        "the reciprocal of sigma": (w["dividend"], 36),
        "the normalized value": (intops.norm_bound(c, norm_frac).bit_length(), 29),
    }
    if beta is not None:
        shift = norm_frac + gamma.frac - beta.frac
        limits["beta, aligned"] = (max(-beta.min_int, beta.max_int).bit_length() + shift, 60)
    for what, (bits, most) in limits.items():
        if bits > most:
            raise AccelError(
                f"layernorm over {c} values of {x}: {what} needs {bits} bits, the vector unit "
                f"has {most}; lower mean_frac, sqrt_guard or norm_frac"
            )
    fields = {
        "ln_m": mean_frac,
        "ln_g": sqrt_guard,
        "ln_p": norm_frac,
        "ln_w": x.width,
        "beta_shift": 0 if beta is None else norm_frac + gamma.frac - beta.frac,
        "mu_n": mag.bit_length(),
        "sqrt_n": (w["sqrt_in"] + 1) // 2,
        "div_n": w["dividend"],
    }
    return out, fields


def exact_drain(
    exact: FixedType, quant: Quant | None, saturate: FixedType | None = None
) -> DrainSpec:
    """The requantizer after an op: to ``quant``, or saturated into ``saturate``."""
    if saturate is not None:
        quant = Quant(saturate, Rounding.TRN, Overflow.SAT)
    return DrainSpec(exact, False, quant)
