"""QONNX import and export: accel graphs to and from the FINN/hls4ml/Brevitas format.

Conventions of :func:`export` (and what :func:`load` reads back exactly):

- Layout. The model's inputs and outputs have the graph's own shapes, batch axis
  first and fixed (``batch``, 1 by default: qonnx's executor needs concrete
  shapes). Inside, convolutions are NCHW, as QONNX/FINN tools expect: a Transpose
  is inserted where an (H, W, C) tensor meets a Conv, a Reshape or an output.
- Quantization. Every type change is a QONNX ``Quant`` node: scale ``2**-frac``,
  zero point 0, ``bitwidth = width``, ``signed``, ``narrow = 0``. Quant clamps,
  so only SAT overflow is exported; WRAP is refused naming the node.
- Rounding. qonnx 1.0's Quant knows ROUND and HALF_EVEN (both numpy's half to
  even), CEIL, FLOOR, UP, DOWN, HALF_UP and HALF_DOWN (the last two away from /
  toward zero). TRN is FLOOR and RND_CONV is ROUND. RND (ties toward +inf) is no
  QONNX mode: it is an Add of half an output LSB followed by a FLOOR Quant. The
  graph input, which may be any real, is first floored onto a grid twice as fine
  (one more bit), which makes that Add exact in float32 for every input.
- Weights and biases are float32 initializers holding the exact fixed-point
  values, each fed through its own Quant (ROUND; a no-op on exact values), as
  Brevitas and QKeras exports do.
- Gather (the masked 8x8 arrangement) is a Pad of one zero, for index -1, then
  an ONNX Gather along axis 1.

qonnx executes in float32: results are exact while every fixed-point value stays
within 2**24 LSBs, which :func:`float32_exact` checks from the actual weights.

:func:`load` maps Quant (power-of-two scale, zero point 0), Conv, MatMul, Gemm,
Relu and bias/rounding Adds onto accel ops, treats Transpose, Reshape, Flatten,
Squeeze, Unsqueeze, Gather and Pad as index views (gathers once a compute op
needs the data), and refuses anything else with a one-line error naming the node.
"""

from accel.qonnx.exporter import export, float32_exact
from accel.qonnx.importer import load

__all__ = ["export", "float32_exact", "load"]
