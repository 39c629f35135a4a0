"""The MoE ViT on the engine under Verilator: every output of every task bit-exact, cycle-exact."""

import numpy as np
import pytest

from accel import reference
from accel.engine.config import EngineConfig
from accel.sim.engine import run_tokens
from accel.zoo import MODELS
from accel.zoo.moe_vit.model import build

VIT_CFG = EngineConfig(vector=True, a_depth=512, b_depth=1024, bias_depth=64, imem_depth=256)


@pytest.mark.parametrize("task", ["seg", "depth"])
def test_moe_vit_task_on_engine(task):
    g = build(task=task)
    x = MODELS["moe_vit"].make_inputs(2, 7)
    raw = reference.quantize_inputs(g, g.inputs[0], x)
    raw[1, :4] = 0  # an all-zero patch row
    y, run = run_tokens(g, VIT_CFG, raw)
    np.testing.assert_array_equal(y, reference.predict(g, raw))
    assert run.cycles_match, "measured output cycles differ from the cycle model"
