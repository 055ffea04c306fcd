"""How a metric is declared once, so that everything else follows from the declaration.

A :class:`Metric` says what ``opticam evaluate`` needs to know about one metric: its name (what
``--metrics`` takes), the per-image function that scores a batch of maps, the values it stores per image
(:class:`Column`: the result store's columns), the numbers of the summary (its ``aggregate`` over one
method's rows gives the JSON keys; its :class:`TableColumn` s are the table's columns, with higher or lower
being better), whether it needs ground-truth boxes, its options and what of them a run records.

The store's schema, the summary table, the JSON, the HTML report and ``--metrics`` are all derived from
the declarations registered in :mod:`opticam.metrics.registry`; nothing else lists a metric's columns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..options import Option, describe, settings, with_defaults

SqlType = Literal["REAL", "INTEGER", "TEXT"]
Box = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` in pixels of the model's input, ``x1``/``y1`` exclusive."""


@dataclass(frozen=True)
class Column:
    """A per-image value a metric stores: a nullable column of the ``results`` table.

    Attributes:
        name: the column name (unique over all metrics).
        sql: its SQLite type.
        doc: what it holds (the schema's comment).
        summary: the summary reads it (``False`` for bulky values such as curves, read only by reports).
    """

    name: str
    sql: SqlType
    doc: str
    summary: bool = True


@dataclass(frozen=True)
class TableColumn:
    """A column of the summary table: the JSON key it shows, its header and which way is better."""

    key: str
    header: str
    better: Literal["higher", "lower"] | None = None
    digits: int = 1

    @property
    def label(self) -> str:
        """The header with its arrow: ``AD↓``, ``AG↑``."""
        return self.header + {"higher": "↑", "lower": "↓", None: ""}[self.better]


@dataclass(frozen=True)
class MetricInput:
    """What a metric's per-image function gets for one batch of one method.

    Attributes:
        model: the classifier (pixel space, frozen by the caller).
        x: ``[B, C, H, W]`` the images.
        maps: ``[B, 1, H, W]`` in [0, 1], the method's maps.
        classes: ``[B]`` the explained class of each map.
        labels: ``[B]`` the ground-truth classes.
        predicted: ``[B]`` the top-1 classes on the unmasked images.
        boxes: per image, its ground-truth boxes at the model's input resolution (``None``: none given).
        options: this metric's options (its defaults updated with the run's values).
    """

    model: nn.Module
    x: torch.Tensor
    maps: torch.Tensor
    classes: torch.Tensor
    labels: torch.Tensor
    predicted: torch.Tensor
    boxes: Sequence[list[Box] | None]
    options: Mapping[str, Any]


Scorer = Callable[[MetricInput], list[dict[str, Any]]]
"""Per image of the batch, ``{column name: value}`` (``None`` for a value that does not apply)."""
Aggregate = Callable[[Sequence[Mapping[str, Any]]], dict[str, Any]]
"""One method's stored rows -> the summary's numbers by JSON key."""
Recorder = Callable[[Mapping[str, Any], tuple[int, int]], dict[str, Any]]
"""``(options, input size) -> what a run records`` (default: the options that change numbers)."""


@dataclass(frozen=True)
class Metric:
    """One metric, declared once (see the module docstring).

    Attributes:
        name: what ``--metrics`` and the run configuration call it (``drop-gain``, ``insdel``, ...).
        description: one line for help texts and the docs.
        columns: the per-image values it stores.
        score: the per-image function (:data:`Scorer`).
        aggregate: the summary over one method's rows (:data:`Aggregate`), percent where the paper uses it.
        table: the summary table's columns it adds, in order.
        needs_boxes: scored only on data sets with ground-truth boxes.
        options: its options, declared once (:class:`~opticam.options.Option`: kind, default, range, help,
            speed-only or not, the command-line flag that fills it); ``--metrics "insdel(step=224)"`` parses
            them, ``opticam metrics`` and the docs list them.
        record: what a run records from the options (default: every option but the speed-only ones).
        skipped: ``skipped(options) -> True`` when the options ask for nothing to be scored (insertion /
            deletion at ``step=0``): the metric is then left out of a run's default metrics.
        note: how to read the metric's numbers in the HTML report (one paragraph; empty: none).
    """

    name: str
    description: str
    columns: tuple[Column, ...]
    score: Scorer
    aggregate: Aggregate
    table: tuple[TableColumn, ...]
    needs_boxes: bool = False
    options: tuple[Option, ...] = ()
    record: Recorder | None = None
    skipped: Callable[[Mapping[str, Any]], bool] | None = None
    note: str = ""

    def with_options(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The options in force: the defaults, with ``given`` checked by the declarations (an unknown name is
        a :class:`~opticam.errors.UsageError`, a bad value a :class:`~opticam.errors.ConfigValueError`)."""
        return with_defaults(self.options, dict(given or {}), f"metric {self.name}")

    def recorded(self, options: Mapping[str, Any], input_size: tuple[int, int]) -> dict[str, Any]:
        """What a run's configuration records for this metric (a change of it makes a separate run)."""
        if self.record is not None:
            return self.record(options, input_size)
        return settings(self.options, options)

    def is_skipped(self, options: Mapping[str, Any]) -> bool:
        """The options in force ask for nothing to be scored (see :attr:`skipped`)."""
        return self.skipped is not None and self.skipped(options)

    def describe(self) -> list[dict[str, str]]:
        """The options as table rows (``opticam metrics``, docs/evaluation.md)."""
        return describe(self.options)


def mean(values: Sequence[float | int | None], scale: float = 1.0) -> float | None:
    """``scale`` x the mean of the values that are not ``None``; ``None`` when there are none."""
    kept = [v for v in values if v is not None]
    return scale * sum(kept) / len(kept) if kept else None
