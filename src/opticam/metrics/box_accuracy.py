"""Box accuracy (MaxBoxAccV2, Choe et al., "Evaluating weakly supervised object localization methods
right", CVPR 2020) and top-1 localization, from saliency maps and ground-truth boxes.

The protocol, at the map's resolution (the model's input):

1. each map is min-max normalized to [0, 1];
2. for every threshold ``t`` in ``THRESHOLDS`` (0, 0.01, ..., 0.99: "thresholds over [0, 1)"), the mask
   ``{pixels: M >= t}`` is split into connected components (8-connectivity, ``scipy.ndimage.label``),
   and each component gives its tightest box (``scipy.ndimage.find_objects``); V2 keeps *every*
   component's box, not only the largest one;
3. the image's score at ``t`` is the best IoU between any of those boxes and any ground-truth box
   (:func:`max_iou_per_threshold`, stored per image);
4. over a set of images, box accuracy at IoU level ``delta`` is the share of images whose score is at
   least ``delta``, at the threshold where that share is highest (one threshold for the whole set, as in
   the paper: the best threshold is chosen per data set, not per image);
5. MaxBoxAccV2 is the mean of the box accuracies at ``delta`` = 0.3, 0.5 and 0.7.

Top-1 localization: an image counts when its top-1 class is right **and** its score is >= 0.5 at the
threshold that is best for box accuracy at 0.5.

Boxes are ``(x0, y0, x1, y1)`` with ``x1``/``y1`` exclusive (as in :mod:`.localization`); IoU is computed on
the boxes as regions ``[x0, x1) x [y0, y1)``, which for integer corners is the IoU of their pixel sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

Box = tuple[float, float, float, float]

THRESHOLDS: tuple[float, ...] = tuple(i / 100 for i in range(100))
IOU_LEVELS: tuple[float, ...] = (0.3, 0.5, 0.7)
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def box_iou(a: Sequence[Box], b: Sequence[Box]) -> np.ndarray:
    """``[len(a), len(b)]`` IoU of every pair of boxes ``(x0, y0, x1, y1)`` (end-exclusive regions)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    a_arr = np.asarray(a, dtype=np.float64)[:, None, :]
    b_arr = np.asarray(b, dtype=np.float64)[None, :, :]
    w = (np.minimum(a_arr[..., 2], b_arr[..., 2]) - np.maximum(a_arr[..., 0], b_arr[..., 0])).clip(min=0)
    h = (np.minimum(a_arr[..., 3], b_arr[..., 3]) - np.maximum(a_arr[..., 1], b_arr[..., 1])).clip(min=0)
    inter = w * h
    area_a = (a_arr[..., 2] - a_arr[..., 0]) * (a_arr[..., 3] - a_arr[..., 1])
    area_b = (b_arr[..., 2] - b_arr[..., 0]) * (b_arr[..., 3] - b_arr[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def normalize_map(saliency: torch.Tensor | np.ndarray) -> np.ndarray:
    """``[H, W]`` float64 map scaled to [0, 1] by min-max; a constant map becomes all zeros."""
    m = np.asarray(saliency.detach().float().cpu() if isinstance(saliency, torch.Tensor) else saliency, np.float64)
    m = m.squeeze()
    if m.ndim != 2:
        raise ValueError(f"expected one map [H, W] (or [1, H, W]), got shape {m.shape}")
    low, high = m.min(), m.max()
    return (m - low) / (high - low) if high > low else np.zeros_like(m)


def component_boxes(mask: np.ndarray) -> list[Box]:
    """The tightest box ``(x0, y0, x1, y1)`` (end-exclusive) around each 8-connected component of ``mask``."""
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if count == 0:
        return []
    return [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndimage.find_objects(labels)]


def max_iou_per_threshold(
    saliency: torch.Tensor | np.ndarray, gt_boxes: Sequence[Box], thresholds: Sequence[float] = THRESHOLDS
) -> np.ndarray:
    """``[T]``: for each threshold, the best IoU between a component box of ``{M >= t}`` and a ground-truth box.

    ``M`` is the min-max normalized map; a threshold that leaves no pixel scores 0.
    """
    if len(gt_boxes) == 0:
        raise ValueError("max_iou_per_threshold needs at least one ground-truth box")
    m = normalize_map(saliency)
    out = np.zeros(len(thresholds))
    for i, t in enumerate(thresholds):
        boxes = component_boxes(m >= t)
        if boxes:
            out[i] = box_iou(boxes, gt_boxes).max()
    return out


@dataclass
class BoxAccuracy:
    """Box accuracy over a set of images (fractions in [0, 1], not percent).

    Attributes:
        per_level: IoU level -> box accuracy at that level's best threshold.
        best_threshold: IoU level -> that threshold.
        max_box_acc: the mean of ``per_level`` (MaxBoxAccV2 when the levels are 0.3 / 0.5 / 0.7).
        n: images scored.
    """

    per_level: dict[float, float]
    best_threshold: dict[float, float]
    max_box_acc: float
    n: int


def box_accuracy(
    ious: np.ndarray | Sequence[Sequence[float]],
    levels: Sequence[float] = IOU_LEVELS,
    thresholds: Sequence[float] = THRESHOLDS,
) -> BoxAccuracy:
    """MaxBoxAccV2 from the per-image scores ``ious`` ``[N, T]`` (:func:`max_iou_per_threshold` of each image).

    For each level, the accuracy at each threshold is the share of images with IoU >= level; the best
    threshold wins (the first one on ties).
    """
    arr = np.asarray(ious, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] != len(thresholds):
        raise ValueError(f"expected per-image scores [N >= 1, {len(thresholds)}], got shape {arr.shape}")
    per_level, best = {}, {}
    for level in levels:
        acc = (arr >= level).mean(axis=0)
        index = int(np.argmax(acc))
        per_level[level] = float(acc[index])
        best[level] = float(thresholds[index])
    return BoxAccuracy(per_level, best, float(np.mean(list(per_level.values()))), arr.shape[0])


def top1_localization(
    ious: np.ndarray | Sequence[Sequence[float]],
    correct: Sequence[bool] | np.ndarray,
    level: float = 0.5,
    thresholds: Sequence[float] = THRESHOLDS,
) -> float:
    """Share of images whose class is right and whose IoU >= ``level`` at the best box-accuracy threshold.

    The threshold is the one that maximizes box accuracy at ``level`` over these images (ground truth
    class known), so top-1 localization is never above that box accuracy.
    """
    arr = np.asarray(ious, dtype=np.float64)
    right = np.asarray(correct, dtype=bool)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"expected per-image scores [N >= 1, T], got shape {arr.shape}")
    if right.shape != (arr.shape[0],):
        raise ValueError(f"got {right.shape} class results for {arr.shape[0]} images")
    if arr.ndim != 2 or arr.shape[1] != len(thresholds):
        raise ValueError(f"expected per-image scores [N, {len(thresholds)}], got shape {arr.shape}")
    index = int(np.argmax((arr >= level).mean(axis=0)))  # the same choice as box_accuracy's
    return float((right & (arr[:, index] >= level)).mean())


__all__ = [
    "IOU_LEVELS",
    "THRESHOLDS",
    "BoxAccuracy",
    "box_accuracy",
    "box_iou",
    "component_boxes",
    "max_iou_per_threshold",
    "normalize_map",
    "top1_localization",
]
