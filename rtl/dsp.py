"""A multiplier with its operand and product registers, inside the DSP block on ECP5.

yosys maps ``*`` onto ECP5's MULT18X18D but leaves the registers around it in the
fabric, so the multiplier's own 3-4 ns sit between two fabric routes in one cycle
(the dataflow layers' critical path: an operand register -> the DSP block -> the
product register, up to 13 ns of routing in 17). The block has registers of its
own on its inputs and its output; with them, each route into and out of the
block gets a cycle to itself.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Instance, Module, Signal, Value

# MULT18X18D operands: 18 bits, signed (an unsigned operand needs a zero sign bit)
DSP_BITS = 18


# The MULT18X18D sites of the ECP5 85k die (LFE5U-85F, LFE5UM-85F, LFE5UM5G-85F), named
# as nextpnr names them: three rows (y 10, 34 and 58) of 13 blocks of four across the
# die. Read from nextpnr-ecp5 0.11.1's placement of 156 multipliers (all of them).
_DSP_ROWS_85K = (10, 34, 58)
_DSP_BLOCKS_85K = (4, 13, 22, 31, 40, 49, 58, 69, 78, 87, 96, 105, 114)
_DSP_IN_BLOCK = ((0, 0), (1, 1), (4, 4), (5, 5))  # (x offset, MULT18_z)


def dsp_sites(platform) -> list[list[str]] | None:
    """The part's multiplier sites, per row of DSP blocks, left to right; None when the
    platform is not an ECP5 part whose sites are known (only the 85k die's are)."""
    device = str(getattr(platform, "device", ""))
    if getattr(platform, "family", None) != "ecp5" or not device.endswith("85F"):
        return None
    return [
        [f"X{x + dx}/Y{y}/MULT18_{z}" for x in _DSP_BLOCKS_85K for dx, z in _DSP_IN_BLOCK]
        for y in _DSP_ROWS_85K
    ]


def _signed_bits(v: Value) -> int:
    return len(v) + (0 if v.shape().signed else 1)


def registered_product(
    m: Module, a: Value, b: Value, name: str, platform, site: str | None = None
) -> Value:
    """``a * b`` two clock edges later: operands registered, then the product.

    On an ECP5 part (``platform.family == "ecp5"``), when both operands fit 18 signed
    bits, one MULT18X18D with its A, B and P registers on the sync clock (CE tied
    high, never reset: data registers); otherwise fabric registers around ``*``,
    which is also what simulation runs. Both give the same value at the same cycle.
    ``site`` (one of :func:`dsp_sites`) places the block there (nextpnr's ``BEL``).
    """
    a, b = Value.cast(a), Value.cast(b)
    shape = (a * b).shape()
    out = Signal(shape, name=name)
    ecp5 = getattr(platform, "family", None) == "ecp5"
    if not ecp5 or max(_signed_bits(a), _signed_bits(b)) > DSP_BITS:
        ra = Signal(a.shape(), name=f"{name}_a", reset_less=True)
        rb = Signal(b.shape(), name=f"{name}_b", reset_less=True)
        p = Signal(shape, name=f"{name}_p", reset_less=True)
        m.d.sync += [ra.eq(a), rb.eq(b), p.eq(ra * rb)]
        m.d.comb += out.eq(p)
        return out
    ax, bx = Signal(DSP_BITS, name=f"{name}_A"), Signal(DSP_BITS, name=f"{name}_B")
    m.d.comb += [ax.eq(a), bx.eq(b)]  # sign- or zero-extended to 18 bits by .eq
    p = Signal(2 * DSP_BITS, name=f"{name}_P")
    ports = {f"i_A{i}": ax[i] for i in range(DSP_BITS)}
    ports |= {f"i_B{i}": bx[i] for i in range(DSP_BITS)}
    # C feeds only the ALU block beside the multiplier: left unconnected, not tied off
    ports |= {f"o_P{i}": p[i] for i in range(2 * DSP_BITS)}
    m.submodules[f"{name}_dsp"] = Instance(
        "MULT18X18D",
        **({"a_BEL": site} if site else {}),
        p_REG_INPUTA_CLK="CLK0",
        p_REG_INPUTB_CLK="CLK0",
        p_REG_OUTPUT_CLK="CLK0",
        i_SIGNEDA=1,
        i_SIGNEDB=1,
        i_SOURCEA=0,
        i_SOURCEB=0,
        i_CLK0=ClockSignal(),
        i_CE0=1,
        i_RST0=0,
        **ports,
    )
    assert len(out) <= 2 * DSP_BITS
    m.d.comb += out.eq(p[: len(out)])
    return out
