"""Register copies that synthesis keeps apart.

A signal read across the part (an instruction field read by every lane of the
drain) is best copied into a register per reader, each placed beside its reader.
yosys merges flip-flops it infers when their inputs are the same (``opt_merge``),
so copies written as ``m.d.sync += copy.eq(value)`` come back as one register.
On ECP5 the copies here are ``TRELLIS_FF`` cells instantiated directly, which
yosys leaves alone; elsewhere (simulation) they are plain registers. Either way
the copy is ``value`` one cycle late.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Instance, Module, Signal, Value


def kept_copy(m: Module, value: Value, name: str, platform) -> Signal:
    """``value`` registered (no reset), in a register of its own on ECP5."""
    value = Value.cast(value)
    out = Signal(value.shape(), name=name, reset_less=True)
    if getattr(platform, "family", None) != "ecp5":
        m.d.sync += out.eq(value)
        return out
    for i in range(len(value)):
        m.submodules[f"{name}_ff{i}"] = Instance(
            "TRELLIS_FF",
            p_GSR="DISABLED",
            p_CEMUX="1",
            p_CLKMUX="CLK",
            p_LSRMUX="LSR",
            p_REGSET="RESET",
            p_SRMODE="LSR_OVER_CE",
            i_CLK=ClockSignal(),
            i_LSR=0,
            i_DI=value[i],
            o_Q=out[i],
        )
    return out
