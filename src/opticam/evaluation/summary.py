"""From stored rows to the paper-style table (Markdown) and the JSON summary.

Per method over its n stored images:

* AD, AG, AI: 100 x the mean of the per-image terms (method doc, section 3);
* I, D: 100 x the mean insertion / deletion AUC (``None`` when the run skipped them);
* T: mean seconds per image of the method itself (map computation only, not the evaluation).

Localization, over the images that have ground-truth boxes left after preprocessing (``n_boxes`` of them;
``None`` everywhere when there are none):

* pointing_game: 100 x the share of hits (map maximum within 15 px of a box);
* energy_pointing_game: 100 x the mean share of the map's sum inside the boxes;
* max_box_acc: MaxBoxAccV2 in percent (best threshold over these images, mean of IoU 0.3 / 0.5 / 0.7),
  with ``box_acc`` the three accuracies;
* top1_loc: 100 x the share of images with the right top-1 class and IoU >= 0.5 at the best threshold.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from ..metrics.box_accuracy import box_accuracy, top1_localization

LOCALIZATION_KEYS = ("pointing_game", "energy_pointing_game", "max_box_acc", "top1_loc")


def localization_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The localization averages of one method's rows (percent), over the rows with boxes."""
    scored = [r for r in rows if r.get("n_boxes") and r.get("box_ious") is not None]
    if not scored:
        return {**dict.fromkeys(LOCALIZATION_KEYS), "box_acc": None, "n_boxes": 0}
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


def summarize(rows: Iterable[dict[str, Any]], methods: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{method: {"AD", "AG", "AI", "insertion", "deletion", "seconds_per_image", "n", + the localization keys}}``.

    Methods appear in the order of ``methods`` (when given) or of their first row.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["method"], []).append(row)
    order = [m for m in methods if m in groups] if methods is not None else list(groups)
    out: dict[str, dict[str, Any]] = {}
    for method in order:
        g = groups[method]
        n = len(g)
        ins = [r["insertion"] for r in g if r["insertion"] is not None]
        dele = [r["deletion"] for r in g if r["deletion"] is not None]
        out[method] = {
            "AD": 100 * sum(r["ad_term"] for r in g) / n,
            "AG": 100 * sum(r["ag_term"] for r in g) / n,
            "AI": 100 * sum(r["ai_term"] for r in g) / n,
            "insertion": 100 * sum(ins) / len(ins) if ins else None,
            "deletion": 100 * sum(dele) / len(dele) if dele else None,
            "seconds_per_image": sum(r["seconds"] for r in g) / n,
            "n": n,
            **localization_summary(g),
        }
    return out


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(summary: dict[str, dict[str, Any]], *, timing: bool = True) -> str:
    """The paper-style table: method, n, AD↓, AG↑, AI↑, I↑, D↓ and (unless ``timing=False``) T.

    When some method has localization scores, the columns ``n box`` (images scored), ``PG↑``, ``EPG↑``,
    ``MaxBoxAcc↑`` and ``Top1Loc↑`` follow (percent); a table without boxes is as before.
    """
    boxes = any(s.get("n_boxes") for s in summary.values())
    head = ["method", "n", "AD↓", "AG↑", "AI↑", "I↑", "D↓"]
    head += ["n box", "PG↑", "EPG↑", "MaxBoxAcc↑", "Top1Loc↑"] if boxes else []
    head += ["T (s/img)"] if timing else []
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([" --- "] * len(head)) + "|"]
    for method, s in summary.items():
        cells = [
            method,
            str(s["n"]),
            _cell(s["AD"]),
            _cell(s["AG"]),
            _cell(s["AI"]),
            _cell(s["insertion"]),
            _cell(s["deletion"]),
        ]
        if boxes:
            cells += [str(s.get("n_boxes") or 0)] + [_cell(s.get(k)) for k in LOCALIZATION_KEYS]
        if timing:
            cells.append(_cell(s["seconds_per_image"], 3))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_json(summary: dict[str, dict[str, Any]], run_id: str, config: dict[str, Any]) -> str:
    """``{"methods": {...}, "run_id": ..., "config": ...}`` as indented JSON."""
    return json.dumps({"methods": summary, "run_id": run_id, "config": config}, indent=2) + "\n"
