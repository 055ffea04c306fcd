"""The registered metrics: what ``--metrics`` takes, and what the store, tables, JSON and report derive from.

Adding a metric is one module with a :class:`~opticam.metrics.declaration.Metric` declaration and one line
here (docs/architecture.md, "Where to add a metric").
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import UsageError
from . import drop_gain, insdel, localization_scores, road
from .declaration import Column, Metric

METRICS: dict[str, Metric] = {
    m.name: m for m in (drop_gain.METRIC, insdel.METRIC, localization_scores.METRIC, road.METRIC)
}
"""Metric name -> declaration, in table order."""

DEFAULT_METRICS = ("drop-gain", "insdel", "localization")
"""What ``evaluate`` scores when ``--metrics`` is not given (``localization`` only where there are boxes)."""


def metric_columns() -> list[Column]:
    """Every registered metric's stored columns, in registry order (the store's metric columns)."""
    return [c for m in METRICS.values() for c in m.columns]


def parse_metric_list(text: str | Sequence[str]) -> list[str]:
    """``"drop-gain,road"`` (or a list) -> checked names, duplicates dropped, in registry order.

    Raises:
        UsageError: an empty list or an unknown name (naming the known ones).
    """
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if not names:
        raise UsageError("the metric list is empty; name at least one metric")
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UsageError(f"unknown metric {unknown[0]!r}; choose among: {', '.join(METRICS)}")
    return [n for n in METRICS if n in names]
