"""Lower a Graph to dataflow stages: one pipelined dot-product stage per layer.

Each Dense/Conv2D node, with the ReLU and Requantize that follow it, becomes a
:class:`DotStage`: for every output, the list of (input position, weight) taps
it sums. Wiring ops (gather, reshape, and the conv's zero padding) vanish into
the tap indices; taps whose weight is zero or whose input is a constant zero
are dropped, as a hardware designer would. The RTL generator and the cycle
model both read this one structure.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from accel.compiler import cmvm
from accel.compiler.cmvm import AdderGraph
from accel.errors import AccelError
from accel.fixed import FixedType, Quant
from accel.ir.graph import Graph, Node
from accel.ir.ops import conv_padding
from accel.ir.passes import epilogue
from accel.kernels import align_bias

# Adder levels between pipeline registers, by default. A multiplier layer's per-phase
# sum adds products from lanes spread over the part's DSP rows: at 3 levels per
# register the autoencoder at reuse 16 routed at 95.42 MHz with a product -> 3 adders ->
# tree register path critical (6.7 of 10.5 ns routing), at 2 at 99.88 MHz (one cycle
# more latency, 2,800 fewer LUT4). A multiplier-free layer's adder graph routes at
# 60-62 MHz at 3, above its 40 MHz target.
FABRIC_LEVELS = 3
SUM_LEVELS = 2


@dataclass
class DotStage:
    """One layer: ``out[o] = q(relu(bias[o] + sum_t x[idx[o][t]] * w[o][t]))``."""

    name: str
    in_type: FixedType
    n_in: int
    idx: list[np.ndarray]  # per output: input positions of its taps
    w: list[np.ndarray]  # per output: raw weights of its taps
    bias: np.ndarray  # (n_out,) raw, aligned to the accumulator
    acc: FixedType
    relu: bool = False
    quant: Quant | None = None
    reuse: int = 1
    # multiplier-free (``fabric``): the shared adder graph of the constant products, at
    # reuse 1, with a pipeline register every ``levels_per_stage`` adder levels
    # (FABRIC_LEVELS); on multipliers, a register every ``levels_per_stage`` levels of
    # the per-phase sum's tree (SUM_LEVELS)
    adders: AdderGraph | None = None
    levels_per_stage: int = SUM_LEVELS
    # the reuse factor of the stage that reads this one's output (1: the sink), which
    # holds each sample that long: it sets how many samples this stage must hold
    consumer_reuse: int = 1
    # _layout's result per reuse factor (the taps never change after lowering; the
    # reuse factor may, see _place_products)
    _layouts: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def fabric(self) -> bool:
        return self.adders is not None

    @property
    def phase_levels(self) -> int:
        """Adder levels of a multiplier stage's per-phase sum: a balanced tree over the
        most lanes that serve one output (see :meth:`lanes`; a lane's product counts in
        the phases it serves the output, zero in the others)."""
        return _tree_levels(self.lanes())

    @property
    def pipeline(self) -> int:
        """Registers from the input handshake to the output queue's readable head.

        On multipliers, with reuse > 1: each lane's input pick (a register beside its
        multiplexer), or with shared inputs (:attr:`shared_inputs`) the block's pick and
        the lane's copy; then the operands, the products, with reuse > 1 each output's
        copy of a product, the per-phase sum's tree (a register every
        ``levels_per_stage`` adder levels and after the last, at least one), the
        accumulator, the requantized result, the queue (its head is a register: two).
        On the fabric: the adder graph's pipeline registers, the sum and the queue."""
        k = self.levels_per_stage
        if self.adders is None:
            return self._dot_pipeline(self.phase_levels)
        return -(-self.adders.depth // k) + 2

    @property
    def credits(self) -> int:
        """Samples the stage may hold (started and not yet taken), the depth of its
        output queue: what its rate needs (:func:`accel.perf.credits_needed`). At reuse 1
        into reuse 1 that is ``L + 1`` (``L`` = :attr:`pipeline`); at reuse 16 a few
        samples, where ``L + 1`` would be a queue of mostly idle distributed RAM."""
        from accel.perf import credits_needed

        return credits_needed(self.reuse, self.pipeline, self.consumer_reuse, self.credit_delay)

    @property
    def credit_delay(self) -> int:
        """Cycles from the consumer taking a sample to its credit counting: with reuse,
        every multiplier lane keeps its own count of the samples inside and hears of a
        take three registers late (``accel.rtl.dotlayer``), so no net from one counter
        reaches every lane across the part."""
        return 3 if self.reuse > 1 and not self.fabric else 0

    def _dot_pipeline(self, levels: int) -> int:
        # the operands and the products, and with reuse: the lane's pick (shared inputs: the
        # block's pick and the lane's copy), each output's own copy of a product (see
        # accel.rtl.dotlayer)
        front = 2 if self.reuse == 1 else 4 + self.shared_inputs
        return front + self._tree_stages(levels) + 4  # accumulator, result, queue (2)

    def _tree_stages(self, levels: int) -> int:
        return max(1, -(-levels // self.levels_per_stage))

    @property
    def shared_inputs(self) -> bool:
        """Whether lanes share their inputs (:meth:`lanes`): then one multiplexer per
        input sequence picks into a register, and each lane copies it on its way to its
        own operand register: two more pipeline registers."""
        return self._layout()[0]

    def matrix(self) -> np.ndarray:
        """The weights as an (n_in, n_out) integer matrix (zeros where no tap)."""
        m = np.zeros((self.n_in, self.n_out), np.int64)
        for o in range(self.n_out):
            np.add.at(m[:, o], self.idx[o], self.w[o])
        return m

    @property
    def n_out(self) -> int:
        return len(self.idx)

    @property
    def out_type(self) -> FixedType:
        return self.quant.type if self.quant else self.acc

    @property
    def n_taps(self) -> int:
        """Useful multiplications per sample (after dropping zero taps)."""
        return sum(len(i) for i in self.idx)

    def lanes(self) -> list[list[tuple[int, int, int]]]:
        """Multiplier lanes: ``lanes[j][p]`` = (output, input index, weight) in phase ``p``.

        An entry with output ``-1`` (and weight 0) is an idle phase; a lane shorter
        than ``reuse`` idles in its last phases. A lane may serve several outputs in
        turn; each output's accumulator adds the lanes that serve it in the current
        phase. Of two layouts, the one with fewer multipliers, favouring shared inputs:

        - *packed*: all (output, tap) pairs, output by output, cut into runs of
          ``reuse``: ``ceil(taps / reuse)`` multipliers. Every lane picks its own
          input in each phase: a ``reuse``-to-1 multiplexer per lane.
        - *shared inputs*: the inputs, most used first, cut into blocks of ``reuse``
          (a block's input ``p`` is read in phase ``p``); a block has as many lanes as
          its most used input has taps, and all its lanes read the same input, so
          they share one multiplexer (:meth:`_shared_lanes`). Chosen past reuse 4 (a
          wider multiplexer than one slice per lane) when it costs at
          most one multiplier per block more than packing (it costs two pipeline
          registers, see :attr:`shared_inputs`, and its adder trees may be a level
          deeper: at reuse 5 and more a cycle of latency is a fraction of a sample's
          interval): for a dense layer, one multiplexer per block instead of one per
          lane, which is what routes (the autoencoder's dense layer packed at reuse 16,
          two adder levels per register, was still 5,000 overused wires after 18 router2
          iterations; shared, it routes).
        """
        return self._layout()[1]

    def _layout(self) -> tuple[bool, list[list[tuple[int, int, int]]]]:
        """(whether the lanes share their inputs, the lanes): see :meth:`lanes`."""
        if self.reuse not in self._layouts:
            self._layouts[self.reuse] = self._choose_layout()
        return self._layouts[self.reuse]

    def _choose_layout(self) -> tuple[bool, list[list[tuple[int, int, int]]]]:
        packed = self._packed_lanes()
        if self.reuse <= 4:  # a lane's multiplexer fits one slice (two LUT4s and a PFUMX)
            return False, packed
        shared = self._shared_lanes()
        blocks = -(-len({int(i) for ix in self.idx for i in ix}) // self.reuse)
        if len(shared) <= len(packed) + blocks:
            return True, shared
        return False, packed

    def _packed_lanes(self) -> list[list[tuple[int, int, int]]]:
        pairs = [
            (o, int(i), int(w))
            for o in range(self.n_out)
            for i, w in zip(self.idx[o], self.w[o], strict=True)
        ]
        return [pairs[k : k + self.reuse] for k in range(0, len(pairs), self.reuse)]

    def _shared_lanes(self) -> list[list[tuple[int, int, int]]]:
        """Lanes by blocks of inputs. In each phase, the block's input's taps go to
        distinct lanes: first to lanes that already serve their output (a maximum
        matching, so an output's products come from as few lanes as possible and its
        adder tree stays small), the rest to the free lanes serving fewest outputs."""
        rows: dict[int, list[tuple[int, int]]] = {}
        for o in range(self.n_out):
            for i, w in zip(self.idx[o], self.w[o], strict=True):
                rows.setdefault(int(i), []).append((o, int(w)))
        order = sorted(rows, key=lambda i: (-len(rows[i]), i))
        lanes: list[list[tuple[int, int, int]]] = []
        for b in range(0, len(order), self.reuse):
            block = order[b : b + self.reuse]
            n = len(rows[block[0]])
            serves: list[set[int]] = [set() for _ in range(n)]
            lane: list[list[tuple[int, int, int]]] = [[] for _ in range(n)]
            for i in block:
                owner = _match([o for o, _ in rows[i]], serves)
                for k, t in enumerate(owner):
                    o, w = (-1, 0) if t is None else rows[i][t]
                    lane[k].append((o, i, w))
            lanes += lane
        return lanes

    @property
    def n_mult(self) -> int:
        return 0 if self.fabric else len(self.lanes())


def _tree_levels(lanes: list[list[tuple[int, int, int]]]) -> int:
    """Adder levels of a balanced tree over the most lanes that serve one output."""
    served: dict[int, int] = {}
    for lane in lanes:
        for o in {o for o, _, _ in lane} - {-1}:
            served[o] = served.get(o, 0) + 1
    return (max(served.values(), default=1) - 1).bit_length()


def _match(outputs: list[int], serves: list[set[int]]) -> list[int | None]:
    """Taps (by their outputs) to distinct lanes: ``owner[lane]`` = tap index or None.

    First a maximum matching of taps to lanes that already serve their output
    (augmenting paths), then the rest to the free lanes serving fewest outputs,
    which then serve those outputs too (``serves`` is updated)."""
    owner: list[int | None] = [None] * len(serves)

    def augment(t: int, seen: set[int]) -> bool:
        for k, outs in enumerate(serves):
            if outputs[t] in outs and k not in seen:
                seen.add(k)
                if owner[k] is None or augment(owner[k], seen):
                    owner[k] = t
                    return True
        return False

    for t in range(len(outputs)):
        augment(t, set())
    placed = set(owner)
    for t in range(len(outputs)):
        if t not in placed:
            k = min((k for k, t_ in enumerate(owner) if t_ is None),
                    key=lambda k: (len(serves[k]), k))  # fmt: skip
            owner[k] = t
            serves[k].add(outputs[t])
    return owner


@dataclass
class DataflowPlan:
    """A graph lowered to a chain of stages, input and output as flat vectors."""

    name: str
    in_name: str
    in_shape: tuple[int, ...]
    in_type: FixedType
    out_shape: tuple[int, ...]
    stages: list[DotStage] = field(default_factory=list)

    @property
    def n_in(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def out_type(self) -> FixedType:
        return self.stages[-1].out_type

    @property
    def n_out(self) -> int:
        return self.stages[-1].n_out

    @property
    def reuse(self) -> list[int]:
        return [s.reuse for s in self.stages]

    def timing(self):
        """The cycle model of this pipeline (:class:`accel.perf.DataflowTiming`)."""
        from accel.perf import DataflowTiming

        return DataflowTiming(
            tuple(self.reuse),
            tuple(s.pipeline for s in self.stages),
            tuple(s.credits for s in self.stages),
            tuple(s.credit_delay for s in self.stages),
        )


def _taps_dense(node: Node, src: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    w = node.params["weight"].data
    return _prune([src] * w.shape[1], [w[:, o] for o in range(w.shape[1])])


def conv_taps(node: Node, shape, src: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per conv output (in (y, x, c) order): the input positions and raw weights it sums.

    ``src`` maps the conv input's flat positions to the positions to report
    (-1 for a constant zero); padding, zero inputs and zero weights are dropped.
    """
    w = node.params["weight"].data
    kh, kw, cin, cout = w.shape
    h, wd, _ = shape
    s, p = node.attrs["stride"], node.attrs["padding"]
    oh, top, _ = conv_padding(h, kh, s, p)
    ow, left, _ = conv_padding(wd, kw, s, p)
    ky, kx, ci = np.meshgrid(np.arange(kh), np.arange(kw), np.arange(cin), indexing="ij")
    ky, kx, ci = ky.ravel(), kx.ravel(), ci.ravel()  # (KH, KW, Cin) order, like the weight
    idx, ws = [], []
    for y in range(oh):
        for x in range(ow):
            iy, ix = y * s - top + ky, x * s - left + kx
            inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < wd)
            pos = np.where(inside, (iy * wd + ix) * cin + ci, 0)
            tap_src = np.where(inside, src[pos], -1)
            for o in range(cout):
                idx.append(tap_src)
                ws.append(w[:, :, :, o].ravel())
    return _prune(idx, ws)


def _prune(idx: list[np.ndarray], ws: list[np.ndarray]) -> tuple[list, list]:
    """Drop taps with a zero weight or a constant-zero input (index -1)."""
    keep = [(i >= 0) & (w != 0) for i, w in zip(idx, ws, strict=True)]
    return (
        [i[k].astype(np.int64) for i, k in zip(idx, keep, strict=True)],
        [w[k].astype(np.int64) for w, k in zip(ws, keep, strict=True)],
    )


# cycles a layer may spend per sample: more than any zoo layer's taps (the autoencoder's
# largest has 1,842), and a bound on the simulated cycles per sample
MAX_REUSE = 4096


MULT_STYLES = ("dsp", "fabric", "auto")


def lower(
    graph: Graph,
    reuse: int | dict[str, int] = 1,
    mult: str = "dsp",
    dsp_budget: int | None = None,
    share: int | dict[str, int] = 0,
    block: int | dict[str, int] = 0,
) -> DataflowPlan:
    """Lower a chain-shaped graph; ``reuse`` is one factor or one per layer name.

    ``mult``: ``dsp``, every product on a multiplier (DSP blocks, or LUTs past the
    part's); ``fabric``, every layer multiplier-free (constant weights as a shared adder
    graph, :mod:`accel.compiler.cmvm`; needs reuse 1); ``auto``, layer by layer, on
    multipliers at its reuse factor while they fit ``dsp_budget``, and multiplier-free
    past it (at reuse 1: a constant adder graph takes a sample every cycle, so the
    pipeline's initiation interval stays the largest reuse factor on the DSP blocks).
    ``share``, ``block``: a multiplier-free layer's outputs per shared adder graph and
    inputs per block whose partial sums a tree adds (0: all; one value, or one per layer
    name; see :func:`accel.compiler.cmvm.solve`).
    """
    if mult not in MULT_STYLES:
        raise AccelError(f"multiplier style must be one of {', '.join(MULT_STYLES)}, got {mult!r}")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise AccelError("dataflow lowering needs a graph with one input and one output")
    cur = graph.inputs[0]
    t_in = graph.tensors[cur]
    plan = DataflowPlan(
        graph.name, cur, t_in.shape, t_in.type, graph.tensors[graph.outputs[0]].shape
    )
    src = np.arange(t_in.size)  # flat position in the current tensor -> position in stage input
    stage: DotStage | None = None
    folded: set[str] = set()
    for node in graph.nodes:
        if node.name in folded:
            continue
        if node.inputs != [cur]:
            raise AccelError(f"node {node.name}: dataflow lowering supports chains of layers only")
        shape = graph.tensors[cur].shape
        cur = node.outputs[0]
        if node.op in ("dense", "conv2d"):
            t = graph.tensors[node.inputs[0]]
            idx, ws = _taps_dense(node, src) if node.op == "dense" else conv_taps(node, shape, src)
            b = node.params.get("bias")
            acc = node.attrs["acc"]
            bias = np.zeros(len(idx), np.int64) if b is None else align_bias(b.data, b.type, acc)
            if node.op == "conv2d":
                bias = np.tile(bias, len(idx) // len(bias))
            n_in = plan.n_in if stage is None else stage.n_out
            r = reuse if isinstance(reuse, int) else reuse.get(node.name, 1)
            if not 1 <= r <= MAX_REUSE:
                raise AccelError(
                    f"node {node.name}: reuse factor must be 1..{MAX_REUSE} (a layer's "
                    f"multipliers stop shrinking at its tap count), got {r:,}"
                )
            ep = epilogue(graph, node)
            stage = DotStage(
                node.name, t.type, n_in, idx, ws, bias, acc, ep.relu, ep.quant, reuse=r
            )
            plan.stages.append(stage)
            src = np.arange(stage.n_out)
            folded |= ep.names
            cur = ep.out
        # a ReLU or requantize after a gather that follows the layer: the gather is
        # wiring, and both keep 0 at 0, so they commute with it into the layer
        elif node.op == "relu" and stage is not None and stage.quant is None and not stage.relu:
            stage.relu = True
        elif node.op == "requantize" and stage is not None and stage.quant is None:
            stage.quant = node.attrs["quant"]
        elif node.op == "gather":
            # Wiring: it folds into the next layer's tap indices. Between layers it
            # commutes with the ReLU and requantize that follow (both keep 0 at 0).
            index = np.asarray(node.attrs["index"])
            src = np.where(index >= 0, src[np.maximum(index, 0)], -1)
        elif node.op == "reshape":
            pass  # flat C-order positions are unchanged
        else:
            raise AccelError(
                f"node {node.name}: op {node.op!r} at this position is not supported by the "
                "dataflow lowering (expected dense/conv2d [relu] [requantize], gathers between)"
            )
    if stage is None:
        raise AccelError(f"graph {graph.name} has no dense or conv2d layer to build")
    if not np.array_equal(src, np.arange(stage.n_out)):
        raise AccelError(
            f"graph {graph.name}: a gather after the last layer is not supported by the "
            "dataflow lowering"
        )
    for what, per in (("reuse", reuse), ("share", share), ("block", block)):
        unknown = set(per) - {s.name for s in plan.stages} if isinstance(per, dict) else set()
        if unknown:
            raise AccelError(f"{what} given for unknown layer(s): {', '.join(sorted(unknown))}")
    _place_products(plan, mult, dsp_budget, share, block)
    for st, nxt in itertools.pairwise(plan.stages):
        st.consumer_reuse = nxt.reuse
    return plan


def _place_products(
    plan: DataflowPlan,
    mult: str,
    dsp_budget: int | None,
    share: int | dict[str, int],
    block: int | dict[str, int],
) -> None:
    """Each stage's products on multipliers or in the fabric, as ``mult`` says."""

    def of(per: int | dict[str, int], name: str) -> int:
        return per if isinstance(per, int) else per.get(name, 0)

    if mult == "dsp":
        return
    left = dsp_budget
    for st in plan.stages:
        if mult == "auto":
            if left is None or st.n_mult <= left:
                left = None if left is None else left - st.n_mult
                continue
            st.reuse = 1  # past the DSP blocks: multiplier-free, a sample every cycle
        if st.reuse != 1:
            raise AccelError(
                f"layer {st.name}: a multiplier-free layer has constant weights, so it runs at "
                f"reuse 1, not {st.reuse}"
            )
        st.adders = cmvm.solve(st.matrix(), st.in_type, of(share, st.name), of(block, st.name))
        st.levels_per_stage = FABRIC_LEVELS


def evaluate(plan: DataflowPlan, x: np.ndarray) -> np.ndarray:
    """Run the lowered stages in numpy: what the generated RTL computes, tap by tap.

    A check on the lowering that needs no simulator; not a fast path.
    """
    from accel.fixed import Overflow, requantize

    v = np.asarray(x, dtype=np.int64).reshape(len(x), -1)
    for st in plan.stages:
        acc = np.stack([(v[:, i] * w).sum(axis=1) for i, w in zip(st.idx, st.w, strict=True)], 1)
        acc = requantize(acc + st.bias, st.acc.frac, Quant(st.acc, overflow=Overflow.WRAP))
        if st.relu:
            acc = np.maximum(acc, 0)
        v = requantize(acc, st.acc.frac, st.quant) if st.quant else acc
    return v.reshape(len(x), *plan.out_shape)
