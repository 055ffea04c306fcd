"""The resumable benchmark runner: maps and every selected metric's per-image values, per image and method.

The image list is cut into fixed chunks (:func:`chunks`) of ``batch_size`` (by position in the dataset
order). For each chunk and each method with images still missing from the store, the runner computes the
maps and their diagnostics, then each selected metric's per-image values through its declaration
(:mod:`opticam.metrics.registry`: AD/AG/AI terms, insertion/deletion, localization on the boxes carried
through the model's preprocessing, ROAD), then stores the chunk's rows for that method in one transaction.
A killed run restarted with the same configuration sees the same chunks, skips the stored ones and
recomputes only the chunk in flight, so nothing is counted twice and the table equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..errors import ImageLoadError, UsageError
from ..methods.base import SaliencyMethod
from ..metrics.declaration import Box, MetricInput
from ..metrics.localization_scores import POINTING_TOLERANCE
from ..metrics.registry import DEFAULT_METRICS, METRICS, metric_entry
from ..models.loading import LoadedModel
from .dataset import Sample, fingerprint, read_sample
from .store import ResultRow, ResultStore

TARGETS = ("gt", "pred")
CONFIG_SCHEMA = 2
"""2: methods recorded per run in the store's ``methods`` table (not in the run id), metrics by declaration
under ``metrics``; 1 (before): ``method_options``, ``insdel`` and ``localization`` keys."""


@dataclass
class EvaluationSettings:
    """What a run computes. Everything that changes a stored number is part of :func:`run_config`.

    Attributes:
        target: ``gt`` explains and scores the ground-truth class (paper, Table 1); ``pred`` the top-1 class.
        metrics: the metrics to score (:data:`opticam.metrics.registry.METRICS` names); ``None``: the default
            ones (:data:`~opticam.metrics.registry.DEFAULT_METRICS`, ``localization`` only with boxes, and
            none whose options ask for nothing: ``insdel`` at ``step=0``).
        metric_options: per metric, options over its declared defaults (``{"insdel": {"step": 112}}``),
            checked by the declarations when the settings are made.
        batch_size: images per chunk (one method call and one store transaction per chunk and method).
    """

    target: str = "gt"
    batch_size: int = 8
    metrics: tuple[str, ...] | None = None
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {self.batch_size!r}")
        for name in [*(self.metrics or ()), *self.metric_options]:
            metric_entry(name)  # an unknown name: a UsageError naming the known ones
        for name, given in self.metric_options.items():
            METRICS[name].with_options(given)  # a bad option: a one-line error naming it

    def for_dataset(self, has_boxes: bool) -> EvaluationSettings:
        """The settings with ``metrics`` resolved for a data set with or without boxes.

        Raises:
            UsageError: a metric that needs boxes was asked for on a data set without them, or a metric was
                asked for with options that score nothing (``insdel(step=0)``).
        """
        asked = self.metrics
        names = list(DEFAULT_METRICS if asked is None else asked)
        for name in list(names):
            metric = METRICS[name]
            if metric.is_skipped(self.options(name)):
                if asked is not None:
                    raise UsageError(
                        f"--metrics {name} with options that score nothing ({self.metric_options.get(name)}): "
                        "choose one (leave the metric out, or give it options that score)"
                    )
                names.remove(name)
            elif metric.needs_boxes and not has_boxes:
                if asked is not None:
                    raise UsageError(f"--metrics {name} needs ground-truth boxes (a boxes.csv or --boxes FILE)")
                names.remove(name)
        return replace(self, metrics=tuple(n for n in METRICS if n in names))

    def selected(self) -> tuple[str, ...]:
        """The metrics this run scores (resolved as for a data set without boxes when not resolved yet)."""
        return self.metrics if self.metrics is not None else self.for_dataset(False).metrics or ()

    def options(self, name: str) -> dict[str, Any]:
        """Metric ``name``'s options in force: its declared defaults, with the run's ``metric_options``."""
        return METRICS[name].with_options(self.metric_options.get(name, {}))


def run_config(
    loaded: LoadedModel,
    *,
    dataset_root: str,
    layer: str | None,
    settings: EvaluationSettings,
    checkpoint: str | None = None,
    random_weights: bool = False,
    boxes: str | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """The configuration whose hash identifies a run: model, weights, layer, target, data set, and each
    selected metric with what it records (method list, limit, batch sizes and device excluded; each method's
    settings are recorded per run in the store's ``methods`` table, so adding a method keeps the run).

    ``model``: the model as the run records it (default ``loaded.name``; the command line gives a factory
    file relative to the result file, as it does the data set)."""
    size = loaded.input_size
    # models/ (issue 27, part 8): packaged weights that the name alone does not pin (torchvision:mobilenet_v2's
    # IMAGENET1K_V1 file) are recorded; absent otherwise, so every other run's key stays as it was.
    weights = {"weights": loaded.weights_id} if getattr(loaded, "weights_id", None) else {}
    return {
        **weights,
        "schema": CONFIG_SCHEMA,
        "model": model or loaded.name,
        "checkpoint": checkpoint,
        "random_weights": random_weights,
        "layer": layer or loaded.resolved_layer(),  # a layer found automatically is recorded by name
        "input_size": list(size),
        "target": settings.target,
        "dataset": dataset_root,
        "boxes": boxes,
        "metrics": {name: METRICS[name].recorded(settings.options(name), size) for name in settings.selected()},
    }


def run_metrics(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{metric: recorded settings}`` of a run, for configurations of either schema (1: before
    declarations, when drop-gain was always scored, insertion/deletion under ``insdel`` and localization
    under ``localization``)."""
    if "metrics" in config:
        return dict(config["metrics"])
    out: dict[str, dict[str, Any]] = {"drop-gain": {}}
    if config.get("insdel"):
        out["insdel"] = config["insdel"]
    if config.get("localization"):
        out["localization"] = config["localization"]
    return out


@dataclass(frozen=True)
class ChunkStored:
    """What one stored chunk's callback is told, the same in one process and on a Ray pool.

    Attributes:
        rows: rows stored in this chunk's transaction.
        added: rows stored so far by this call, per method.
        worker: the Ray worker that computed the chunk (its index in the pool); ``None`` in one process.
    """

    rows: int
    added: Mapping[str, int]
    worker: int | None = None

    @property
    def total(self) -> int:
        """Rows stored so far by this call, all methods together."""
        return sum(self.added.values())


OnChunk = Callable[[ChunkStored], None]
"""``on_chunk(event)`` after each chunk is stored (before a Ray worker gets its next one): the one callback
of :func:`evaluate` and :func:`~opticam.evaluation.distributed.evaluate_on_ray`."""


def chunks(samples: Sequence[Sample], batch_size: int) -> list[list[Sample]]:
    """The run's fixed chunks: ``batch_size`` images by position in the dataset order (the last may be short).

    Every way of running (one process, a Ray worker pool) uses these, so the batches, and the numbers,
    are the same.
    """
    return [list(samples[start : start + batch_size]) for start in range(0, len(samples), batch_size)]


def pending(
    samples: Sequence[Sample], methods: Sequence[str], store: ResultStore, run_id: str, batch_size: int
) -> list[tuple[int, dict[str, list[Sample]]]]:
    """``(chunk number, {method: images not stored yet})`` for each chunk with anything left to compute.

    A stored row whose input fingerprint (:func:`~opticam.evaluation.dataset.fingerprint`: the image's bytes,
    label and boxes) differs from its sample's now is stale: it is deleted and computed again, so an edited
    ``labels.csv`` or ``boxes.csv`` or a replaced image never brings back an old number.
    """
    current = {s.key: fingerprint(s) for s in samples}
    done: dict[str, set[str]] = {}
    for name in methods:
        stored = store.fingerprints(run_id, name)
        stale = [key for key, value in stored.items() if key in current and value != current[key]]
        if stale:
            print_report(f"{name}: {len(stale)} stored row(s) came from an older version of their image, label or "
                         f"boxes ({stale[0]}{', ...' if len(stale) > 1 else ''}); computing them again")  # fmt: skip
            store.forget(run_id, name, stale)
        done[name] = set(stored) - set(stale)
    out = []
    for number, chunk in enumerate(chunks(samples, batch_size)):
        wanted = {name: [s for s in chunk if s.key not in done[name]] for name in methods}
        if any(wanted.values()):
            out.append((number, wanted))
    return out


Report = Callable[[str], None]
"""``report(message)`` for an image that cannot be read (stderr in one process; sent back by a Ray worker)."""


def print_report(message: str) -> None:
    """The default :data:`Report`: one ``opticam: ...`` line on stderr."""
    print(f"opticam: {message}", file=sys.stderr)


def chunk_rows(
    loaded: LoadedModel,
    methods: dict[str, SaliencyMethod],
    wanted: dict[str, list[Sample]],
    settings: EvaluationSettings,
    device: str | torch.device,
    report: Report = print_report,
) -> Iterator[tuple[str, list[ResultRow]]]:
    """Turn one chunk into rows: decode its images once, then ``(method, rows)`` for each method in turn.

    ``wanted`` is one entry of :func:`pending`. Images that cannot be read go to ``report`` and are left
    out (not stored, so retried by the next run, never in a loop). This is the one per-chunk computation:
    :func:`evaluate` and the Ray workers of :mod:`.distributed` both call it.
    """
    images, boxes, hashes = _load(loaded, {s for group in wanted.values() for s in group}, report)
    for name, method in methods.items():
        group = [s for s in wanted.get(name, []) if s in images]
        rows: list[ResultRow] = []
        if group:
            x = torch.stack([images[s] for s in group]).to(device)
            rows = _evaluate_chunk(
                loaded, method, name, group, x, settings, str(device), [boxes[s] for s in group], hashes
            )
        yield name, rows


def evaluate(
    loaded: LoadedModel,
    samples: Sequence[Sample],
    methods: dict[str, SaliencyMethod],
    store: ResultStore,
    run_id: str,
    settings: EvaluationSettings,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_chunk: OnChunk | None = None,
) -> dict[str, int]:
    """Compute and store every missing (image, method) row of the run; returns rows added per method;
    ``on_chunk`` is told of each stored chunk (:class:`ChunkStored`).

    Images that cannot be read are reported on stderr and skipped (not stored, so retried next time).
    To run on several processes or machines, see :func:`opticam.evaluation.distributed.evaluate_on_ray`
    (same chunks, same numbers).
    """
    todo_chunks = pending(samples, list(methods), store, run_id, settings.batch_size)
    todo = sum(len(group) for _, wanted in todo_chunks for group in wanted.values())
    added = dict.fromkeys(methods, 0)
    bar = progress_bar(todo, len(samples), len(methods)) if progress else None
    try:
        for _, wanted in todo_chunks:
            for name, rows in chunk_rows(loaded, methods, wanted, settings, device):
                if rows:
                    store.add(run_id, rows)
                    added[name] += len(rows)
                    if on_chunk is not None:
                        on_chunk(ChunkStored(len(rows), dict(added)))
                if bar is not None:
                    bar.set_postfix(method=name)
                    bar.update(len(wanted[name]))
    finally:
        if bar is not None:
            bar.close()
    return added


def progress_bar(total: int, images: int, methods: int, unit: str = "map"):
    """The evaluation's progress bar on stderr, ``total`` (image, method) rows to compute."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"evaluate {images} images x {methods} methods", unit=unit, file=sys.stderr)


def _load(
    loaded: LoadedModel, samples: set[Sample], report: Report
) -> tuple[dict[Sample, torch.Tensor], dict[Sample, list[Box] | None], dict[Sample, str]]:
    """Preprocessed images, each one's boxes through the same preprocessing (``None``: no boxes), and each
    one's input fingerprint.

    Each file is read once per chunk (not once per method), and its fingerprint is of the bytes that were
    decoded (:func:`~opticam.evaluation.dataset.read_sample`): a stored row always names the pixels it was
    computed from, so a file edited since is seen as changed by the next run.
    """
    images: dict[Sample, torch.Tensor] = {}
    boxes: dict[Sample, list[Box] | None] = {}
    hashes: dict[Sample, str] = {}
    for s in sorted(samples, key=lambda s: s.key):
        try:
            image, hashes[s] = read_sample(s)
            images[s] = loaded.preprocess(image)
        except ImageLoadError as exc:
            report(f"skipping {s.key}: {exc}")
            continue
        boxes[s] = None if s.boxes is None else loaded.preprocess.transform_boxes(s.boxes, image.size)
    return images, boxes, hashes


def _evaluate_chunk(
    loaded: LoadedModel,
    method: SaliencyMethod,
    name: str,
    group: Sequence[Sample],
    x: torch.Tensor,
    settings: EvaluationSettings,
    device: str,
    boxes: Sequence[list[Box] | None] | None = None,
    hashes: dict[Sample, str] | None = None,
) -> list[ResultRow]:
    """One method on one chunk: its maps, then every selected metric's per-image values, as rows
    (``hashes``: the fingerprints :func:`_load` took; computed here when not given)."""
    labels = torch.tensor([s.class_index for s in group], device=x.device)
    result = method.explain(x, labels if settings.target == "gt" else None)
    predicted = result.logits.argmax(dim=1)
    values: list[dict[str, Any]] = [{} for _ in group]
    for metric_name in settings.selected():
        batch = MetricInput(
            model=loaded.model,
            x=x,
            maps=result.maps,
            classes=result.class_indices,
            labels=labels,
            predicted=predicted,
            boxes=boxes if boxes is not None else [None] * len(group),
            options=settings.options(metric_name),
        )
        for row, scored in zip(values, METRICS[metric_name].score(batch), strict=True):
            row.update(scored)
    rows = []
    for i, s in enumerate(group):
        extra = result.record(i)
        iterations = extra.pop("iterations", None)
        rows.append(
            ResultRow(
                image=s.key,
                method=name,
                label=s.class_index,
                class_index=int(result.class_indices[i]),
                predicted=int(predicted[i]),
                seconds=result.seconds / len(group),
                iterations=None if iterations is None else int(iterations),
                extra=json.dumps(extra) if extra else None,
                device=device,
                input_hash=hashes[s] if hashes is not None else fingerprint(s),
                values=values[i],
            )
        )
    return rows


__all__ = [
    "CONFIG_SCHEMA",
    "POINTING_TOLERANCE",
    "TARGETS",
    "ChunkStored",
    "EvaluationSettings",
    "OnChunk",
    "chunk_rows",
    "chunks",
    "evaluate",
    "pending",
    "run_config",
    "run_metrics",
]
