"""Per-task quality of the MoE ViT: segmentation mIoU and pixel accuracy, depth RMSE (numpy).

The graphs output per token (64 tokens, row-major over the 8x8 patch grid)
the values of the patch's 4x4 pixels in (py, px) order: 4 class logits per
pixel for ``seg`` (64 values), one depth per pixel for ``depth`` (16).
:func:`unpatchify` turns them back into images.

- ``seg``: the predicted class is the argmax of the logits (ties: the lowest
  class). IoU per class over all pixels of all images (intersection over
  union of the predicted and true masks), ``miou`` the mean over the 4
  classes (a class absent from both counts as IoU 1); ``pixel_acc`` the
  fraction of pixels classified correctly.
- ``depth``: ``rmse``, the root mean squared error over all pixels, in the
  generator's depth units (the background plane lies at 2.8..5.2, shapes at
  1..3).
"""

from __future__ import annotations

import numpy as np

from accel import reference
from accel.zoo.moe_vit import data
from accel.zoo.moe_vit import model as zm

GRID = data.SIZE // zm.PATCH


def unpatchify(out: np.ndarray, task: str) -> np.ndarray:
    """(N, 64, 64) seg logits -> (N, 32, 32, 4); (N, 64, 16) depths -> (N, 32, 32)."""
    zm.check_task(task)
    out = np.asarray(out)
    n, p = len(out), zm.PATCH
    ch = data.N_CLASSES if task == "seg" else 1
    img = out.reshape(n, GRID, GRID, p, p, ch).transpose(0, 1, 3, 2, 4, 5)
    img = img.reshape(n, data.SIZE, data.SIZE, ch)
    return img if task == "seg" else img[..., 0]


def seg_metrics(logits: np.ndarray, seg: np.ndarray) -> dict:
    """``miou``, ``pixel_acc`` and ``iou`` per class of logits (N, 32, 32, 4)."""
    pred = np.argmax(logits, axis=-1)
    ious = []
    for c in range(data.N_CLASSES):
        p, t = pred == c, seg == c
        union = int(np.sum(p | t))
        ious.append(float(np.sum(p & t)) / union if union else 1.0)
    return {
        "miou": float(np.mean(ious)),
        "pixel_acc": float(np.mean(pred == seg)),
        "iou": ious,
    }


def depth_metrics(pred: np.ndarray, depth: np.ndarray) -> dict:
    """``rmse`` of predicted depths (N, 32, 32)."""
    return {"rmse": float(np.sqrt(np.mean((np.asarray(pred, np.float64) - depth) ** 2)))}


def task_metrics(task: str, out: np.ndarray, d: dict[str, np.ndarray]) -> dict:
    """The task's metrics of real-valued head outputs (N, 64, 64 or 16) on scenes ``d``."""
    img = unpatchify(out, task)
    if task == "seg":
        return seg_metrics(img, d["seg"])
    return depth_metrics(img, d["depth"])


def graph_outputs(g, images: np.ndarray, batch: int = 100) -> np.ndarray:
    """The integer graph's head output as real numbers (``accel.reference``)."""
    images = zm.check_images(images)
    outs = []
    for i in range(0, len(images), batch):
        raw = reference.quantize_inputs(g, g.inputs[0], images[i : i + batch])
        outs.append(reference.predict(g, raw))
    raw = np.concatenate(outs) if outs else np.zeros((0, *g.tensors[g.outputs[0]].shape))
    return np.ldexp(raw.astype(np.float64), -zm.OUTPUT.type.frac)


def graph_metrics(g, task: str, d: dict[str, np.ndarray]) -> dict:
    """The metrics of the integer graph of ``task`` on the scenes ``d``."""
    return task_metrics(task, graph_outputs(g, d["images"]), d)
