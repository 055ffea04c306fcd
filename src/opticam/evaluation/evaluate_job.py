"""One evaluation, start to finish: the function behind ``opticam evaluate``, for Python, the web and Ray alike.

:func:`run_evaluation` takes an :class:`EvaluationRequest` (the model, the data set, the methods as checked
specs, the metrics with their options, where to store the rows) and does what the command does: check every
value before any work, open or resume the run in the result store, compute the missing rows (in this
process or on a Ray pool), and summarize. The command line only turns its flags into a request and prints
the outcome (:mod:`opticam.cli.evaluate`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from ..methods.registry import MethodSpec, create_method
from ..models.factory import recorded_model_name
from ..models.layers import check_feature_layer
from ..models.loading import LoadedModel, load_model
from .dataset import find_boxes_file, read_dataset
from .distributed import EvaluationWorker, RayPlan, WorkerRecipe, evaluate_on_ray, ray_pool
from .runner import EvaluationSettings, evaluate, run_config, run_metrics
from .store import ResultStore, config_hash
from .summary import summarize


@dataclass
class EvaluationRequest:
    """What to evaluate and where the rows go.

    Attributes:
        images: a labelled image set (labels.csv, a folder with one, synset folders, a MedMNIST ``.npz``).
        db: the SQLite result file (resumed when it holds the same run).
        methods: checked method specs (:func:`opticam.methods.registry.parse_method_specs`).
        settings: target, metrics and their options, chunk size (:class:`~opticam.evaluation.EvaluationSettings`).
        model, checkpoint, random_weights, device, layer: the model, as ``opticam.load_model`` takes them;
            ``layer`` ``None``: the model's usual layer.
        split: the split of an ``.npz`` data set.
        limit: only the first N images (``None``: all).
        boxes: ``"auto"`` (a boxes.csv beside labels.csv), a boxes file, or ``None`` (no localization).
        ray: a Ray pool to compute on (``None``: this process).
        worker_setup: what each Ray worker runs first (the command line passes its CPU allocator tuning).
        progress: show progress bars.
    """

    images: str
    db: str | Path
    methods: Sequence[MethodSpec]
    settings: EvaluationSettings = field(default_factory=EvaluationSettings)
    model: str = "tf_efficientnet_lite0"
    checkpoint: str | None = None
    random_weights: bool = False
    device: str = "cpu"
    layer: str | None = None
    split: str | None = None
    limit: int | None = None
    boxes: str | None = "auto"
    ray: RayPlan | None = None
    worker_setup: Callable[[], Any] | None = None
    progress: bool = False


@dataclass
class EvaluationOutcome:
    """What a run gave: its id and configuration, the summary per method, and how many images still lack a
    row (unreadable ones, reported and skipped: a rerun retries them)."""

    run_id: str
    config: dict[str, Any]
    summary: dict[str, dict[str, Any]]
    method_settings: dict[str, dict[str, Any]]
    added: int
    images: int
    missing: int


def run_evaluation(
    request: EvaluationRequest,
    *,
    load: Callable[..., LoadedModel] = load_model,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> EvaluationOutcome:
    """Evaluate ``request.methods`` on ``request.images`` into ``request.db`` (resuming), and summarize.

    Every value is checked before the model loads or a pool starts (a ``UsageError`` naming it); ``load``
    builds the model (``opticam.load_model``'s signature); ``log`` gets the run's header and the count of new
    rows.
    """
    if request.limit is not None and request.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {request.limit}")
    if not request.methods:
        raise UsageError("the method list is empty; name at least one method")
    for spec in request.methods:  # before a Ray pool starts: its workers would each fail on a missing extra
        spec.entry.check_available()
    boxes_file = find_boxes_file(request.images, request.boxes)
    root, samples = read_dataset(request.images, request.limit, boxes=boxes_file, split=request.split)
    settings = request.settings.for_dataset(boxes_file is not None)
    loaded = load(
        request.model, pretrained=not request.random_weights, checkpoint=request.checkpoint, device=request.device
    )
    check_feature_layer(loaded, request.layer)
    specs = list(request.methods)
    names = [spec.key for spec in specs]
    methods = {} if request.ray else {s.key: create_method(s, loaded, layer=request.layer) for s in specs}
    store_dir = Path(request.db).resolve().parent
    checkpoint = str(Path(request.checkpoint).resolve()) if request.checkpoint else None
    config = run_config(
        loaded,
        dataset_root=relative_to(root, store_dir),  # relative to the store: the pair can move together
        layer=request.layer,
        settings=settings,
        checkpoint=relative_to(Path(checkpoint), store_dir) if checkpoint else None,
        random_weights=request.random_weights,
        boxes=relative_to(boxes_file, store_dir) if boxes_file is not None else None,
        model=recorded_model_name(request.model, store_dir),  # a factory file, like the data set
    )
    with ResultStore(request.db) as store:
        found = request.layer is None and loaded.target_layer is None
        config = resumable_config(store, config, found=found)
        run_id = store.open_run(config)
        for spec in specs:
            store.record_method(run_id, spec.key, method_settings(spec, config["layer"]))
        log(
            f"run {run_id} in {request.db}: {loaded.name}, "
            f"layer {config['layer'] or 'auto'}{' (found automatically)' if found else ''}, target {settings.target}, "
            f"{len(samples)} images, methods {', '.join(names)}, metrics {', '.join(settings.selected())}"
            + (f", boxes {boxes_file}" if boxes_file is not None else "")
        )
        if request.ray is not None:
            recipe = WorkerRecipe(
                model=request.model,
                checkpoint=checkpoint,  # absolute: a worker's working folder is its own
                random_weights=request.random_weights,
                layer=request.layer,
                methods={s.key: s.speed_options() for s in specs},  # the key names the maps; batch sizes beside
                setup=request.worker_setup,
            )
            with ray_pool(request.ray, EvaluationWorker, recipe, settings) as pool:
                log(f"ray: {pool.live} worker(s) ready")
                added = evaluate_on_ray(pool, samples, names, store, run_id, settings, progress=request.progress)
        else:
            with torch.inference_mode(False):
                added = evaluate(
                    loaded, samples, methods, store, run_id, settings, device=request.device, progress=request.progress
                )
        log(f"stored {sum(added.values())} new rows ({request.db}, run {run_id})")
        keys = [s.key for s in samples]
        summary = summarize(store.summary_rows(run_id, names, keys), names, list(run_metrics(config)))
        settings_of = {k: v for k, v in store.method_settings(run_id).items() if k in names}
        done = [store.done(run_id, name) for name in names]
        missing = sum(1 for s in samples if not all(s.key in d for d in done))
    return EvaluationOutcome(run_id, config, summary, settings_of, sum(added.values()), len(samples), missing)


def resumable_config(store: ResultStore, config: dict[str, Any], *, found: bool) -> dict[str, Any]:
    """``config``, or the same run as a store written before found layers were recorded by name saw it
    (``"layer": null``) when the store holds that run and not this one: it resumes instead of rerunning."""
    if not found or config["layer"] is None:
        return config
    old = {**config, "layer": None}
    if store.has_run(config_hash(old)) and not store.has_run(config_hash(config)):
        return old
    return config


def relative_to(path: Path, store_dir: Path) -> str:
    """``path`` as the run records it: relative to the result file's folder (``../shared/data/...``), so that a
    store and its data set that move together (another machine, another checkout) still find each other;
    the report resolves it against the store's folder, or ``report --images-root`` rebinds it."""
    return os.path.relpath(Path(path).resolve(), store_dir)


def method_settings(spec: MethodSpec, layer: str | None) -> dict[str, Any]:
    """What the run records of a method: its settings, with the layer it explains resolved."""
    settings = spec.settings()
    if "layer" in settings:
        settings["layer"] = settings["layer"] or layer
    return settings
