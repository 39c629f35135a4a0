"""Quantization-aware training in torch, bit-exact with accel.fixed (torch is an optional extra)."""
