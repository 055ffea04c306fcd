"""Box accuracy (MaxBoxAccV2) and top-1 localization pinned on hand-computed cases, and the pointing game
and energy pointing game cross-checked against Quantus on real Grad-CAM maps with real boxes."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from opticam.metrics.box_accuracy import (
    THRESHOLDS,
    box_accuracy,
    box_iou,
    component_boxes,
    max_iou_per_threshold,
    normalize_map,
    top1_localization,
)
from opticam.metrics.localization import box_mask, energy_pointing_game, pointing_game
from tests.conftest import SAMPLES

VAL_BOXES = SAMPLES.parent / "imagenet-val-boxes" / "cropped"


def test_box_iou_by_hand():
    # 2x2 at the origin vs 2x2 shifted by one column: overlap 1x2 = 2, union 4 + 4 - 2 = 6.
    iou = box_iou([(0, 0, 2, 2), (10, 10, 11, 11)], [(1, 0, 3, 2), (0, 0, 2, 2)])
    np.testing.assert_allclose(iou, [[2 / 6, 1.0], [0.0, 0.0]])
    assert box_iou([], [(0, 0, 1, 1)]).shape == (0, 1)


def test_component_boxes_are_eight_connected():
    mask = np.zeros((6, 8), dtype=bool)
    mask[1, 1] = mask[2, 2] = True  # diagonal neighbours: one component
    mask[4:6, 5:8] = True
    assert sorted(component_boxes(mask)) == [(1, 1, 3, 3), (5, 4, 8, 6)]
    assert component_boxes(np.zeros((3, 3), dtype=bool)) == []


def test_max_iou_per_threshold_by_hand():
    # A 10x10 map: a strong 4x4 blob at rows/cols 2..5 (value 1.0) inside a weak 8x8 halo (value 0.4).
    m = torch.zeros(10, 10)
    m[1:9, 1:9] = 0.4
    m[2:6, 2:6] = 1.0
    gt = [(2, 2, 6, 6)]
    ious = max_iou_per_threshold(m, gt)
    assert ious.shape == (100,)
    assert ious[0] == pytest.approx(16 / 100)  # t = 0: everything is one 10x10 box
    assert ious[int(0.4 * 100)] == pytest.approx(16 / 64)  # t = 0.4: the 8x8 halo
    assert ious[41] == pytest.approx(1.0) and ious[99] == pytest.approx(1.0)  # above 0.4: the blob
    # Two ground-truth boxes: the best pair counts.
    assert max_iou_per_threshold(m, [(0, 0, 1, 1), (1, 1, 9, 9)])[40] == pytest.approx(1.0)
    # A constant map: the whole image at t = 0, nothing above.
    flat = max_iou_per_threshold(torch.ones(4, 4), [(0, 0, 4, 4)])
    assert flat[0] == 1.0 and (flat[1:] == 0).all()
    assert normalize_map(torch.full((1, 3, 3), 7.0)).max() == 0
    with pytest.raises(ValueError, match="at least one"):
        max_iou_per_threshold(m, [])


def test_box_accuracy_and_top1_by_hand():
    thresholds = (0.0, 0.5)
    # Three images; at t=0 IoUs (0.2, 0.6, 0.8), at t=0.5 IoUs (0.35, 0.4, 0.75).
    ious = [[0.2, 0.35], [0.6, 0.4], [0.8, 0.75]]
    acc = box_accuracy(ious, thresholds=thresholds)
    # IoU 0.3: t=0 -> 2/3, t=0.5 -> 3/3; IoU 0.5: 2/3 both (first wins: t=0); IoU 0.7: 1/3 both.
    assert acc.per_level == pytest.approx({0.3: 1.0, 0.5: 2 / 3, 0.7: 1 / 3})
    assert acc.best_threshold == {0.3: 0.5, 0.5: 0.0, 0.7: 0.0}
    assert acc.max_box_acc == pytest.approx((1 + 2 / 3 + 1 / 3) / 3)
    # Top-1 loc at t=0 (best for 0.5): images 2 and 3 localize; only image 3's class is right.
    assert top1_localization(ious, [True, False, True], thresholds=thresholds) == pytest.approx(1 / 3)
    assert top1_localization(ious, [True, True, True], thresholds=thresholds) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        box_accuracy([[0.1]], thresholds=thresholds)
    assert len(THRESHOLDS) == 100 and THRESHOLDS[0] == 0 and THRESHOLDS[-1] == 0.99


# -- Quantus on real maps --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_maps_and_boxes(lite0):
    """Grad-CAM maps of EfficientNet-Lite0 on 6 validation images, with their boxes through the preprocessing."""
    from opticam import load_image
    from opticam.methods import create_method

    labels = VAL_BOXES / "labels.csv"
    if not labels.is_file():
        pytest.skip(f"ImageNet validation boxes not found at {VAL_BOXES}")
    with labels.open() as f:
        rows = list(csv.DictReader(f))[:6]
    boxes_by_file: dict[str, list] = {}
    with (VAL_BOXES / "boxes.csv").open() as f:
        for r in csv.DictReader(f):
            boxes_by_file.setdefault(r["file"], []).append(tuple(float(r[k]) for k in ("x0", "y0", "x1", "y1")))
    images, boxes = [], []
    for r in rows:
        image = load_image(VAL_BOXES / r["file"])
        images.append(lite0.preprocess(image))
        boxes.append(lite0.preprocess.transform_boxes(boxes_by_file[r["file"]], image.size))
    x = torch.stack(images)
    targets = torch.tensor([int(r["class_index"]) for r in rows])
    maps = create_method("gradcam", lite0).explain(x, targets).maps
    return x, targets, maps, boxes


def _quantus():
    try:
        import quantus
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available here"
        pytest.skip(f"Quantus cannot be imported here ({type(exc).__name__}: {exc}); pip install quantus")
    return quantus


def test_pointing_games_equal_quantus_on_real_maps(real_maps_and_boxes):
    quantus = _quantus()
    x, targets, maps, boxes = real_maps_and_boxes
    height, width = maps.shape[-2:]
    s = np.stack([box_mask(b, height, width).numpy() for b in boxes])[:, None].astype(np.float32)
    a = maps.numpy().astype(np.float64)
    kwargs = {"x_batch": x.numpy(), "y_batch": targets.numpy(), "a_batch": a, "s_batch": s}
    options = {"abs": False, "normalise": False, "disable_warnings": True}
    # Quantus's pointing game has no tolerance: compare with ours at tolerance 0. Quantus counts a hit
    # when *any* maximal pixel is inside; ours takes the first in raster order - real maps have one maximum.
    assert all(int((m == m.max()).sum()) == 1 for m in maps)
    theirs = quantus.PointingGame(**options)(model=None, **kwargs)
    ours = pointing_game(maps, boxes, tolerance=0)
    assert [bool(v) for v in theirs] == ours.tolist()
    # The 15-pixel protocol = Quantus on the boxes grown by 15 pixels (box_mask's tolerance).
    grown = np.stack([box_mask(b, height, width, tolerance=15).numpy() for b in boxes])[:, None].astype(np.float32)
    theirs = quantus.PointingGame(**options)(model=None, **{**kwargs, "s_batch": grown})
    assert [bool(v) for v in theirs] == pointing_game(maps, boxes).tolist()
    # Energy pointing game = Quantus's relevance mass accuracy (mass inside the mask / total mass).
    theirs = quantus.RelevanceMassAccuracy(**options)(model=None, **kwargs)
    np.testing.assert_allclose(energy_pointing_game(maps, boxes).numpy(), theirs, rtol=1e-5, atol=1e-6)
