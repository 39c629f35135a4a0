"""Cycle model of the dataflow pipeline: exact, including back-pressure.

Each stage of reuse factor ``R`` reads its input from the upstream output
register while it works and spends ``R`` phase cycles per sample, handing the
sample on (input handshake) in its last phase. Its products are registered, so
a sample's last partial sum reaches the output register one cycle later, when
that register is free or being emptied; until then the stage stalls. Per
sample ``n`` and stage ``k`` (``f`` = cycle of the stage's input handshake,
``w`` = cycle it writes its output register, ``A`` = cycle its input turns
valid, ``h`` = cycle the consumer takes the stage's output)::

    f[k][n] = max(A[k][n], w[k][n-1]) + R[k] - 1
    w[k][n] = max(f[k][n] + 1, h[k][n-1])
    A[k+1][n] = w[k][n] + 1

A multiplier-free stage (``accel.rtl.fabric``) is a pipeline of ``L``
registers that never stalls, then an output queue; it holds at most ``D = L +
1`` samples (credits), so sample ``n`` is accepted once sample ``n - D`` has
been taken, and is readable ``L`` cycles after its acceptance, in order::

    f[k][n] = max(A[k][n], f[k][n-1] + 1, h[k][n-D] + 1)
    A[k+1][n] = max(f[k][n] + L, h[k][n-1] + 1)

With an always-valid source and an always-ready sink, latency is the sum of
``R + 1`` over multiplier stages and ``L`` over multiplier-free ones, and the
initiation interval ``max(R)``. The source and sink patterns are periodic bit
vectors indexed by ``cycle % len(pattern)``, as in the RTL test harness.
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


@dataclass(frozen=True)
class DataflowTiming:
    """Timing of a chain of stages with reuse factors ``reuse``."""

    reuse: tuple[int, ...]
    # per stage: 0 for a multiplier stage, else the registers of a multiplier-free one
    fabric: tuple[int, ...] = ()

    def _pipe(self, k: int) -> int:
        return self.fabric[k] if k < len(self.fabric) else 0

    @property
    def latency(self) -> int:
        """Cycles from a sample's input turning valid to its output turning valid (idle pipe)."""
        return sum(self._pipe(k) or r + 1 for k, r in enumerate(self.reuse))

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
        w_prev = [-1] * stages  # output-register write of each stage for the previous sample
        # multiplier-free stages: when the consumer took each earlier sample (h[k][m])
        took: list[list[int]] = [[] for _ in range(stages)]
        taken_prev = -1
        for i in range(n):
            c = f_prev[0] + 1
            a = c + int(src[c % ps])
            out["present"][i] = a
            for k, r in enumerate(self.reuse):
                downstream = f_prev[k + 1] if k + 1 < stages else taken_prev
                if self._pipe(k):
                    pipe = self._pipe(k)
                    if i:
                        took[k].append(downstream)
                    credit = took[k][i - pipe - 1] + 1 if i > pipe else 0
                    f_prev[k] = max(a, f_prev[k] + 1, credit)
                    w_prev[k] = max(f_prev[k] + pipe, downstream + 1) - 1
                else:
                    f_prev[k] = max(a, w_prev[k]) + r - 1
                    w_prev[k] = max(f_prev[k] + 1, downstream)
                a = w_prev[k] + 1
            out["accept"][i] = f_prev[0]
            out["valid"][i] = a
            taken_prev = a + int(snk[a % pk])
            out["taken"][i] = taken_prev
        return out
