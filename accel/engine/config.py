"""Engine parameters: array size, operand widths, buffer sizes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from accel.errors import AccelError


@dataclass(frozen=True)
class EngineConfig:
    """A ``rows`` x ``cols`` MAC array with group width ``group``.

    ``group`` is the hardware's M: every PE holds a ``group``-to-1 multiplexer,
    so a layer whose weights keep ``n`` of every ``group`` runs a group in ``n``
    cycles instead of ``group``. Any N:M pattern with M dividing ``group`` maps
    onto it at the same ratio (2:4 is 4:8), and a dense layer is ``group:group``.
    Operands are signed; unsigned 8-bit activations need ``a_bits`` of 9.
    """

    rows: int = 8
    cols: int = 8
    group: int = 8
    a_bits: int = 9
    b_bits: int = 9
    acc_bits: int = 32
    a_depth: int = 1024  # words of ``group`` activations, per bank (one bank per row)
    b_depth: int = 2048  # words of ``cols`` (weight, index) pairs
    bias_depth: int = 128  # words of ``cols`` biases
    imem_depth: int = 128  # instructions
    # the deformable sampler: square offsets 0..max_offset (one per output pixel), and
    # with ``bilinear_frac`` F > 0 also bilinear ones (two per tap, F fraction bits,
    # within +-max_offset pixels); each row stores its samples' offsets
    max_offset: int = 7
    bilinear_frac: int = 0
    offset_depth: int = 1024  # offset words (``group`` offsets) per row
    # the vector unit (softmax, GELU, LayerNorm, residual adds) and GEMMs that write the
    # weight buffer, for transformers; needs rows == cols == group
    vector: bool = False
    # rows the vector unit works on at once (0: all); fewer rows make a unit
    # ``rows / vec_rows`` times smaller and its instructions as many times longer
    vec_rows: int = 0

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
