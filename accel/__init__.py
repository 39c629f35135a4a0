"""accel: FPGA accelerators for quantized neural networks, verified bit-exactly."""

from accel.errors import AccelError

__version__ = "0.1.0"
__all__ = ["AccelError", "__version__"]
