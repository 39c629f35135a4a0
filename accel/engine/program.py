"""Engine programs: GEMMs placed in the buffers, and the stream words that carry them.

A :class:`Program` is what the compiler emits and the engine runs: LOADs that
fill the buffers from the input stream and GEMMs that read them. It knows how
to lay its operands out as stream words (the buffers' bit layouts) and how to
put the output words back together into matrices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from accel import nm
from accel.engine.config import EngineConfig
from accel.engine.isa import Deform, Opcode, Rounding, Target, encode, word_width
from accel.errors import AccelError
from accel.fixed import FixedType, Overflow, Quant
from accel.fixed import Rounding as FixedRounding
from accel.hexio import pack_fields_hex, unpack_hex

ROUNDING = {
    FixedRounding.TRN: Rounding.TRN,
    FixedRounding.RND: Rounding.RND,
    FixedRounding.RND_CONV: Rounding.RND_CONV,
}


def ceil_to(x: int, m: int) -> int:
    return -(-x // m) * m


@dataclass(frozen=True)
class DrainSpec:
    """What happens to a finished accumulator on its way out (see ``isa``)."""

    acc: FixedType
    relu: bool = False
    quant: Quant | None = None
    clip: tuple[int, int] | None = None  # bounds inside the type's (the offset range)

    def fields(self, bits: int, what: str) -> dict:
        """The instruction fields that make the drain compute this conversion."""
        acc = self.acc
        if acc.width > bits:
            raise AccelError(f"{what}: accumulator needs {acc.width} bits, the engine has {bits}")
        out = self.quant.type if self.quant else acc
        if out.width > bits:
            raise AccelError(f"{what}: output needs {out.width} bits, the engine has {bits}")
        shift = acc.frac - out.frac
        if shift < 0:
            raise AccelError(f"{what}: requantize adds fraction bits, which the engine cannot")
        if shift > 63:
            raise AccelError(f"{what}: requantize drops {shift} fraction bits, at most 63")
        q = self.quant
        return {
            "acc_mask": (1 << acc.width) - 1,
            "acc_sign": 1 << (acc.width - 1) if acc.signed else 0,
            "relu": int(self.relu),
            "shift": shift,
            "rounding": ROUNDING[q.rounding] if q else Rounding.TRN,
            "rem_mask": (1 << shift) - 1,
            "half": (1 << shift) >> 1,
            "sat": int(q is not None and q.overflow is Overflow.SAT),
            "out_lo": out.min_int if self.clip is None else max(out.min_int, self.clip[0]),
            "out_hi": out.max_int if self.clip is None else min(out.max_int, self.clip[1]),
            "out_mask": (1 << out.width) - 1,
            "out_sign": 1 << (out.width - 1) if out.signed else 0,
        }


@dataclass
class Load:
    target: Target
    base: int
    words: list[str]  # hex, one per stream word


@dataclass(frozen=True)
class Geometry:
    """How a GEMM reads A: as NHWC images (a convolution) or as plain rows (1x1)."""

    in_h: int = 1
    in_w: int = 1
    channels: int = 8  # padded to a multiple of the group
    kh: int = 1
    kw: int = 1
    stride: int = 1
    pad_top: int = 0
    pad_left: int = 0
    out_h: int = 1
    out_w: int = 1
    depthwise: bool = False  # a column tile reads only its own channels
    deform: Deform = Deform.NONE  # taps placed by per-pixel offsets (needs depthwise)
    offset_words: int = 1  # offset-memory words per output pixel

    @classmethod
    def rows(cls, k: int) -> Geometry:
        """A dense layer: K features are one pixel of K channels."""
        return cls(channels=k)

    @property
    def positions(self) -> int:
        return self.out_h * self.out_w

    def fields(self, cfg: EngineConfig) -> dict:
        cb = self.channels // cfg.group
        row_words = self.in_w * cb
        tile_blocks = cfg.cols // cfg.group
        return {
            "cb_loop": tile_blocks if self.depthwise else cb,
            "chan_step": tile_blocks if self.depthwise else 0,
            "deform": self.deform,
            "offset_words": self.offset_words,
            "in_h": self.in_h,
            "in_w": self.in_w,
            "out_h": self.out_h,
            "out_w": self.out_w,
            "kh": self.kh,
            "kw": self.kw,
            "stride": self.stride,
            "pad_top": self.pad_top,
            "pad_left": self.pad_left,
            "cblocks": cb,
            "row_words": row_words,
            "step_x": self.stride * cb,
            "step_y": self.stride * row_words,
            "origin": -(self.pad_top * row_words + self.pad_left * cb),
        }


@dataclass(frozen=True)
class BWrite:
    """A GEMM's results as weight-buffer words: what attention's second operands need.

    Tile (row block ``rb``, column tile ``ct``) writes word ``base + ct * ct_step
    + rb * rb_step + i``: ``i`` its row (V: a row of keys' values is a row of
    B), or with ``transpose`` its column (K^T: a column of K is a row of B).
    """

    base: int
    ct_step: int
    rb_step: int
    transpose: bool

    def fields(self) -> dict:
        return {
            "to_b": 1,
            "b_transpose": int(self.transpose),
            "bw_base": self.base,
            "bw_ct": self.ct_step,
            "bw_rb": self.rb_step,
        }


@dataclass
class Gemm:
    """``C = drain(A @ B + bias)`` with A in the activation banks, B in the weight buffer.

    ``n`` kept weights per group of ``cfg.group`` (``dense``: all, indices implicit).
    ``rows`` are samples: padded to a multiple of the array's rows; each sample
    has ``geometry.positions`` output rows. Columns are padded to the array's.
    """

    name: str
    rows: int  # samples
    k: int  # padded reduction length (a multiple of the group)
    cols: int  # padded columns of B and C
    n: int
    dense: bool
    a_base: int
    b_base: int
    bias_base: int
    out_base: int
    to_stream: bool
    drain: DrainSpec
    useful_macs: int  # rows x kept weights (all of them when dense)
    geometry: Geometry = field(default_factory=Geometry)
    to_offsets: bool = False  # C fills the offset memories (one per row)
    # each word of ``group`` columns of C is summed into one result (``isa.Deform.OFFSETS``):
    # an offset conv's reduction split across the columns, its B 1:group sparse
    reduce: bool = False
    a_stride: int | None = None  # words between row blocks of A (default: a sample block's)
    out_stride: int | None = None  # words between row blocks of C (default: C's row)
    b_write: BWrite | None = None  # C goes to the weight buffer (vector engines)
    # a reducing GEMM whose results are the last columns of the streamed GEMM before it
    # (a layer's outputs past its last full column tile: ``accel.engine.graph.split_tail``)
    tail: bool = False

    def sample_blocks(self, cfg: EngineConfig) -> int:
        return -(-self.rows // cfg.rows)

    def row_blocks(self, cfg: EngineConfig) -> int:
        return self.sample_blocks(cfg) * self.geometry.positions

    def col_tiles(self, cfg: EngineConfig) -> int:
        return self.cols // cfg.cols

    def groups(self, cfg: EngineConfig) -> int:
        return self.k // cfg.group

    def tiles(self, cfg: EngineConfig) -> int:
        return self.row_blocks(cfg) * self.col_tiles(cfg)

    def steps_per_tile(self, cfg: EngineConfig) -> int:
        return self.groups(cfg) * self.n

    def sample_words(self, cfg: EngineConfig) -> int:
        """Words per bank of one sample block of the input."""
        g = self.geometry
        return g.in_h * g.in_w * g.channels // cfg.group

    def a_words(self, cfg: EngineConfig) -> int:
        """Words per bank of the input."""
        return self.sample_blocks(cfg) * self.sample_words(cfg)

    def out_words(self, cfg: EngineConfig) -> int:
        """Words per bank of the output (or stream words / rows, when streamed)."""
        return self.row_blocks(cfg) * self.cols // cfg.group

    def encode(self, cfg: EngineConfig) -> int:
        geometry = self.geometry.fields(cfg)
        if self.reduce:  # a split reduction (``isa.Deform.OFFSETS``)
            if not (self.to_offsets or self.to_stream) or self.geometry.deform != Deform.NONE:
                raise AssertionError(
                    f"{self.name}: a reducing GEMM writes the offset memories or the stream"
                )
            geometry["deform"] = Deform.OFFSETS
        return encode(
            cfg,
            op=Opcode.GEMM,
            a_base=self.a_base,
            a_stride=self.sample_words(cfg) if self.a_stride is None else self.a_stride,
            b_base=self.b_base,
            bias_base=self.bias_base,
            n=self.n,
            dense=int(self.dense),
            row_blocks=self.row_blocks(cfg),
            sample_blocks=self.sample_blocks(cfg),
            col_tiles=self.col_tiles(cfg),
            to_stream=int(self.to_stream),
            to_offsets=int(self.to_offsets),
            out_base=self.out_base,
            out_stride=self.cols // cfg.group if self.out_stride is None else self.out_stride,
            **({} if self.b_write is None else self.b_write.fields()),
            **geometry,
            **self.drain.fields(cfg.acc_bits, self.name),
        )


@dataclass(frozen=True)
class Repeat:
    """``steps[start : start + length]`` repeated ``times`` (all copies in ``steps``).

    Encoded once, followed by a LOOP instruction; the copies differ only in the
    data their LOADs take from the stream.
    """

    start: int
    length: int
    times: int


@dataclass
class Program:
    cfg: EngineConfig
    steps: list[Load | Gemm] = field(default_factory=list)
    repeat: Repeat | None = None

    @property
    def gemms(self) -> list[Gemm]:
        return [s for s in self.steps if isinstance(s, Gemm)]

    def _encode(self, s: Load | Gemm) -> int:
        if isinstance(s, Load):
            return encode(
                self.cfg, op=Opcode.LOAD, target=s.target, base=s.base, count=len(s.words)
            )
        return s.encode(self.cfg)

    def instructions(self) -> list[int]:
        """The instruction memory's contents: copies of a repeated body become a LOOP."""
        r = self.repeat
        if r is None or r.times < 2:
            out = [self._encode(s) for s in self.steps]
        else:
            body = self.steps[r.start : r.start + r.length]
            for k in range(1, r.times):
                copy = self.steps[r.start + k * r.length : r.start + (k + 1) * r.length]
                if [self._encode(s) for s in copy] != [self._encode(s) for s in body]:
                    raise AssertionError("the copies of a repeated body must encode the same")
            out = [self._encode(s) for s in self.steps[: r.start + r.length]]
            out.append(encode(self.cfg, op=Opcode.LOOP, base=r.start, count=r.times))
            out += [self._encode(s) for s in self.steps[r.start + r.times * r.length :]]
        out.append(encode(self.cfg, op=Opcode.HALT))
        if len(out) > self.cfg.imem_depth:
            raise AccelError(
                f"program has {len(out)} instructions, the engine holds {self.cfg.imem_depth}"
            )
        return out

    def words(self) -> list[str]:
        """The whole input stream: count, instructions, then the loads' data."""
        w = word_width(self.cfg)
        digits = -(-w // 4)
        ins = self.instructions()
        head = [format(len(ins), "x").rjust(digits, "0")]
        head += [format(v, "x").rjust(digits, "0") for v in ins]
        data = [x.rjust(digits, "0") for s in self.steps if isinstance(s, Load) for x in s.words]
        return head + data

    def n_out_words(self) -> int:
        return sum(g.out_words(self.cfg) * self.cfg.rows for g in self.gemms if g.to_stream)

    def split_outputs(self, lines: list[str]) -> list[np.ndarray]:
        """Output words -> one padded C per streamed GEMM, in program order.

        C has a row per sample: its positions' padded columns, position-major
        (NHWC when the GEMM is a convolution).
        """
        cfg = self.cfg
        vals = unpack_hex(lines, cfg.acc_bits, cfg.group, True) if lines else np.zeros((0, 0))
        return self.split_values(vals)

    def split_values(self, vals: np.ndarray) -> list[np.ndarray]:
        """:meth:`split_outputs` of the words' lane values, (words, ``group``): passing lane
        positions instead of values tells where each result leaves the engine.

        A reducing GEMM's result is lane 0 of each word; a tail's results are appended
        to the columns of the streamed GEMM before it (one C for both)."""
        cfg = self.cfg
        out: list[np.ndarray] = []
        at = 0
        for g in self.gemms:
            if not g.to_stream:
                continue
            sb, pos, ct = g.sample_blocks(cfg), g.geometry.positions, g.col_tiles(cfg)
            n = sb * pos * ct * cfg.rows * (cfg.cols // cfg.group)
            block = vals[at : at + n].reshape(ct, sb, pos, cfg.rows, cfg.cols)
            c = block.transpose(1, 3, 2, 0, 4).reshape(sb * cfg.rows, pos * ct * cfg.cols)
            at += n
            if g.reduce:
                c = c.reshape(len(c), -1, cfg.group)[:, :, 0]
            if g.tail:
                if pos != 1 or out[-1].shape[0] != len(c):
                    raise AssertionError(f"{g.name}: a tail continues a 1x1 GEMM's rows")
                c = np.concatenate([out.pop(), c], axis=1)
            out.append(c)
        return out


# -- operand layouts -------------------------------------------------------------
def a_words(cfg: EngineConfig, a: np.ndarray, k: int) -> list[str]:
    """Rows of A, padded to (row blocks x P, k), as bank-interleaved stream words."""
    r = ceil_to(len(a), cfg.rows)
    pad = np.zeros((r, k), np.int64)
    pad[: len(a), : a.shape[1]] = a
    g = k // cfg.group
    words = pad.reshape(r // cfg.rows, cfg.rows, g, cfg.group).transpose(0, 2, 1, 3)
    return pack_fields_hex([(words.reshape(-1, cfg.group), cfg.a_bits)])


def b_words(
    cfg: EngineConfig, b: np.ndarray, k: int, cols: int, n: int, dense: bool, what: str = "B"
) -> list[str]:
    """B (K x C), padded, as (value, index) words: column tile, group, kept weight."""
    pad = np.zeros((k, cols), np.int64)
    pad[: b.shape[0], : b.shape[1]] = b
    if dense:
        groups = k // cfg.group
        values = pad.reshape(groups, cfg.group, cols)
        index = np.broadcast_to(np.arange(cfg.group)[None, :, None], values.shape)
    else:
        c = nm.compress(pad, nm.NM(n, cfg.group), 0, what)
        values, index = c.values, c.index
    ct = cols // cfg.cols
    # (groups, n, ct, Q) -> (ct, groups, n, Q)
    v = values.reshape(values.shape[0], values.shape[1], ct, cfg.cols).transpose(2, 0, 1, 3)
    i = index.reshape(v.shape[1], v.shape[2], ct, cfg.cols).transpose(2, 0, 1, 3)
    return pack_fields_hex(
        [(v.reshape(-1, cfg.cols), cfg.b_bits), (i.reshape(-1, cfg.cols), cfg.idx_bits)]
    )


def bias_words(cfg: EngineConfig, bias: np.ndarray | None, cols: int) -> list[str]:
    pad = np.zeros(cols, np.int64)
    if bias is not None:
        pad[: len(bias)] = bias
    return pack_fields_hex([(pad.reshape(-1, cfg.cols), cfg.acc_bits)])
