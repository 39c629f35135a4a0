"""The board's UART bridge: bytes in, accelerator, bytes out, bit-exact with the reference."""

import numpy as np
import pytest

from accel import reference
from accel.compiler.dataflow import lower
from accel.fixed import FixedType, Overflow, Quant, Rounding
from accel.flows.uart import UARTBridge
from accel.ir import Graph, Param
from accel.rtl.dataflow import DataflowAccelerator
from accel.sim.harness import pack_hex, unpack_hex

DIV = 4  # clock cycles per UART bit


def tiny_graph(n_in: int = 3) -> Graph:
    """Two outputs of ``n_in`` 8-bit inputs (3: the weights below; more: seeded)."""
    g = Graph("tiny")
    x = g.add_input("x", (n_in,), Quant(FixedType(8, 4), Rounding.RND, Overflow.SAT))
    w = np.array([[3, -7], [12, 5], [-16, 15]])
    if n_in != 3:
        w = np.random.default_rng(n_in).integers(-32, 32, (n_in, 2))
        w[0], w[1] = -32, 31  # the weights' edges
    w = Param(w, FixedType(6, 4))
    x = g.add("dense", x, params={"weight": w, "bias": Param(np.array([4, -9]), FixedType(6, 4))})
    x = g.add("relu", x)
    x = g.add("requantize", x, quant=Quant(FixedType(9, 4, False), Rounding.RND, Overflow.SAT))
    g.mark_output(x)
    return g


def uart_frames(data: bytes) -> list[int]:
    """Line levels, one per clock cycle, for 8N1 frames of ``data`` (plus idle gaps)."""
    levels = [1] * DIV * 3
    for byte in data:
        for bit in [0, *((byte >> i) & 1 for i in range(8)), 1]:
            levels += [bit] * DIV
    return levels + [1] * DIV * 40


@pytest.mark.parametrize(("n_in", "reuse"), [(3, 2), (20, 2), (40, 40)])
def test_bridge_round_trip(n_in, reuse):
    """20 inputs: 160 bits, a three-slice input queue whose slices' valids reach the
    layer's lanes one run each and whose slices read on the lanes' own copies of the
    layer's ready (``copies``, as the board builds it); 40 inputs at reuse 40: two
    lanes for five slices (the rest read on the layer's own ready)."""
    from amaranth.sim import Simulator

    g = tiny_graph(n_in)
    plan = lower(g, reuse)
    dut = UARTBridge(DataflowAccelerator(plan, copies=n_in > 3), DIV)
    x = np.array([[127, -128, 5], [0, 0, 0], [-100, 37, 90], [127, 127, 127]])
    if n_in != 3:
        x = np.random.default_rng(0).integers(-128, 128, (4, n_in))
        x[0], x[1] = 127, -128  # saturating, both ends
        assert len(dut.accelerator.i_valids) == -(-n_in * 8 // 64)
    words = pack_hex(x, 8)
    n_in = -(-plan.n_in * plan.in_type.width // 8)
    n_out_bytes = -(-plan.n_out * plan.out_type.width // 8)
    payload = b"".join(int(w, 16).to_bytes(n_in, "little") for w in words)
    line = uart_frames(payload) + [1] * DIV * 10 * n_out_bytes  # room for a result more
    tx_levels = []

    async def testbench(ctx):
        for level in line:
            ctx.set(dut.rx, level)
            await ctx.tick()
            tx_levels.append(ctx.get(dut.tx))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    got = decode(tx_levels)
    n_out = -(-plan.n_out * plan.out_type.width // 8)
    assert len(got) == len(x) * n_out
    out_words = [
        f"{int.from_bytes(got[i * n_out : (i + 1) * n_out], 'little'):x}" for i in range(len(x))
    ]
    y = unpack_hex(out_words, plan.out_type.width, plan.n_out, plan.out_type.signed)
    assert np.array_equal(y, reference.predict(g, x))


def decode(levels: list[int]) -> bytes:
    """A UART receiver in Python: find start bits, sample mid-bit."""
    out, i = [], 0
    while i < len(levels) - 10 * DIV:
        if levels[i] == 0:
            mid = i + DIV // 2
            bits = [levels[mid + DIV * (k + 1)] for k in range(8)]
            assert levels[mid + DIV * 9] == 1, "missing stop bit"
            out.append(sum(b << k for k, b in enumerate(bits)))
            i = mid + DIV * 9
        else:
            i += 1
    return bytes(out)


def test_board_builds_take_the_handshake_copies():
    """The design a board build wraps in the bridge (``Design.component``) brings out
    the copies of its handshake, so the bridge's queue slices feed the first layer's
    lanes one each (without them the conv layer's one ``ready`` reached every slice of
    the input queue across the die)."""
    from accel.targets.dataflow import DataflowConfig, DataflowDesign

    core = DataflowDesign(tiny_graph(20), DataflowConfig(reuse=2)).component()
    core._MustUse__silence = True  # inspected, not elaborated
    assert {"i_valids", "i_readys", "o_readys"} <= set(core.signature.members)
