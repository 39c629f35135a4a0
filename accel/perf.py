"""Cycle model of the dataflow pipeline: exact, including back-pressure.

Every stage is a pipeline that never stalls, then an output queue
(``accel.rtl.dotlayer``, ``accel.rtl.fabric``). A stage of reuse factor ``R``
spends ``R`` phase cycles per sample, reading its input from the upstream
output while it works, and hands the sample on (input handshake) in its last
phase. Its ``L`` registers bring the sample's result into the queue, readable
``L`` cycles after the handshake. It holds at most ``D`` samples (credits,
counted from a sample's first phase; ``L + 1`` unless given, see
``DotStage.credits``), so sample ``n`` starts once sample ``n - D`` has been
taken (and ``delay`` cycles more, ``DotStage.credit_delay``: the layer's lanes
hear of a take through registers). Per sample ``n`` and stage ``k`` (``s`` = its
first phase, ``f`` = its input handshake, ``A`` = cycle its input turns valid,
``h`` = cycle the consumer takes the stage's output)::

    s[k][n] = max(A[k][n], f[k][n-1] + 1, h[k][n-D] + 1 + delay)
    f[k][n] = s[k][n] + R[k] - 1
    A[k+1][n] = max(f[k][n] + L[k], h[k][n-1] + 1)

With an always-valid source and an always-ready sink, latency is the sum of
``R - 1 + L`` over the stages, and the initiation interval ``max(R)``. The
source and sink patterns are periodic bit vectors indexed by ``cycle %
len(pattern)``, as in the RTL test harness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accel.errors import AccelError


def _next_one(pattern: np.ndarray) -> np.ndarray:
    """dist[i] = smallest d >= 0 with pattern[(i + d) % P] set."""
    p = np.asarray(pattern, dtype=bool)
    if not p.any():
        raise AccelError("a valid/ready pattern must have at least one cycle set")
    n = len(p)
    ones = np.flatnonzero(p)
    pos = np.arange(n)
    nxt = np.searchsorted(ones, pos)  # first one at or after pos, or wrap around
    wrapped = nxt == len(ones)
    target = np.where(wrapped, ones[0] + n, ones[np.minimum(nxt, len(ones) - 1)])
    return target - pos


def credits_needed(reuse: int, pipe: int, consumer_reuse: int = 1, delay: int = 0) -> int:
    """The fewest samples a stage must be allowed to hold so that its credits never
    slow it: a sample's credit returns ``delay`` cycles after the consumer takes it, at
    the earliest ``R + L + R' - 1 + delay`` cycles after its first phase (``R``, ``L``: the
    stage's reuse and pipeline; ``R'``: the consumer's reuse, 1 for the sink), and the
    pair runs a sample every ``max(R, R')`` cycles at best."""
    return -(-(reuse + pipe + consumer_reuse - 1 + delay) // max(reuse, consumer_reuse))


@dataclass(frozen=True)
class DataflowTiming:
    """Timing of a chain of stages with reuse factors ``reuse``, pipelines ``pipe``
    (registers from a stage's input handshake to its readable output; 2 when not given)
    and ``credits`` (samples a stage may hold; its pipeline + 1 when not given), each
    returned ``credit_delay`` cycles after the consumer took its sample (0 when not
    given)."""

    reuse: tuple[int, ...]
    pipe: tuple[int, ...] = ()
    credits: tuple[int, ...] = ()
    credit_delay: tuple[int, ...] = ()

    def _pipe(self, k: int) -> int:
        return self.pipe[k] if k < len(self.pipe) else 2

    def _credits(self, k: int) -> int:
        return self.credits[k] if k < len(self.credits) else self._pipe(k) + 1

    @property
    def latency(self) -> int:
        """Cycles from a sample's input turning valid to its output turning valid (idle pipe)."""
        return sum(r - 1 + self._pipe(k) for k, r in enumerate(self.reuse))

    @property
    def ii(self) -> int:
        """Initiation interval: cycles between samples when nothing stalls."""
        return max(self.reuse)

    def schedule(
        self,
        n: int,
        src_valid: np.ndarray | None = None,
        sink_ready: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Exact interface cycles for ``n`` samples.

        Returns int64 arrays: ``present`` (source first offers sample n),
        ``accept`` (input handshake), ``valid`` (output first valid), ``taken``
        (output handshake). Cycle 0 is the first cycle out of reset.
        """
        src = _next_one(np.ones(1, bool) if src_valid is None else src_valid)
        snk = _next_one(np.ones(1, bool) if sink_ready is None else sink_ready)
        ps, pk = len(src), len(snk)
        stages = len(self.reuse)
        out = {k: np.zeros(n, np.int64) for k in ("present", "accept", "valid", "taken")}
        f_prev = [-1] * stages  # input handshake of each stage for the previous sample
        # when the consumer took each earlier sample of each stage (took[k][m])
        took: list[list[int]] = [[] for _ in range(stages)]
        taken_prev = -1
        for i in range(n):
            c = f_prev[0] + 1
            a = c + int(src[c % ps])
            out["present"][i] = a
            for k, r in enumerate(self.reuse):
                downstream = f_prev[k + 1] if k + 1 < stages else taken_prev
                pipe, d = self._pipe(k), self._credits(k)
                late = self.credit_delay[k] if k < len(self.credit_delay) else 0
                if i:
                    took[k].append(downstream)
                credit = took[k][i - d] + 1 + late if i >= d else 0
                f_prev[k] = max(a, f_prev[k] + 1, credit) + r - 1
                a = max(f_prev[k] + pipe, downstream + 1)
            out["accept"][i] = f_prev[0]
            out["valid"][i] = a
            taken_prev = a + int(snk[a % pk])
            out["taken"][i] = taken_prev
        return out
