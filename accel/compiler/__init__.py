"""Lowering Graphs onto hardware: dataflow stages now, engine programs later."""
