"""Localization as a stored metric: pointing game, energy pointing game and box accuracy on real boxes.

The per-image functions live in :mod:`.localization` (pointing games) and :mod:`.box_accuracy`
(MaxBoxAccV2, top-1 localization); this module declares them as one metric, ``localization``, scored on
the images that have ground-truth boxes (carried through the model's preprocessing by the caller).

Per image it stores ``n_boxes``, ``pointing_game`` (hit within ``tolerance`` pixels, Zhang et al.'s 15),
``energy_pointing_game`` and ``box_ious`` (the best IoU at each of the 100 map thresholds). The summary, over
the images with boxes: pointing game and energy pointing game (percent), MaxBoxAccV2 (best threshold over
the images, mean of IoU 0.3 / 0.5 / 0.7) with the three accuracies, and top-1 localization.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..options import Option
from .box_accuracy import IOU_LEVELS, THRESHOLDS, box_accuracy, max_iou_per_threshold, top1_localization
from .declaration import Column, Metric, MetricInput, TableColumn
from .localization import energy_pointing_game, pointing_game

POINTING_TOLERANCE = 15.0  # pixels at the model's input resolution (Zhang et al.'s protocol)
KEYS = ("pointing_game", "energy_pointing_game", "max_box_acc", "top1_loc")


def _score(batch: MetricInput) -> list[dict[str, Any]]:
    tolerance = float(batch.options["tolerance"])
    out = []
    for m, image_boxes in zip(batch.maps, batch.boxes, strict=True):
        if not image_boxes:  # no boxes file (None), or none left inside the crop (0)
            out.append({"n_boxes": None if image_boxes is None else 0})
            continue
        out.append(
            {
                "n_boxes": len(image_boxes),
                "pointing_game": int(pointing_game(m[None], [image_boxes], tolerance=tolerance)[0]),
                "energy_pointing_game": float(energy_pointing_game(m[None], [image_boxes])[0]),
                "box_ious": json.dumps([float(v) for v in max_iou_per_threshold(m, image_boxes)]),
            }
        )
    return out


def localization_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The localization averages of one method's rows (percent), over the rows with boxes."""
    scored = [r for r in rows if r.get("n_boxes") and r.get("box_ious") is not None]
    if not scored:
        return {**dict.fromkeys(KEYS), "box_acc": None, "n_boxes": 0}
    ious = [json.loads(r["box_ious"]) for r in scored]
    acc = box_accuracy(ious)
    correct = [r["predicted"] == r["label"] for r in scored]
    n = len(scored)
    return {
        "pointing_game": 100 * sum(r["pointing_game"] for r in scored) / n,
        "energy_pointing_game": 100 * sum(r["energy_pointing_game"] for r in scored) / n,
        "max_box_acc": 100 * acc.max_box_acc,
        "box_acc": {f"{level:g}": 100 * v for level, v in acc.per_level.items()},
        "top1_loc": 100 * top1_localization(ious, correct),
        "n_boxes": n,
    }


def _record(options: Mapping[str, Any], input_size: tuple[int, int]) -> dict[str, Any]:
    return {
        "pointing_tolerance": float(options["tolerance"]),
        "box_thresholds": [THRESHOLDS[0], THRESHOLDS[-1], len(THRESHOLDS)],
        "iou_levels": list(IOU_LEVELS),
    }


METRIC = Metric(
    name="localization",
    description="pointing game, energy pointing game, MaxBoxAccV2 and top-1 localization on ground-truth boxes",
    columns=(
        Column("n_boxes", "INTEGER", "ground-truth boxes left after preprocessing; NULL = not scored"),
        Column("pointing_game", "INTEGER", "1 if the map's maximum is within 15 px of a box, else 0"),
        Column("energy_pointing_game", "REAL", "share of the map's sum inside the union of the boxes"),
        Column("box_ious", "TEXT", "JSON: best IoU at each box threshold 0, 0.01, ..., 0.99"),
    ),
    score=_score,
    aggregate=localization_summary,
    table=(
        TableColumn("n_boxes", "n box", None, digits=0),
        TableColumn("pointing_game", "PG", "higher"),
        TableColumn("energy_pointing_game", "EPG", "higher"),
        TableColumn("max_box_acc", "MaxBoxAcc", "higher"),
        TableColumn("top1_loc", "Top1Loc", "higher"),
    ),
    needs_boxes=True,
    options=(
        Option(
            "tolerance",
            "float",
            POINTING_TOLERANCE,
            "pointing game: pixels (at the model's input) a map's maximum may lie outside a box and still hit it",
            low=0,
            paper=POINTING_TOLERANCE,
        ),
    ),
    record=_record,
    note="Localization (percent, images with a ground-truth box, at the model's input): pointing game, "
    "energy pointing game, MaxBoxAccV2 and top-1 localization (docs/evaluation.md).",
)
