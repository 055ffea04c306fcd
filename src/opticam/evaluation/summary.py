"""From stored rows to the paper-style table (Markdown) and the JSON summary, derived from the metric
declarations (:mod:`opticam.metrics.registry`).

Per method over its n stored images: each of the run's metrics adds the numbers its declaration
aggregates (AD / AG / AI and I / D in percent, the localization scores over the images with boxes, ROAD as
pytorch-grad-cam gives it), under the JSON keys the declaration names; ``seconds_per_image`` is the
method's own time per image (map computation only, not the evaluation), and ``diagnostics`` the means of
what the method measured (iterations, passes per map, objective before and after; only those it measures).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..metrics.declaration import Metric, TableColumn, mean
from ..metrics.localization_scores import KEYS as LOCALIZATION_KEYS
from ..metrics.localization_scores import localization_summary
from ..metrics.registry import METRICS

__all__ = ["LOCALIZATION_KEYS", "localization_summary", "markdown_table", "summarize", "summary_json", "table_rows"]


def present_metrics(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The metrics with a value in some row (for rows whose run configuration is not at hand)."""
    return [
        name
        for name, metric in METRICS.items()
        if any(r.get(c.name) is not None for r in rows for c in metric.columns if c.summary)
    ]


def diagnostics_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Means of the methods' diagnostics over the rows that have them (the ``iterations`` column and the
    ``extra`` JSON)."""
    values: dict[str, list[float]] = {}
    for r in rows:
        if r.get("iterations") is not None:
            values.setdefault("iterations", []).append(r["iterations"])
        for key, value in json.loads(r["extra"]).items() if r.get("extra") else ():
            if isinstance(value, int | float):
                values.setdefault(key, []).append(value)
    return {key: sum(v) / len(v) for key, v in values.items()}


def summarize(
    rows: Iterable[dict[str, Any]], methods: Sequence[str] | None = None, metrics: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """``{method: {"n", each metric's keys, "seconds_per_image", "iterations", "diagnostics"}}``.

    ``metrics``: the run's metrics (default: those with values in the rows). Methods appear in the order
    of ``methods`` (when given) or of their first row.
    """
    rows = list(rows)
    names = list(metrics) if metrics is not None else present_metrics(rows)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["method"], []).append(row)
    order = [m for m in methods if m in groups] if methods is not None else list(groups)
    out: dict[str, dict[str, Any]] = {}
    for method in order:
        g = groups[method]
        entry: dict[str, Any] = {"n": len(g)}
        for name in names:
            entry.update(METRICS[name].aggregate(g))
        diagnostics = diagnostics_summary(g)
        entry["seconds_per_image"] = mean([r["seconds"] for r in g])
        entry["iterations"] = diagnostics.get("iterations")
        entry["diagnostics"] = diagnostics
        entry["metrics"] = names
        out[method] = entry
    return out


def _cell(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return str(int(value)) if digits == 0 else f"{value:.{digits}f}"


def table_columns(summary: Mapping[str, Mapping[str, Any]], *, timing: bool = True) -> list[TableColumn]:
    """The table's columns after ``method``: n, each metric's declared columns, mean iterations when some
    method iterates, and the time per image."""
    names = next((s.get("metrics") for s in summary.values()), None) or []
    metrics: list[Metric] = [METRICS[n] for n in names]
    columns = [TableColumn("n", "n", None, digits=0)] + [c for m in metrics for c in m.table]
    if any(s.get("iterations") is not None for s in summary.values()):
        columns.append(TableColumn("iterations", "steps", None, digits=1))
    if timing:
        columns.append(TableColumn("seconds_per_image", "T (s/img)", None, digits=3))
    return columns


def table_rows(summary: Mapping[str, Mapping[str, Any]], *, timing: bool = True) -> tuple[list[str], list[list[str]]]:
    """``(headers, rows of cells)`` of the summary table: the one layout the Markdown and HTML tables share."""
    columns = table_columns(summary, timing=timing)
    headers = ["method"] + [c.label for c in columns]
    cells = [[method] + [_cell(s.get(c.key), c.digits) for c in columns] for method, s in summary.items()]
    return headers, cells


def markdown_table(summary: dict[str, dict[str, Any]], *, timing: bool = True) -> str:
    """The paper-style table: method, n, each metric's columns (AD↓ AG↑ AI↑, I↑ D↓, the localization
    columns with boxes, ROAD↑ ...), mean steps for iterative methods, and (unless ``timing=False``) T."""
    headers, cells = table_rows(summary, timing=timing)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join([" --- "] * len(headers)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def summary_json(
    summary: dict[str, dict[str, Any]],
    run_id: str,
    config: dict[str, Any],
    methods: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """``{"methods": {...}, "run_id": ..., "config": ..., "method_settings": ...}`` as indented JSON."""
    doc: dict[str, Any] = {"methods": summary, "run_id": run_id, "config": config}
    if methods is not None:
        doc["method_settings"] = dict(methods)
    return json.dumps(doc, indent=2) + "\n"
