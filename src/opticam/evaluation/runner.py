"""The resumable benchmark runner: maps, AD/AG/AI terms and insertion/deletion per image and method.

The image list is cut into fixed chunks (:func:`chunks`) of ``batch_size`` (by position in the dataset order). For each
chunk and each method with images still missing from the store, the runner computes the maps, the
probabilities ``p`` and ``o``, the AD/AG/AI terms and (unless switched off) the insertion/deletion curves,
and, for images with ground-truth boxes, the localization scores (pointing game, energy pointing game and
the per-threshold IoUs behind box accuracy, all on the boxes carried through the model's preprocessing),
then stores the chunk's rows for that method in one transaction. A killed run restarted with the same
configuration sees the same chunks, skips the stored ones and recomputes only the chunk in flight, so
nothing is counted twice and the table equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ImageLoadError
from ..images import load_image
from ..methods.base import SaliencyMethod
from ..metrics.box_accuracy import IOU_LEVELS, THRESHOLDS, max_iou_per_threshold
from ..metrics.insdel import BLUR_KERNEL, BLUR_SIGMA, curve_counts, insertion_deletion
from ..metrics.localization import Box, energy_pointing_game, pointing_game
from ..models.loading import LoadedModel
from .dataset import Sample
from .scoring import explain_and_score
from .store import ResultRow, ResultStore

TARGETS = ("gt", "pred")
POINTING_TOLERANCE = 15.0  # pixels at the model's input resolution (Zhang et al.'s protocol)


@dataclass
class EvaluationSettings:
    """What a run computes. Everything that changes a stored number is part of :meth:`config`.

    Attributes:
        target: ``gt`` explains and scores the ground-truth class (paper, Table 1); ``pred`` the top-1 class.
        insdel_step: pixels per insertion/deletion step (224 = RISE at 224 x 224); 0 skips insertion/deletion.
        batch_size: images per chunk (one method call and one store transaction per chunk and method).
        insdel_batch: perturbed images per forward pass in insertion/deletion (speed only).
        method_options: per method name, the options that change its maps (recorded in the config).
    """

    target: str = "gt"
    insdel_step: int = 224
    batch_size: int = 8
    insdel_batch: int = 64
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.insdel_step < 0:
            raise ValueError(f"insdel_step must be >= 0 (0 = off), got {self.insdel_step}")
        if self.batch_size < 1 or self.insdel_batch < 1:
            raise ValueError("batch sizes must be at least 1")


def run_config(
    loaded: LoadedModel,
    *,
    dataset_root: str,
    layer: str | None,
    settings: EvaluationSettings,
    checkpoint: str | None = None,
    random_weights: bool = False,
    boxes: str | None = None,
) -> dict[str, Any]:
    """The configuration whose hash identifies a run (method list, limit, batch sizes and device excluded).

    ``boxes``: the ground-truth boxes file when the run scores localization. Only then does the config
    gain a ``localization`` key, so a run without boxes has exactly the configuration (and run id) it had
    before localization existed.
    """
    height, width = loaded.input_size
    insdel = None
    if settings.insdel_step:
        counts = curve_counts(height * width, settings.insdel_step)
        insdel = {
            "step": settings.insdel_step,
            "deletion_baseline": "zeros",
            "insertion_start": {"blur": "gaussian", "kernel": BLUR_KERNEL, "sigma": BLUR_SIGMA, "padding": "reflect"},
            "fractions": [c / (height * width) for c in counts],
        }
    config: dict[str, Any] = {
        "schema": 1,
        "model": loaded.name,
        "checkpoint": checkpoint,
        "random_weights": random_weights,
        "layer": layer or loaded.target_layer,
        "input_size": [height, width],
        "target": settings.target,
        "dataset": dataset_root,
        "insdel": insdel,
        "method_options": settings.method_options,
    }
    if boxes is not None:
        config["localization"] = {
            "boxes": boxes,
            "pointing_tolerance": POINTING_TOLERANCE,
            "box_thresholds": [THRESHOLDS[0], THRESHOLDS[-1], len(THRESHOLDS)],
            "iou_levels": list(IOU_LEVELS),
        }
    return config


ProgressHook = Callable[[str, int], None]
"""``hook(method, images_done)`` after each stored chunk (the SIGKILL test and progress bars use it)."""


def chunks(samples: Sequence[Sample], batch_size: int) -> list[list[Sample]]:
    """The run's fixed chunks: ``batch_size`` images by position in the dataset order (the last may be short).

    Every way of running (one process, a Ray worker pool) uses these, so the batches, and the numbers,
    are the same.
    """
    return [list(samples[start : start + batch_size]) for start in range(0, len(samples), batch_size)]


def pending(
    samples: Sequence[Sample], methods: Sequence[str], store: ResultStore, run_id: str, batch_size: int
) -> list[tuple[int, dict[str, list[Sample]]]]:
    """``(chunk number, {method: images not stored yet})`` for each chunk with anything left to compute."""
    done = {name: store.done(run_id, name) for name in methods}
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
    images, boxes = _load(loaded, {s for group in wanted.values() for s in group}, report)
    for name, method in methods.items():
        group = [s for s in wanted.get(name, []) if s in images]
        rows: list[ResultRow] = []
        if group:
            x = torch.stack([images[s] for s in group]).to(device)
            rows = _evaluate_chunk(loaded, method, name, group, x, settings, str(device), [boxes[s] for s in group])
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
    on_chunk: ProgressHook | None = None,
) -> dict[str, int]:
    """Compute and store every missing (image, method) row of the run; returns rows added per method.

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
                        on_chunk(name, added[name])
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
) -> tuple[dict[Sample, torch.Tensor], dict[Sample, list[Box] | None]]:
    """Preprocessed images, and each one's boxes through the same preprocessing (``None``: no boxes)."""
    images: dict[Sample, torch.Tensor] = {}
    boxes: dict[Sample, list[Box] | None] = {}
    for s in sorted(samples, key=lambda s: s.key):
        try:
            image = load_image(s.path)
            images[s] = loaded.preprocess(image)
        except ImageLoadError as exc:
            report(f"skipping {s.key}: {exc}")
            continue
        boxes[s] = None if s.boxes is None else loaded.preprocess.transform_boxes(s.boxes, image.size)
    return images, boxes


def localization_scores(maps: torch.Tensor, boxes: Sequence[list[Box] | None]) -> list[dict[str, Any]]:
    """Per image, the store's localization columns: ``n_boxes``, ``pointing_game``, ``energy_pointing_game``,
    ``box_ious`` (JSON). An image without boxes (none given, or none left inside the crop) gets NULLs, except
    ``n_boxes`` = 0 when it had a boxes entry."""
    out = []
    for m, image_boxes in zip(maps, boxes, strict=True):
        if not image_boxes:
            out.append({"n_boxes": None if image_boxes is None else 0})
            continue
        out.append(
            {
                "n_boxes": len(image_boxes),
                "pointing_game": int(pointing_game(m[None], [image_boxes], tolerance=POINTING_TOLERANCE)[0]),
                "energy_pointing_game": float(energy_pointing_game(m[None], [image_boxes])[0]),
                "box_ious": json.dumps([float(v) for v in max_iou_per_threshold(m, image_boxes)]),
            }
        )
    return out


def _evaluate_chunk(
    loaded: LoadedModel,
    method: SaliencyMethod,
    name: str,
    group: Sequence[Sample],
    x: torch.Tensor,
    settings: EvaluationSettings,
    device: str,
    boxes: Sequence[list[Box] | None] | None = None,
) -> list[ResultRow]:
    labels = torch.tensor([s.class_index for s in group], device=x.device)
    targets = labels if settings.target == "gt" else None
    scored = explain_and_score(method, loaded.model, x, targets, name=name)
    result, classes, p, o, terms = scored.result, scored.classes, scored.p, scored.o, scored.terms
    predicted = result.logits.argmax(dim=1)
    curves = None
    if settings.insdel_step:
        curves = insertion_deletion(
            loaded.model, x, result.maps, classes, step=settings.insdel_step, batch_size=settings.insdel_batch
        )
    per_image = result.seconds / len(group)
    localization = localization_scores(result.maps, boxes if boxes is not None else [None] * len(group))
    iterations = scored.iterations
    rows = []
    for i, s in enumerate(group):
        extra: dict[str, Any] = {}
        if hasattr(result, "objective_final"):
            extra = {
                "objective_initial": float(result.objective_initial[i]),
                "objective_final": float(result.objective_final[i]),
            }
        rows.append(
            ResultRow(
                image=s.key,
                method=name,
                label=s.class_index,
                class_index=int(classes[i]),
                predicted=int(predicted[i]),
                p=float(p[i]),
                o=float(o[i]),
                ad_term=float(terms.drop[i]),
                ag_term=float(terms.gain[i]),
                ai_term=int(terms.increase[i]),
                insertion=None if curves is None else float(curves.insertion_auc[i]),
                deletion=None if curves is None else float(curves.deletion_auc[i]),
                insertion_curve=None if curves is None else json.dumps(curves.insertion[i].tolist()),
                deletion_curve=None if curves is None else json.dumps(curves.deletion[i].tolist()),
                seconds=per_image,
                iterations=None if iterations is None else int(iterations[i]),
                extra=json.dumps(extra) if extra else None,
                device=device,
                **localization[i],
            )
        )
    return rows


__all__ = [
    "POINTING_TOLERANCE",
    "TARGETS",
    "EvaluationSettings",
    "chunk_rows",
    "chunks",
    "evaluate",
    "localization_scores",
    "pending",
    "run_config",
]
