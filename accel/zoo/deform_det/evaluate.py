"""Decoding the detector's 8x8 output and scoring it: AP at IoU 0.5 (numpy only).

The head's ``(8, 8, K + 4)`` output holds per cell ``K`` class heatmap logits,
the box size ``(w, h) / 4`` and the centre offset ``(x, y)`` within the cell
(``data.targets``' layout). Decoding is CenterNet's: a peak is a heatmap
value that equals the 3x3 max around it (max-pool NMS, outside the grid does
not count), the ``TOP_K`` highest peaks over all classes are kept, each with
box centre ``(cell + offset) * 4`` and size ``size * 4`` pixels, score
``sigmoid(logit)``.

AP50 is per class: detections of all images sorted by score (stable, ties in
image order), each matched to the unmatched ground-truth box of its class
and image with the highest IoU, a true positive if that IoU is >= 0.5;
precision made monotone from the right and integrated over every recall
step (VOC 2010+ "all points" interpolation). The mean is over classes that
have ground truth.
"""

from __future__ import annotations

import numpy as np

from accel.zoo.deform_det.data import N_CLASSES, STRIDE

TOP_K = 10
IOU = 0.5


def peaks(heat: np.ndarray) -> np.ndarray:
    """Mask of 3x3 local maxima of ``heat`` (n, H, W, K) per map (ties all kept)."""
    pad = np.pad(heat, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    h, w = heat.shape[1:3]
    m = np.max(
        [pad[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)],
        axis=0,
    )
    return heat == m


def decode(out: np.ndarray, n_classes: int = N_CLASSES, top_k: int = TOP_K) -> list[np.ndarray]:
    """Per image an array (m, 6) of ``(class, score, x0, y0, x1, y1)``, best first."""
    out = np.asarray(out, dtype=np.float64)
    heat = out[..., :n_classes]
    size = out[..., n_classes : n_classes + 2] * STRIDE
    off = out[..., n_classes + 2 : n_classes + 4]
    keep = peaks(heat)
    dets = []
    for i in range(len(out)):
        ii, jj, cc = np.nonzero(keep[i])
        logit = heat[i, ii, jj, cc]
        order = np.argsort(-logit, kind="stable")[:top_k]
        ii, jj, cc, logit = ii[order], jj[order], cc[order], logit[order]
        cx = (jj + off[i, ii, jj, 0]) * STRIDE
        cy = (ii + off[i, ii, jj, 1]) * STRIDE
        w, h = size[i, ii, jj, 0], size[i, ii, jj, 1]
        score = 1 / (1 + np.exp(-logit))
        dets.append(np.stack([cc, score, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1))
    return dets


def area(b: np.ndarray) -> np.ndarray:
    """Areas of boxes (..., 4); an inverted box has area 0."""
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) with each of ``boxes`` (m, 4); x0, y0, x1, y1."""
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def average_precision(tp: np.ndarray, n_gt: int) -> float:
    """VOC all-points AP from true-positive flags of score-sorted detections."""
    if n_gt == 0:
        raise ValueError("AP needs at least one ground-truth box")
    tp = np.asarray(tp, dtype=np.float64)
    ctp = np.cumsum(tp)
    recall = np.concatenate([[0.0], ctp / n_gt, [1.0]])
    precision = np.concatenate([[0.0], ctp / np.arange(1, len(tp) + 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    step = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[step + 1] - recall[step]) * precision[step + 1]))


def ap50(
    dets: list[np.ndarray],
    boxes: np.ndarray,
    classes: np.ndarray,
    n_classes: int = N_CLASSES,
    iou_threshold: float = IOU,
) -> dict:
    """``{"mAP50": mean, "per_class": [AP or None], "n_gt": [...]}`` over the images."""
    per_class, n_gts = [], []
    for c in range(n_classes):
        gt = [boxes[i][classes[i] == c] for i in range(len(boxes))]
        n_gt = sum(len(g) for g in gt)
        n_gts.append(n_gt)
        if n_gt == 0:
            per_class.append(None)
            continue
        found = [(i, d) for i, di in enumerate(dets) for d in di if int(d[0]) == c]
        order = np.argsort([-d[1] for _, d in found], kind="stable")
        used = [np.zeros(len(g), dtype=bool) for g in gt]
        tp = np.zeros(len(found))
        for rank, k in enumerate(order):
            i, d = found[k]
            if not len(gt[i]):
                continue
            ious = np.where(used[i], -1.0, iou(d[2:6], gt[i]))
            best = int(np.argmax(ious))
            if ious[best] >= iou_threshold:
                used[i][best] = True
                tp[rank] = 1
        per_class.append(average_precision(tp, n_gt))
    scored = [a for a in per_class if a is not None]
    return {
        "mAP50": float(np.mean(scored)) if scored else 0.0,
        "per_class": per_class,
        "n_gt": n_gts,
    }


def perfect_output(boxes: np.ndarray, classes: np.ndarray, n_classes: int = N_CLASSES):
    """The head output that decodes to exactly the given boxes (logit +8 at centres, -8 else)."""
    from accel.zoo.deform_det.data import targets

    t = targets(boxes, classes)
    heat = np.where(t["heatmap"] == 1.0, 8.0, -8.0)
    return np.concatenate([heat, t["size"], t["offset"]], axis=-1)
