"""Write foreign_qonnx.onnx: a small QONNX model laid out the way Brevitas exports one.

Not produced by accel: NCHW, float weights quantized by their own Quant nodes (ROUND,
narrow range, as Brevitas weight quantizers do), a 16-bit Quant'ed bias at the
input-times-weight scale, PyTorch-style symmetric pads, Flatten, Gemm with transB=1,
node names like torch.onnx's, and the "onnx.brevitas" domain.
Run ``python tests/data/make_foreign_qonnx.py`` to regenerate it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DOMAIN = "onnx.brevitas"
PATH = Path(__file__).with_name("foreign_qonnx.onnx")


def build(batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    """The model; weights come from integer draws divided exactly by a prime (portable)."""
    rng = np.random.default_rng(seed)

    def floats(shape: tuple[int, ...], scale: float) -> np.ndarray:
        return (rng.integers(-9973, 9974, size=shape) / 9973 * scale).astype(np.float32)

    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def init(name: str, value: np.ndarray | float) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def node(op: str, inputs: list[str], name: str, out: str | None = None, **attrs) -> str:
        out = out or f"{name}_output_0"
        nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def quant(x: str, name: str, scale: float, bits: int, signed: bool, narrow: bool,
              out: str | None = None) -> str:  # fmt: skip
        prefix = name.rsplit("/", 2)[0]
        params = [init(f"{prefix}/{k}", v) for k, v in (("scale", scale), ("zero_point", 0.0),
                                                          ("bit_width", float(bits)))]  # fmt: skip
        attrs = {"signed": int(signed), "narrow": int(narrow), "rounding_mode": "ROUND"}
        return node("Quant", [x, *params], name, out, domain=DOMAIN, **attrs)

    x = quant("global_in", "/input_quant/export_handler/Quant", 2**-5, 8, True, False)
    w1 = quant(init("conv1.weight", floats((4, 1, 3, 3), 0.12)),
               "/conv1/weight_quant/export_handler/Quant", 2**-6, 4, True, True)  # fmt: skip
    b1 = quant(init("conv1.bias", floats((4,), 0.3)),
               "/conv1/bias_quant/export_handler/Quant", 2**-11, 16, True, False)  # fmt: skip
    pads = {"pads": [1, 1, 1, 1], "strides": [2, 2], "dilations": [1, 1], "group": 1}
    x = node("Conv", [x, w1, b1], "/conv1/Conv", kernel_shape=[3, 3], **pads)
    x = node("Relu", [x], "/relu1/Relu")
    x = quant(x, "/relu1/act_quant/export_handler/Quant", 2**-3, 5, False, False)
    x = node("Flatten", [x], "/flatten/Flatten", axis=1)
    w2 = quant(init("fc.weight", floats((10, 36), 0.45)),
               "/fc/weight_quant/export_handler/Quant", 2**-4, 4, True, True)  # fmt: skip
    b2 = quant(init("fc.bias", floats((10,), 0.5)),
               "/fc/bias_quant/export_handler/Quant", 2**-7, 16, True, False)  # fmt: skip
    x = node("Gemm", [x, w2, b2], "/fc/Gemm", transB=1)
    x = node("Relu", [x], "/relu2/Relu")
    quant(x, "/out_quant/export_handler/Quant", 2**-5, 8, False, False, out="global_out")
    graph = helper.make_graph(
        nodes,
        "torch_jit",
        [helper.make_tensor_value_info("global_in", TensorProto.FLOAT, [batch, 1, 6, 6])],
        [helper.make_tensor_value_info("global_out", TensorProto.FLOAT, [batch, 10])],
        inits,
    )
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid(DOMAIN, 1)]
    return helper.make_model(graph, opset_imports=opsets, producer_name="pytorch", ir_version=8)


if __name__ == "__main__":
    onnx.save(build(), PATH)
    print(f"wrote {PATH}")
