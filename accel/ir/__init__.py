"""The Graph IR shared by the reference, the cycle model, the compiler and the RTL."""

from accel.ir import ops
from accel.ir.graph import Graph, Node, Param, Tensor
from accel.ir.io import load, save

__all__ = ["Graph", "Node", "Param", "Tensor", "load", "ops", "save"]
