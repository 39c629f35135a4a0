"""The MoE ViT on the engine under Verilator: every output of every task bit-exact, cycle-exact.

Also the task switch: a sequence of inferences alternating tasks takes, for
each inference, exactly the cycles that task takes alone.
"""

import numpy as np
import pytest

from accel import reference
from accel.engine.config import EngineConfig
from accel.engine.cycles import predict
from accel.engine.vit import compile_inferences
from accel.sim.engine import run_inferences, run_tokens
from accel.zoo import MODELS
from accel.zoo.moe_vit.model import build

VIT_CFG = EngineConfig(vector=True, a_depth=512, b_depth=1024, bias_depth=64, imem_depth=512)


def _images(n: int, seed: int, graph) -> np.ndarray:
    x = MODELS["moe_vit"].make_inputs(n, seed)
    return reference.quantize_inputs(graph, graph.inputs[0], x)


@pytest.mark.parametrize("task", ["seg", "depth"])
def test_moe_vit_task_on_engine(task):
    g = build(task=task)
    raw = _images(2, 7, g)
    raw[1, :4] = 0  # an all-zero patch row
    raw[1, 4:8] = 255  # saturated pixels
    y, run = run_tokens(g, VIT_CFG, raw)
    np.testing.assert_array_equal(y, reference.predict(g, raw))
    assert run.cycles_match, "measured output cycles differ from the cycle model"


def inference_cycles(tp, timing) -> list[int]:
    ends = [0, *timing.ends]
    return [ends[end] - ends[first] for first, end in tp.bodies]


def test_task_switch_costs_nothing():
    seg, depth = build(task="seg"), build(task="depth")
    raw = _images(2, 11, seg)
    order = [seg, depth]  # depth right after seg
    tp = compile_inferences(VIT_CFG, list(zip(order, raw, strict=True)))
    outs, run = run_inferences(tp)
    for g, x, y in zip(order, raw, outs, strict=True):
        np.testing.assert_array_equal(y, reference.predict(g, x[np.newaxis])[0])
    assert run.cycles_match
    switched = inference_cycles(tp, run.model)
    alone = {
        g.name: inference_cycles(t, predict(t.program))[1]
        for g in (seg, depth)
        for t in [compile_inferences(VIT_CFG, [(g, raw[0]), (g, raw[1])])]
    }
    assert switched == [alone[g.name] for g in order]
    assert alone[seg.name] != alone[depth.name]  # the tasks' experts and heads differ
