"""The MAC-array engine: configuration, instruction set, compiler and cycle model.

The engine runs a compiled program of GEMM tiles on a P x Q multiply-accumulate
array with a dense and an N:M sparse mode (after SAT). Its hardware lives in
:mod:`accel.rtl.engine`; everything here is plain Python and numpy.
"""
