"""The engine: buffers, a small controller and the MAC array, between two streams."""

from __future__ import annotations

import functools
import itertools

from amaranth.back import verilog
from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from accel.engine.config import EngineConfig
from accel.engine.isa import Target, instruction_layout, opcodes, word_width
from accel.rtl.engine.address import AddressGenerator, Sampler, offset_word
from accel.rtl.engine.drain import Drain, out_word
from accel.rtl.engine.mac_array import MacArray, skewed
from accel.rtl.engine.vector import VectorUnit


def b_entry(cfg: EngineConfig) -> data.StructLayout:
    return data.StructLayout(
        {
            "w": data.ArrayLayout(cfg.b_bits, cfg.cols),
            "idx": data.ArrayLayout(cfg.idx_bits, cfg.cols),
        }
    )


class Engine(wiring.Component):
    """Runs the program streamed into ``i``; results leave on ``o``.

    ``i`` carries the instruction count, the instructions, then the words the
    program's LOADs take; ``o`` carries the words of GEMMs that write to the
    stream. Buffers: one activation bank per array row (``group`` values per
    word), a weight buffer (``cols`` value/index pairs per word), a bias buffer
    and the instruction memory.

    Each cycle issues one step: one group of activations per row and one
    kept weight per column, so a tile takes ``groups * n`` cycles.

    Each row also has an offset memory for deformable convolutions: an offset
    GEMM's drain fills it; the deformable GEMM reads the step's offset word in
    the issue stage, and the sampler stage turns it into the row's own bank
    address, padding flag and (bilinear) corner weight.

    GEMM pipeline: issue -> offset read -> sampler (3 registers) -> buffer read ->
    the array's 5 registers (input, crossbar, the DSP block's operand and product
    registers, the fabric's product) -> accumulate -> drain (read-out, bias,
    requantizer: 7 registers).
    Every memory output and product is registered before logic uses it further.
    """

    def __init__(self, cfg: EngineConfig) -> None:
        self.cfg = cfg
        super().__init__(
            {
                "i": In(stream.Signature(unsigned(word_width(cfg)))),
                "o": Out(stream.Signature(out_word(cfg))),
                "halted": Out(1),
            }
        )

    @property
    def target_mhz(self) -> float:
        """The clock the engine is built for; the board flow's PLL runs it at this."""
        return 75.0 if self.cfg.vector else 100.0

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        ilayout = instruction_layout(cfg)
        a_word = data.ArrayLayout(cfg.a_bits, cfg.group)
        bias_word = data.ArrayLayout(cfg.acc_bits, cfg.cols)

        m.submodules.imem = imem = Memory(shape=ilayout, depth=cfg.imem_depth, init=[])
        m.submodules.bmem = bmem = Memory(shape=b_entry(cfg), depth=cfg.b_depth, init=[])
        m.submodules.cmem = cmem = Memory(shape=bias_word, depth=cfg.bias_depth, init=[])
        banks = []
        for r in range(cfg.rows):
            mem = Memory(shape=a_word, depth=cfg.a_depth, init=[])
            m.submodules[f"abank{r}"] = mem
            banks.append(mem)
        dmems = []
        for r in range(cfg.rows):
            mem = Memory(shape=offset_word(cfg), depth=cfg.offset_depth, init=[])
            m.submodules[f"dmem{r}"] = mem
            dmems.append(mem)
        i_rd, i_wr = imem.read_port(), imem.write_port()
        b_rd, b_wr = bmem.read_port(), bmem.write_port()
        c_rd, c_wr = cmem.read_port(), cmem.write_port()
        a_rd = [b.read_port() for b in banks]
        a_wr = [b.write_port() for b in banks]

        m.submodules.array = array = MacArray(cfg)
        m.submodules.drain = drain = Drain(cfg)
        wiring.connect(m, drain.o, wiring.flipped(self.o))

        instr = Signal(ilayout)
        m.d.comb += drain.instr.eq(instr)
        m.d.comb += [
            drain.offer.eq(array.finishing),
            array.select.eq(drain.select),
            drain.word.eq(array.word),
        ]

        # -- load path: stream words into a buffer --------------------------------
        count = Signal(24)
        pc = Signal(range(cfg.imem_depth + 1))
        n_instr = Signal(range(cfg.imem_depth + 1))
        l_bank = Signal(range(max(cfg.rows, 2)))
        l_addr = Signal(unsigned(len(instr.base)))
        word = self.i.payload
        m.d.comb += [
            i_wr.data.eq(word[: ilayout.size]),
            i_wr.addr.eq(count),
            b_wr.data.eq(word[: b_entry(cfg).size]),
            b_wr.addr.eq(l_addr),
            c_wr.data.eq(word[: bias_word.size]),
            c_wr.addr.eq(l_addr),
        ]
        for r, port in enumerate(a_wr):
            m.d.comb += [
                port.addr.eq(drain.waddr),
                port.data.eq(drain.wdata),
                port.en.eq(drain.we[r]),
            ]

        # -- issue stage ------------------------------------------------------------
        m.submodules.agen = agen = AddressGenerator(cfg)
        issue = Signal()
        decoding = Signal()
        # Nothing behind the issue stage stalls: a tile's last step is issued only
        # when the drain will have emptied the tile before it (tiles' last steps at
        # least a tile's words apart: ``wait``) and, for the stream, when the drain's
        # queue has room for the tile's words (reserved here).
        tile_words = cfg.rows * (cfg.cols // cfg.group)
        wait = Signal(range(tile_words))
        ready = Signal()  # the current step may issue
        fire = Signal()
        m.d.comb += [
            ready.eq(~agen.step.last | ((wait == 0) & (~instr.to_stream | drain.room))),
            fire.eq(issue & ready),
            drain.reserve.eq(fire & agen.step.last & instr.to_stream),
        ]
        with m.If(fire & agen.step.last):
            m.d.sync += wait.eq(tile_words - 1)
        with m.Elif(wait != 0):
            m.d.sync += wait.eq(wait - 1)
        # the generator loads its loops while the instruction is decoded
        m.d.comb += [
            agen.instr.eq(Mux(decoding, i_rd.data, instr)),
            agen.init.eq(decoding),
            agen.advance.eq(fire),
        ]
        # stage S: the step, and each row's offset word read in the issue stage
        valid_s = Signal()
        step = Signal.like(agen.step)
        m.d.sync += [valid_s.eq(fire), step.eq(agen.step)]
        m.submodules.sampler = sampler = Sampler(cfg)
        m.d.comb += [
            sampler.instr.eq(instr),
            sampler.step.eq(step),
            sampler.valid.eq(valid_s),
        ]
        step_o = sampler.step_o  # the step, beside its bank addresses
        # a reducing offset GEMM writes one lane of a word at a time, its result coming in
        # lane 0: bilinear offsets (up to 18 a pixel) need lane enables; a square offset
        # is lane 0 of its word, written whole (its other results, padding, are not)
        lanes = 1 if cfg.bilinear_frac else None
        for r, mem in enumerate(dmems):
            rd, wr = mem.read_port(), mem.write_port(granularity=lanes)
            m.d.comb += [
                rd.addr.eq(agen.o_addr),
                sampler.offsets[r].eq(rd.data),
                wr.addr.eq(drain.waddr),
                wr.en.eq(
                    drain.owe[r].replicate(len(wr.en)) & (drain.olane if lanes else drain.olane[0])
                ),
            ]
            for e in range(cfg.group):
                x = drain.o.payload[e]
                if lanes:
                    x = Mux(drain.reducing, drain.o.payload[0], x)
                m.d.comb += wr.data[e].eq(x[: cfg.offset_bits])
        if cfg.vector:
            vec_on = Signal()  # the vector unit owns the banks' ports
            m.submodules.vec = vec = VectorUnit(cfg)
            m.d.comb += vec.instr.eq(instr)
            g_rd, e_rd = c_rd, cmem.read_port()
            for r, mem in enumerate(banks):
                b2 = mem.read_port()
                m.d.comb += [
                    b2.addr.eq(vec.b_addr),
                    vec.a_data[r].eq(a_rd[r].data),
                    vec.b_data[r].eq(b2.data),
                ]
                with m.If(vec.we[r]):
                    m.d.comb += [
                        a_wr[r].addr.eq(vec.waddr),
                        a_wr[r].data.eq(vec.wdata[r]),
                        a_wr[r].en.eq(1),
                    ]
            m.d.comb += [
                e_rd.addr.eq(vec.e_addr),
                vec.g_data.eq(g_rd.data),
                vec.e_data.eq(e_rd.data),
            ]
            # GEMM results into the weight buffer: a row of the tile, or a column (K^T)
            with m.If(drain.bwe):
                m.d.comb += [b_wr.addr.eq(drain.baddr), b_wr.en.eq(1)]
                for q in range(cfg.cols):
                    m.d.comb += [b_wr.data.w[q].eq(drain.o.payload[q]), b_wr.data.idx[q].eq(0)]
            m.d.comb += array.tselect.eq(drain.select[0])  # lane 0's copy is uncoded
            with m.If(instr.b_transpose):
                m.d.comb += drain.word.eq(array.tword)
        # systolic rows (``mac_array.skewed``): row r reads its bank r cycles after row 0
        row_addr, row_zero, row_weight = [], [], []
        for r in range(cfg.rows):
            addr, zero, weight = sampler.a_addr[r], sampler.a_zero[r], sampler.weight[r]
            for k in range(r if skewed(cfg) else 0):
                late = (
                    Signal.like(addr, name=f"a_addr{r}_{k}", reset_less=True),
                    Signal(name=f"a_zero{r}_{k}", reset_less=True),
                    Signal.like(weight, name=f"weight{r}_{k}", reset_less=True),
                )
                m.d.sync += [late[0].eq(addr), late[1].eq(zero), late[2].eq(weight)]
                addr, zero, weight = late
            row_addr.append(addr)
            row_zero.append(zero)
            row_weight.append(weight)
        for r, port in enumerate(a_rd):
            m.d.comb += [
                port.addr.eq(Mux(vec_on, vec.a_addr, row_addr[r]) if cfg.vector
                             else row_addr[r]),
            ]  # fmt: skip
        m.d.comb += [
            b_rd.addr.eq(step_o.b_addr),
            c_rd.addr.eq(Mux(vec_on, vec.g_addr, step_o.c_addr) if cfg.vector else step_o.c_addr),
        ]
        # stage 1: buffer outputs, with the step's flags
        valid1, first1, last1 = Signal(), Signal(), Signal()
        zero1 = Signal(cfg.rows)
        weight1 = Signal.like(sampler.weight)
        j1 = Signal.like(step.j)
        # each step's biases, beside it through the array's input and product registers,
        # so the finishing tile's are there when the drain takes its sums
        biases = [c_rd.data]
        for k in range(MacArray.LATENCY):
            biases.append(Signal(bias_word, name=f"bias_{k}", reset_less=True))
        bias2 = biases[-1]
        m.d.sync += [
            valid1.eq(sampler.valid_o),
            first1.eq(step_o.first),
            last1.eq(step_o.last),
            j1.eq(step_o.j),
        ]
        m.d.sync += [b.eq(a) for a, b in itertools.pairwise(biases)]
        for r in range(cfg.rows):  # row r's padding flag and weight, r cycles late if skewed
            m.d.sync += [zero1[r].eq(row_zero[r]), weight1[r].eq(row_weight[r])]
        b_data = data.View(b_entry(cfg), b_rd.data)
        m.d.comb += [
            array.valid.eq(valid1),
            array.first.eq(first1),
            array.last.eq(last1),
            drain.bias.eq(bias2),
        ]
        for r, port in enumerate(a_rd):
            lanes = data.View(a_word, port.data)
            for e in range(cfg.group):
                x = lanes[e].as_signed()
                if cfg.bilinear_frac:  # a bilinear sample's corner, scaled by its weight
                    x = x * weight1[r]
                # padding reads zeros
                m.d.comb += array.a[r][e].eq(Mux(zero1[r], 0, x))
        for q in range(cfg.cols):
            m.d.comb += [
                array.w[q].eq(b_data.w[q].as_signed()),
                array.idx[q].eq(
                    instr.dense.replicate(cfg.idx_bits) & j1
                    | ~instr.dense.replicate(cfg.idx_bits) & b_data.idx[q]
                ),
            ]

        # -- controller --------------------------------------------------------------
        # the drain resets its tile counters in the GEMM's first cycle, when
        # ``instr`` holds the new instruction
        starting = Signal()
        m.d.sync += starting.eq(0)
        if cfg.vector:
            vstart = Signal()
            m.d.sync += vstart.eq(0)
            m.d.comb += vec.start.eq(vstart)
        # iterations of the current LOOP body done, plus one: the decode compares it with
        # the fetched count as it leaves the instruction memory (no subtraction there)
        loops = Signal(25, init=1)
        # ``count`` has reached the words a PROGRAM or LOAD takes: a register, set a
        # cycle ahead, so the input's ready is one LUT from flip-flops (its compare of
        # 24-bit counts reached every slice of the bridge's input queue in one cycle)
        at_end = Signal()
        m.d.comb += drain.start.eq(starting)
        with m.FSM():
            with m.State("BOOT"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [n_instr.eq(word[:16]), count.eq(0), at_end.eq(word[:16] == 0)]
                    m.next = "PROGRAM"
            with m.State("PROGRAM"):
                with m.If(at_end):
                    m.d.sync += pc.eq(0)
                    m.next = "FETCH"
                with m.Else():
                    m.d.comb += [self.i.ready.eq(1), i_wr.en.eq(self.i.valid)]
                    with m.If(self.i.valid):
                        m.d.sync += [count.eq(count + 1), at_end.eq(count + 1 == n_instr)]
            with m.State("FETCH"):
                m.d.comb += i_rd.addr.eq(pc)
                m.next = "DECODE"
            with m.State("DECODE"):
                m.d.comb += i_rd.addr.eq(pc)
                fetched = data.View(ilayout, i_rd.data)
                m.d.comb += decoding.eq(1)
                m.d.sync += [
                    instr.eq(i_rd.data),
                    count.eq(0),
                    at_end.eq(fetched.count == 0),
                    l_bank.eq(0),
                    l_addr.eq(fetched.base),
                    pc.eq(pc + 1),
                ]
                ops = opcodes(cfg)
                with m.Switch(fetched.op):
                    with m.Case(ops.LOAD):
                        m.next = "LOAD"
                    with m.Case(ops.GEMM):
                        m.d.sync += starting.eq(1)
                        m.next = "GEMM"
                    if cfg.vector:
                        with m.Case(ops.VEC):
                            m.d.sync += vstart.eq(1)
                            m.next = "VEC"
                    with m.Case(ops.LOOP):
                        with m.If(loops == fetched.count):
                            m.d.sync += loops.eq(1)  # done: fall through
                        with m.Else():
                            m.d.sync += [loops.eq(loops + 1), pc.eq(fetched.base)]
                        m.next = "FETCH"
                    with m.Default():
                        m.next = "HALT"
            with m.State("LOAD"):
                with m.If(at_end):
                    m.next = "FETCH"
                with m.Else():
                    m.d.comb += self.i.ready.eq(1)
                    with m.If(self.i.valid):
                        m.d.sync += [count.eq(count + 1), at_end.eq(count + 1 == instr.count)]
                        with m.Switch(instr.target):
                            with m.Case(Target.A):
                                for r, port in enumerate(a_wr):
                                    with m.If(l_bank == r):
                                        m.d.comb += [
                                            port.addr.eq(l_addr),
                                            port.data.eq(word[: a_word.size]),
                                            port.en.eq(1),
                                        ]
                                with m.If(l_bank == cfg.rows - 1):
                                    m.d.sync += [l_bank.eq(0), l_addr.eq(l_addr + 1)]
                                with m.Else():
                                    m.d.sync += l_bank.eq(l_bank + 1)
                            with m.Case(Target.B):
                                m.d.comb += b_wr.en.eq(1)
                                m.d.sync += l_addr.eq(l_addr + 1)
                            with m.Case(Target.BIAS):
                                m.d.comb += c_wr.en.eq(1)
                                m.d.sync += l_addr.eq(l_addr + 1)
            with m.State("GEMM"):
                m.d.comb += issue.eq(1)
                with m.If(fire & agen.done):
                    m.next = "FLUSH"
            with m.State("FLUSH"):
                idle = ~valid_s & ~sampler.busy & ~valid1 & ~array.busy & ~drain.busy
                with m.If(idle):
                    m.next = "FETCH"
            if cfg.vector:
                with m.State("VEC"):
                    m.d.comb += vec_on.eq(1)
                    with m.If(~vstart & ~vec.busy):
                        m.next = "FETCH"
            with m.State("HALT"):
                m.d.comb += self.halted.eq(1)
        return m


@functools.lru_cache(maxsize=8)
def to_verilog(cfg: EngineConfig, name: str = "accel_engine") -> str:
    """Verilog of the engine; ports ``clk rst i__payload i__valid i__ready o__... halted``.

    Kept per configuration: elaborating the vector engine takes half a minute.
    """
    return verilog.convert(Engine(cfg), name=name, emit_src=False)
