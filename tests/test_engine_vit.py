"""The MoE ViT on the engine under Verilator: every output of every task bit-exact, cycle-exact.

Also the task switch: a sequence of inferences alternating tasks takes, for
each inference, exactly the cycles that task takes alone.
"""

import json

import numpy as np
import pytest

from accel import reference
from accel.engine.cycles import predict
from accel.engine.vit import compile_inferences, engine_config
from accel.sim.engine import run_inferences, run_tokens
from accel.zoo import MODELS
from accel.zoo.moe_vit.model import build

VIT_CFG = engine_config()


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


def test_cli_sim_on_engine(capsys):
    """``accel sim moe_vit --task depth --arch engine``: edge-value images included."""
    from accel.cli import main

    code = main(["sim", "moe_vit", "--task", "depth", "--arch", "engine", "--samples", "2",
                 "--json"])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["mismatches"] == 0 and doc["cycles_match_model"]
    assert doc["engine"]["vector"] is True


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sim", "moe_vit", "--arch", "dataflow"],
         "moe_vit_moe_seg runs on the engine (its softmax, "),
        (["sim", "moe_vit", "--arch", "engine", "--reuse", "2"],
         "--reuse is an option of the dataflow target, not of the engine"),
        (["sim", "moe_vit", "--task", "pose", "--arch", "engine"], "moe_vit has no task 'pose'"),
        (["sim", "moe_vit", "--arch", "engine", "--array", "4x8"],
         "the vector engine's array must be square (its group is the rows), got 4x8"),
        (["sim", "moe_vit", "--arch", "engine", "--vec-rows", "3"],
         "engine vec_rows (3) must divide the rows (8) "),
        (["sim", "nm_sparse", "--arch", "engine", "--vec-rows", "1"],
         "--vec-rows is for the vector unit; "),
    ],
)  # fmt: skip
def test_cli_bad_input_one_line(argv, message, capsys, tmp_path):
    from accel.cli import main

    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"accel: error: {message}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("array", "bank_words", "vec_rows"),
    [
        ("4x4", 1024, 2),  # group 4, deeper banks, the unit on half the rows at a time
        # the smallest unit: one row's lanes, eight passes per block (a design of its own:
        # a conversion and a Verilator build of minutes, so slow; 4x4 above covers vec_rows)
        pytest.param("8x8", 512, 1, marks=pytest.mark.slow),
    ],
)
def test_moe_vit_on_other_engines(array, bank_words, vec_rows):
    """The same graph compiled for other arrays and narrower vector units: still exact."""
    g = build(task="seg")
    raw = _images(1, 5, g)
    raw[0, :4] = 0
    cfg = engine_config(array, bank_words, vec_rows)
    y, run = run_tokens(g, cfg, raw)
    np.testing.assert_array_equal(y, reference.predict(g, raw))
    assert run.cycles_match
