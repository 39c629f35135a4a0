"""The engine's instruction set: one flat record per instruction.

:func:`fields` lists every field in order, low bits first, as a width and
signedness or an enum; the compiler packs instructions from it in plain
Python (:func:`encode`), and the controller decodes the very same fields
through :func:`instruction_layout`, the Amaranth ``StructLayout`` built from
it (Amaranth casts these int-valued enums to their bit width). The compiler
side imports no Amaranth. A program is streamed in ahead of its data: first a
word holding the instruction count, then the instructions, then whatever the
program's LOADs consume.
"""

from __future__ import annotations

import enum
from typing import Any

from accel.engine.config import EngineConfig
from accel.errors import AccelError


def unsigned(width: int) -> tuple[int, bool]:
    return (width, False)


def signed(width: int) -> tuple[int, bool]:
    return (width, True)


class Opcode(enum.IntEnum):
    HALT = 0
    LOAD = 1  # copy ``count`` stream words into a buffer
    GEMM = 2  # run a grid of output tiles
    LOOP = 3  # back to ``base`` until the body has run ``count`` times in all


class VecOpcode(enum.IntEnum):
    """The opcodes of engines with a vector unit: one more bit, for VEC."""

    HALT = 0
    LOAD = 1
    GEMM = 2
    LOOP = 3
    VEC = 4  # a row-wise integer op of the vector unit


def opcodes(cfg: EngineConfig) -> type[enum.IntEnum]:
    return VecOpcode if cfg.vector else Opcode


class VecOp(enum.IntEnum):
    """The vector unit's ops (``accel.intops`` defines each, ``rtl.engine.vector`` runs it)."""

    ADD = 0  # (a << sh_a) + (b << sh_b)
    GELU = 1  # ShiftGELU
    SOFTMAX = 2  # Shiftmax along the row
    LAYERNORM = 3  # I-LayerNorm along the row, gamma and beta from the bias buffer


class Target(enum.IntEnum):
    A = 0  # activation banks: word i goes to bank i % rows, address base + i // rows
    B = 1  # weight words: address base + i
    BIAS = 2  # bias words: address base + i


class Deform(enum.IntEnum):
    """A GEMM's part in a deformable convolution."""

    NONE = 0
    SQUARE = 1  # one integer offset per pixel spreads the 3x3 taps (CoDeNet)
    BILINEAR = 2  # two offsets per tap, four corners each
    # the offset conv with its reduction split across the columns (with to_offsets): the
    # drain sums each word of ``group`` columns into one offset; offset i of a row block
    # goes to lane i % group of the pixel's offset word i // group. Its taps are plain.
    OFFSETS = 3


class Rounding(enum.IntEnum):
    TRN = 0
    RND = 1
    RND_CONV = 2


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


def _vector_fields(cfg: EngineConfig) -> dict:
    """Fields of engines with a vector unit: its ops, and GEMMs that write the weight buffer."""
    if not cfg.vector:
        return {}
    a, b = _bits(cfg.a_depth), _bits(cfg.b_depth + 1)
    return {
        # GEMM: results go to the weight buffer (attention's K^T and V), at
        # bw_base + column tile * bw_ct + row block * bw_rb + (row, or column if transposed)
        "to_b": unsigned(1),
        "b_transpose": unsigned(1),
        "bw_base": unsigned(b),
        "bw_ct": unsigned(b),
        "bw_rb": unsigned(b),
        # VEC: rows of ``v_len`` words (``v_count`` real values) at a_base (and v_b) +
        # row block * a_stride, written to out_base + row block * out_stride
        "vop": VecOp,
        "v_len": unsigned(a),
        "v_count": unsigned(a + 3),
        "v_b": unsigned(a),
        "sh_a": unsigned(5),
        "sh_b": unsigned(5),
        "x_frac": unsigned(5),  # softmax, GELU: input fraction bits
        "span": unsigned(6),  # softmax: exponent span D of the sum
        "sm_bits": unsigned(5),  # softmax: output fraction bits B
        "sig_bits": unsigned(4),  # GELU: the sigmoid's fraction bits
        "ln_m": unsigned(5),  # layernorm: mean_frac, sqrt_guard, norm_frac, input width
        "ln_g": unsigned(5),
        "ln_p": unsigned(5),
        "ln_w": unsigned(6),
        "beta_shift": unsigned(6),
        "div_n": unsigned(7),  # iterations (quotient bits) of the row's division
        "mu_n": unsigned(7),  # ... of the layernorm mean's division
        "sqrt_n": unsigned(6),  # ... of the layernorm square root
    }


Field = tuple[int, bool] | type[enum.IntEnum]


def fields(cfg: EngineConfig) -> dict[str, Field]:
    """All fields of all opcodes, low bits first; an opcode ignores the ones it does not
    use. A field is (width, signed) or an enum (as wide as its largest value)."""
    a, b, c = _bits(cfg.a_depth), _bits(cfg.b_depth + 1), _bits(cfg.bias_depth)
    return dict(
        {
            "op": opcodes(cfg),
            "target": Target,
            "count": unsigned(24),  # LOAD: words; LOOP: iterations
            "base": unsigned(max(a, b, c, _bits(cfg.imem_depth))),  # LOAD: address; LOOP: pc
            # GEMM: C[rb*P + p, ct*Q + q] = sum_k A[.., k] * B[k, ..] over tiles (ct, rb);
            # a convolution reads A as NHWC pixels (see rtl.engine.address), a dense
            # layer is a 1x1 convolution of a 1x1 image
            "a_base": unsigned(a),
            "a_stride": unsigned(a),  # words per sample block
            "b_base": unsigned(b),
            "bias_base": unsigned(c),
            "n": unsigned(_bits(cfg.group + 1)),  # kept weights per group (group when dense)
            "dense": unsigned(1),  # indices are 0..group-1, not read from B
            "row_blocks": unsigned(a),  # sample blocks x out_h x out_w
            "col_tiles": unsigned(b),
            "sample_blocks": unsigned(a),
            "in_h": unsigned(a),
            "in_w": unsigned(a),
            "out_h": unsigned(a),
            "out_w": unsigned(a),
            "kh": unsigned(4),
            "kw": unsigned(4),
            "stride": unsigned(4),
            "pad_top": unsigned(4),
            "pad_left": unsigned(4),
            "cblocks": unsigned(b),  # channel blocks of ``group`` channels per pixel
            "cb_loop": unsigned(b),  # channel blocks a tile reads per tap (cblocks, or
            # cols / group for a depthwise conv, whose column tile reads only its own)
            "chan_step": unsigned(b),  # depthwise: channel blocks between column tiles
            "deform": Deform,  # taps placed by each row's offsets (rtl.engine.address)
            "offset_words": unsigned(4),  # offset-memory words per output pixel
            "to_offsets": unsigned(1),  # results go to the offset memories (see Deform)
            "row_words": unsigned(a + 1),  # in_w * cblocks
            "step_x": unsigned(a + 1),  # stride * cblocks
            "step_y": unsigned(a + 1),  # stride * row_words
            "origin": signed(a + 8),  # -(pad_top * row_words + pad_left * cblocks)
            "to_stream": unsigned(1),  # results leave on the output stream, not into A
            "out_base": unsigned(a),
            "out_stride": unsigned(a),
            # drain: v = wrap(acc + bias) to the accumulator; relu; round >> shift; sat or wrap.
            # Masks and bounds come precomputed, so the drain needs no wide shifters.
            "acc_mask": unsigned(cfg.acc_bits),
            "acc_sign": unsigned(cfg.acc_bits),  # the accumulator's sign bit (0: unsigned)
            "relu": unsigned(1),
            "shift": unsigned(6),
            "rounding": Rounding,
            "rem_mask": unsigned(cfg.acc_bits),  # the bits rounding drops
            "half": unsigned(cfg.acc_bits),  # half an output LSB (0 when shift is 0)
            "sat": unsigned(1),
            "out_lo": signed(cfg.acc_bits + 1),
            "out_hi": signed(cfg.acc_bits + 1),
            "out_mask": unsigned(cfg.acc_bits),
            "out_sign": unsigned(cfg.acc_bits),
            **_vector_fields(cfg),
        }
    )


def _width(f: Field) -> int:
    return f[0] if isinstance(f, tuple) else max(int(v) for v in f).bit_length()


def instruction_bits(cfg: EngineConfig) -> int:
    return sum(_width(f) for f in fields(cfg).values())


def instruction_layout(cfg: EngineConfig) -> Any:
    """The Amaranth ``StructLayout`` of :func:`fields`, for the controller's decoder."""
    from amaranth.hdl import signed as a_signed
    from amaranth.hdl import unsigned as a_unsigned
    from amaranth.lib import data

    def shape(f: Field):
        if not isinstance(f, tuple):
            return f
        return (a_signed if f[1] else a_unsigned)(f[0])

    return data.StructLayout({name: shape(f) for name, f in fields(cfg).items()})


def word_width(cfg: EngineConfig) -> int:
    """Input stream word: wide enough for an instruction and every buffer word."""
    return max(
        instruction_bits(cfg),
        cfg.group * cfg.a_bits,
        cfg.cols * (cfg.b_bits + cfg.idx_bits),
        cfg.cols * cfg.acc_bits,
        24,
    )


def encode(cfg: EngineConfig, **values) -> int:
    """One instruction as an integer (unset fields are zero); a value that does not fit
    its field is an internal error, never silently cut."""
    op = values.get("op", Opcode.HALT).name
    if op not in opcodes(cfg).__members__:
        raise AccelError(f"a {op} instruction needs an engine built with the vector unit")
    values["op"] = opcodes(cfg)[op]
    layout = fields(cfg)
    unknown = set(values) - set(layout)
    if unknown:
        raise AssertionError(f"unknown instruction fields: {', '.join(sorted(unknown))}")
    word, at = 0, 0
    for name, f in layout.items():
        width = _width(f)
        v = int(values.get(name, 0))
        is_signed = isinstance(f, tuple) and f[1]
        lo, hi = (-(1 << (width - 1)), 1 << (width - 1)) if is_signed else (0, 1 << width)
        if not lo <= v < hi:
            raise AssertionError(f"instruction field {name}: {v} does not fit {width} bits")
        word |= (v & ((1 << width) - 1)) << at
        at += width
    return word
