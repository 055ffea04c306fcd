"""From stored rows to the paper-style table (Markdown) and the JSON summary.

Per method over its n stored images:

* AD, AG, AI: 100 x the mean of the per-image terms (method doc, section 3);
* I, D: 100 x the mean insertion / deletion AUC (``None`` when the run skipped them);
* T: mean seconds per image of the method itself (map computation only, not the evaluation).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any


def summarize(rows: Iterable[dict[str, Any]], methods: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{method: {"AD", "AG", "AI", "insertion", "deletion", "seconds_per_image", "n"}}``.

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
        }
    return out


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(summary: dict[str, dict[str, Any]], *, timing: bool = True) -> str:
    """The paper-style table: method, n, AD↓, AG↑, AI↑, I↑, D↓ and (unless ``timing=False``) T."""
    head = ["method", "n", "AD↓", "AG↑", "AI↑", "I↑", "D↓"] + (["T (s/img)"] if timing else [])
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
        if timing:
            cells.append(_cell(s["seconds_per_image"], 3))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_json(summary: dict[str, dict[str, Any]], run_id: str, config: dict[str, Any]) -> str:
    """``{"methods": {...}, "run_id": ..., "config": ...}`` as indented JSON."""
    return json.dumps({"methods": summary, "run_id": run_id, "config": config}, indent=2) + "\n"
