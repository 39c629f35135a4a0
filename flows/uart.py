"""A UART bridge that puts a stream accelerator on a board's serial port.

Protocol (8N1, ``baud`` from the board flow; default 1 Mbaud): the host sends
one input sample as ``ceil(input bits / 8)`` bytes, little-endian (element 0
in the low bits of the first byte, exactly the ``i__payload`` word of the
manifest); the board answers with ``ceil(output bits / 8)`` bytes of the
``o__payload`` word, in the same order. Samples may be sent back to back; the
link, not the accelerator, is the bottleneck. There is no flow control: the
receiver never stalls because the accelerator always takes a sample long
before the next one has arrived.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Shape, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from accel.rtl.queue import SlicedQueue


class UARTRx(wiring.Component):
    """8N1 receiver, sampling each bit in its middle; emits one byte per frame."""

    def __init__(self, divisor: int) -> None:
        if divisor < 4:
            raise ValueError("UART divisor must be at least 4 clock cycles per bit")
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8))})

    def elaborate(self, platform) -> Module:
        m = Module()
        sync = Signal(2, init=0b11)  # two flip-flops against metastability
        m.d.sync += sync.eq(Cat(self.rx, sync[0]))
        line = sync[1]
        timer = Signal(range(self.divisor * 3 // 2 + 1))
        bits = Signal(8)
        count = Signal(range(9))
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM():
            with m.State("idle"):
                with m.If(~line):  # start bit: wait to the middle of the first data bit
                    m.d.sync += [timer.eq(self.divisor * 3 // 2 - 1), count.eq(0)]
                    m.next = "data"
            with m.State("data"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [
                        bits.eq(Cat(bits[1:], line)),
                        count.eq(count + 1),
                        timer.eq(self.divisor - 1),
                    ]
                    with m.If(count == 7):
                        m.next = "stop"
            with m.State("stop"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(line):  # a valid stop bit; a framing error drops the byte
                        m.d.sync += [self.o.payload.eq(bits), self.o.valid.eq(1)]
                    m.next = "idle"
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter taking bytes from a stream."""

    def __init__(self, divisor: int) -> None:
        self.divisor = divisor
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform) -> Module:
        m = Module()
        frame = Signal(10, init=0x3FF)
        left = Signal(range(11))
        timer = Signal(range(self.divisor))
        m.d.comb += [self.tx.eq(frame[0]), self.i.ready.eq(left == 0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                frame.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))),
                left.eq(10),
                timer.eq(self.divisor - 1),
            ]
        with m.Elif(left != 0):
            m.d.sync += timer.eq(timer - 1)
            with m.If(timer == 0):
                m.d.sync += [
                    frame.eq(Cat(frame[1:], Const(1, 1))),
                    left.eq(left - 1),
                    timer.eq(self.divisor - 1),
                ]
        return m


class Deserializer(wiring.Component):
    """Bytes in, little-endian words of ``width`` bits out."""

    def __init__(self, width: int) -> None:
        self.width, self.n = width, -(-width // 8)
        super().__init__(
            {"i": In(stream.Signature(8)), "o": Out(stream.Signature(unsigned(width)))}
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        word = Signal(8 * self.n)
        got = Signal(range(self.n + 1))
        m.d.comb += [self.i.ready.eq(~self.o.valid), self.o.payload.eq(word[: self.width])]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [word.eq(Cat(word[8:], self.i.payload)), got.eq(got + 1)]
            with m.If(got == self.n - 1):
                m.d.sync += [got.eq(0), self.o.valid.eq(1)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m


class Serializer(wiring.Component):
    """Words of ``width`` bits in, their bytes out, least significant first."""

    def __init__(self, width: int) -> None:
        self.width, self.n = width, -(-width // 8)
        super().__init__(
            {"i": In(stream.Signature(unsigned(width))), "o": Out(stream.Signature(8))}
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        word = Signal(8 * self.n)
        left = Signal(range(self.n + 1))
        m.d.comb += [
            self.i.ready.eq(left == 0),
            self.o.valid.eq(left != 0),
            self.o.payload.eq(word[:8]),
        ]
        # while empty the word follows the input, so its enable is the count's alone (it
        # had the input's valid in it, whose route to every bit of the word was the
        # autoencoder's critical path at reuse 16, 11.2 of 12.6 ns routing)
        with m.If(left == 0):
            m.d.sync += word.eq(self.i.payload)
            with m.If(self.i.valid):
                m.d.sync += left.eq(self.n)
        with m.Elif(self.o.valid & self.o.ready):
            m.d.sync += [word.eq(word >> 8), left.eq(left - 1)]
        return m


def _queue(m: Module, name: str, width: int, src, dst, dst_readys=None) -> SlicedQueue:
    """A two-sample :class:`SlicedQueue` from stream ``src`` to stream ``dst``; with
    ``dst_readys`` (a copy of ``dst.ready`` per slice) each slice reads on its own."""
    m.submodules[name] = q = SlicedQueue(width, 2)
    m.d.comb += [
        q.w_en.eq(src.valid),
        q.w_data.eq(src.payload),
        src.ready.eq(q.w_rdy),
        dst.payload.eq(q.r_data),
        dst.valid.eq(q.r_rdy),
    ]
    m.d.comb += q.r_en.eq(dst.ready) if dst_readys is None else q.r_ens.eq(dst_readys)
    return q


class UARTBridge(wiring.Component):
    """rx -> bytes -> input words -> accelerator -> output words -> bytes -> tx."""

    def __init__(self, accelerator: wiring.Component, divisor: int) -> None:
        self.accelerator, self.divisor = accelerator, divisor
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1)})

    def elaborate(self, platform) -> Module:
        m = Module()
        acc = self.accelerator
        in_bits = Shape.cast(acc.i.payload.shape()).width
        out_bits = Shape.cast(acc.o.payload.shape()).width
        m.submodules.rx = rx = UARTRx(self.divisor)
        m.submodules.deser = deser = Deserializer(in_bits)
        m.submodules.accelerator = acc
        m.submodules.ser = ser = Serializer(out_bits)
        m.submodules.tx = tx = UARTTx(self.divisor)
        m.d.comb += rx.rx.eq(self.rx)
        wiring.connect(m, rx.o, deser.i)
        # The sample waits for the accelerator in a queue of 64-bit slices, each with its
        # own control, not in the deserializer's shift register: that register's enable
        # reached every input bit across the part (the byte's valid -> a LUT -> a bit
        # beside the autoencoder's far lanes, 14.8 of 15.5 ns routing at reuse 16). The
        # result waits for the serializer in one too: the serializer's load -> its shift
        # register's enable, through the accelerator's take, was next (11.0 of 12.4 ns).
        # An accelerator with copies of its handshake (DataflowAccelerator(copies=True))
        # takes each input slice's own valid and reads each slice on its own ready, and
        # the result queue's slices' own w_rdys reach its output slices.
        copies = "i_valids" in acc.signature.members
        inq = _queue(m, "inq", in_bits, deser.o, acc.i, acc.i_readys if copies else None)
        outq = _queue(m, "outq", out_bits, acc.o, ser.i)
        if copies:
            m.d.comb += [acc.i_valids.eq(inq.r_rdys), acc.o_readys.eq(outq.w_rdys)]
        wiring.connect(m, ser.o, tx.i)
        m.d.comb += [
            self.tx.eq(tx.tx),
            self.busy.eq(~ser.i.ready | deser.o.valid | inq.r_rdy | outq.r_rdy),
        ]
        return m
