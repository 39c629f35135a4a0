"""Engine parameters: array size, operand widths, buffer sizes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from accel.errors import AccelError
from accel.knobs import knob


@dataclass(frozen=True)
class EngineConfig:
    """A ``rows`` x ``cols`` MAC array with group width ``group``.

    ``group`` is the hardware's M: every PE holds a ``group``-to-1 multiplexer,
    so a layer whose weights keep ``n`` of every ``group`` runs a group in ``n``
    cycles instead of ``group``. Any N:M pattern with M dividing ``group`` maps
    onto it at the same ratio (2:4 is 4:8), and a dense layer is ``group:group``.
    Operands are signed; unsigned 8-bit activations need ``a_bits`` of 9.
    """

    rows: int = knob(8, "engine array rows (PEs per column)", lo=1, hi=64)
    cols: int = knob(8, "engine array columns", lo=1, hi=256)
    group: int = knob(8, "N:M group width M of the PEs' multiplexers", lo=1, hi=64)
    a_bits: int = knob(9, "activation operand bits (signed)", lo=2, hi=32)
    b_bits: int = knob(9, "weight operand bits (signed)", lo=2, hi=32)
    acc_bits: int = knob(32, "accumulator bits", lo=8, hi=62)
    # words of ``group`` activations, per bank (one bank per row)
    a_depth: int = knob(
        512, "engine activation bank depth in words", lo=16, hi=1 << 16, flag="--bank-words"
    )
    # words of ``cols`` (weight, index) pairs
    b_depth: int = knob(4096, "engine weight buffer depth in words", lo=16, hi=1 << 16)
    bias_depth: int = knob(128, "engine bias buffer depth in words", lo=1, hi=1 << 16)
    imem_depth: int = knob(128, "engine instruction memory depth", lo=8, hi=1 << 14)
    # the deformable sampler: square offsets 0..max_offset (one per output pixel), and
    # with ``bilinear_frac`` F > 0 also bilinear ones (two per tap, F fraction bits,
    # within +-max_offset pixels); each row stores its samples' offsets
    max_offset: int = knob(7, "largest deformable offset the sampler takes", lo=0, hi=15)
    bilinear_frac: int = knob(0, "fraction bits of the bilinear sampler (0: none)", lo=0, hi=6)
    offset_depth: int = knob(1024, "offset words per row (deformable)", lo=16, hi=1 << 16)
    # the vector unit (softmax, GELU, LayerNorm, residual adds) and GEMMs that write the
    # weight buffer, for transformers; needs rows == cols == group (set by the target
    # when the graph needs it)
    vector: bool = False
    # rows the vector unit works on at once (0: all); fewer rows make a unit
    # ``rows / vec_rows`` times smaller and its instructions as many times longer
    vec_rows: int = knob(
        0, "rows the vector unit works on at once (0: all; 1 is 8x smaller, 8x slower)",
        lo=0, hi=64,
    )  # fmt: skip

    def __post_init__(self) -> None:
        for name in ("rows", "cols", "group", "a_bits", "b_bits", "acc_bits"):
            if getattr(self, name) < 1:
                raise AccelError(f"engine {name} must be positive")
        if self.cols % self.group:
            raise AccelError(
                f"engine cols ({self.cols}) must be a multiple of the group ({self.group})"
            )
        if not 0 <= self.max_offset <= 15:
            raise AccelError(f"engine max_offset must be 0..15, got {self.max_offset}")
        if not 0 <= self.bilinear_frac <= 6:
            raise AccelError(f"engine bilinear_frac must be 0..6, got {self.bilinear_frac}")
        if self.vector and not self.rows == self.cols == self.group:
            raise AccelError(
                f"an engine with a vector unit needs rows == cols == group, got "
                f"{self.rows}x{self.cols} with group {self.group}"
            )
        if self.vec_rows and not (self.vector and 0 < self.vec_rows <= self.rows
                                  and self.rows % self.vec_rows == 0):  # fmt: skip
            raise AccelError(
                f"engine vec_rows ({self.vec_rows}) must divide the rows ({self.rows}) of an "
                "engine with a vector unit"
            )
        if self.acc_bits > 62:
            raise AccelError("engine accumulators are limited to 62 bits")

    @classmethod
    def array(cls, text: str, **kw) -> EngineConfig:
        """A configuration from an array size written ``PxQ`` (``8x8``), other fields ``kw``."""
        try:
            rows, cols = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise AccelError(f"an array size must look like 8x8, got {text!r}") from None
        return cls(rows=rows, cols=cols, **kw)

    @property
    def idx_bits(self) -> int:
        return max(1, (self.group - 1).bit_length())

    @property
    def offset_bits(self) -> int:
        """Bits of a stored offset: unsigned d, or a signed bilinear offset."""
        square = max(1, self.max_offset.bit_length())
        if not self.bilinear_frac:
            return square
        return max(square, (self.max_offset << self.bilinear_frac).bit_length() + 1)

    @property
    def pe_a_bits(self) -> int:
        """Activation width at the PEs: bilinear samples arrive scaled by a corner
        weight of up to ``2 ** (2F)``."""
        return self.a_bits + (2 * self.bilinear_frac + 1 if self.bilinear_frac else 0)

    @property
    def vec_lanes_rows(self) -> int:
        """Rows the vector unit has lanes for."""
        return self.vec_rows or self.rows

    @property
    def vec_passes(self) -> int:
        """Times the vector unit runs an instruction's work per block of ``rows`` rows."""
        return self.rows // self.vec_lanes_rows

    @property
    def macs(self) -> int:
        return self.rows * self.cols

    def to_json(self) -> dict:
        return asdict(self)
