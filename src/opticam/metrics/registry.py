"""The registered metrics: what ``--metrics`` takes, and what the store, tables, JSON and report derive from.

Adding a metric is one module with a :class:`~opticam.metrics.declaration.Metric` declaration and one line
here (docs/architecture.md, "Where to add a metric"). ``--metrics`` takes the same spec syntax as
``--methods``: ``drop-gain,insdel(step=224,batch=32),road(percentiles=10;50;90)``, each option checked by
the metric's declaration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigValueError, UsageError
from ..options import canonical, parse_options, parse_spec, split_specs
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


def metric_entry(name: str) -> Metric:
    """The declaration of ``name``; a ``UsageError`` naming the known metrics otherwise."""
    if name not in METRICS:
        raise UsageError(f"unknown metric {name!r}; choose among: {', '.join(METRICS)}")
    return METRICS[name]


@dataclass(frozen=True)
class MetricSpec:
    """A metric with options, as ``--metrics`` writes it: ``insdel(step=224)``; ``options`` holds the checked
    values that differ from the defaults."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


def parse_metric_specs(text: str | Sequence[str]) -> list[MetricSpec]:
    """``"drop-gain,insdel(step=112)"`` (or a list) -> checked specs in registry order (a metric named twice
    keeps its last options).

    Raises:
        UsageError: an empty list, an unknown name (naming the known ones), a malformed spec or a bad option.
    """
    texts = [text] if isinstance(text, str) else list(text)
    items = [t for item in texts for t in split_specs(item, "metric")]
    if not items:
        raise UsageError("the metric list is empty; name at least one metric")
    found: dict[str, MetricSpec] = {}
    for item in items:
        raw = parse_spec(item, "metric")
        metric = metric_entry(raw.name)
        owner = f"metric {raw.name}"
        values = parse_options(metric.options, raw.options, owner)
        found[raw.name] = MetricSpec(raw.name, canonical(metric.options, values, owner))
    return [found[name] for name in METRICS if name in found]


def parse_metric_list(text: str | Sequence[str]) -> list[str]:
    """``"drop-gain,road"`` (or a list) -> checked names, duplicates dropped, in registry order."""
    return [spec.name for spec in parse_metric_specs(text)]


def metric_options_with_flags(
    specs: Sequence[MetricSpec] | None, flags: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Per metric, the options a run sets: what command-line flags fill (each declared option whose ``flag``,
    an argparse dest, is in ``flags`` and not ``None``: ``--insdel-step`` fills ``insdel``'s ``step``), under
    what the specs say (a spec's own options win). Every registered metric gets an entry when a flag fills
    one of its options, so that ``--insdel-step 0`` also reaches the default metrics."""
    out: dict[str, dict[str, Any]] = {}
    for name, metric in METRICS.items():
        for option in metric.options:
            value = flags.get(option.flag) if option.flag else None
            if value is None:
                continue
            try:
                checked = option.check(value, f"metric {name}")
            except ConfigValueError as exc:
                raise UsageError(f"--{option.flag.replace('_', '-')} {value}: {exc}") from None
            out.setdefault(name, {})[option.name] = checked
    for spec in specs or ():
        out[spec.name] = {**out.get(spec.name, {}), **spec.options}
    return out


def describe_metrics() -> list[dict[str, Any]]:
    """Every metric with its description and its options as table rows (``opticam metrics``)."""
    return [{"name": m.name, "summary": m.description, "options": m.describe()} for m in METRICS.values()]
