"""``opticam evaluate``: the paper's benchmark (AD/AG/AI, insertion/deletion) over a labelled image set.

Results go to an SQLite file one row per image and method; running the same command again resumes
where it stopped, and a changed configuration becomes a separate run in the same file. Prints the
paper-style table as Markdown; ``--json`` also writes the summary.

With ground-truth boxes (a ``boxes.csv`` beside ``labels.csv``, or ``--boxes FILE``) each image is also
scored for localization at the model's input resolution: pointing game, energy pointing game, MaxBoxAccV2
and top-1 localization; ``--no-boxes`` ignores a boxes file.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from ..errors import UsageError
from ..evaluation import (
    TARGETS,
    EvaluationSettings,
    ResultStore,
    evaluate,
    find_boxes_file,
    markdown_table,
    read_dataset,
    run_config,
    summarize,
    summary_json,
)
from ..evaluation.distributed import EvaluationWorker, WorkerRecipe, evaluate_on_ray
from ..evaluation.runner import run_metrics
from ..methods.registry import SPEED_ONLY, create_method
from ..metrics.registry import DEFAULT_METRICS, METRICS, parse_metric_list
from ..models.factory import recorded_model_name
from .common import (
    add_dataset_arguments,
    add_model_arguments,
    add_opticam_arguments,
    add_preset_argument,
    add_progress_argument,
    add_ray_arguments,
    check_batch_size,
    check_output_file,
    check_ray_arguments,
    check_sqlite_file,
    method_specs_from_args,
    model_from_args,
    ray_pool,
    show_progress,
    unreadable_summary,
    worker_process_setup,
)

DEFAULT_METHODS = "opticam,fakecam,gradcam,gradcampp,xgradcam,layercam,hirescam"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="benchmark methods on a labelled image set (AD/AG/AI, insertion/deletion), resumable",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataset_arguments(p, DEFAULT_METHODS)
    p.add_argument("--limit", type=int, help="only the first N images, in the dataset's order (default: all)")
    boxes = p.add_mutually_exclusive_group()
    boxes.add_argument(
        "--boxes",
        help="ground-truth boxes CSV 'file,x0,y0,x1,y1' in stored-image pixels (default: boxes.csv beside labels.csv)",
    )
    boxes.add_argument("--no-boxes", action="store_true", help="ignore boxes.csv: no localization scores")
    p.add_argument(
        "--target", default="gt", choices=TARGETS, help="explain the ground-truth or predicted class (default gt)"
    )
    p.add_argument("--db", default="opticam-eval.sqlite", help="SQLite result file (default opticam-eval.sqlite)")
    p.add_argument("--json", dest="json_path", help="also write the summary as JSON here (default: none)")
    p.add_argument(
        "--metrics",
        help=f"comma-separated, from: {', '.join(METRICS)} (default {','.join(DEFAULT_METRICS)}; "
        "localization only where there are boxes)",
    )
    p.add_argument(
        "--insdel-step",
        type=int,
        default=224,
        help="pixels per insertion/deletion step (default 224 = RISE's 224 steps at 224x224; 0 = skip)",
    )
    p.add_argument("--insdel-batch", type=int, default=64, help="perturbed images per forward pass (default 64)")
    p.add_argument(
        "--cam-batch-size",
        type=int,
        default=64,
        help="Score-CAM / Ablation-CAM: masked images per forward pass (default 64)",
    )
    p.add_argument(
        "--extremal-iterations",
        type=int,
        default=800,
        help="Extremal Perturbation: SGD steps per image (default 800, TorchRay's; fewer for a quick look)",
    )
    add_ray_arguments(p)
    add_progress_argument(p)
    add_model_arguments(p)
    add_opticam_arguments(p, defaults=None)
    add_preset_argument(p)
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    specs = method_specs_from_args(args)
    names = [spec.key for spec in specs]
    check_ray_arguments(args)
    for flag in ("batch_size", "insdel_batch", "cam_batch_size"):
        check_batch_size(getattr(args, flag), "--" + flag.replace("_", "-"))
    if args.extremal_iterations < 1:
        raise UsageError("--extremal-iterations must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {args.limit}")
    for spec in specs:  # here, before a Ray pool starts: its workers would each fail on a missing extra
        spec.entry.check_available()
    if args.insdel_step < 0:
        raise UsageError("--insdel-step must be >= 0 (0 skips insertion/deletion)")
    metrics = tuple(parse_metric_list(args.metrics)) if args.metrics is not None else None
    if metrics is not None and "insdel" in metrics and args.insdel_step == 0:
        raise UsageError("--metrics insdel with --insdel-step 0: choose one (0 leaves insertion/deletion out)")
    boxes_file = find_boxes_file(args.images, None if args.no_boxes else (args.boxes or "auto"))
    root, samples = read_dataset(args.images, args.limit, boxes=boxes_file, split=args.split)
    check_sqlite_file(args.db, "--db")
    if args.json_path:
        check_output_file(args.json_path, "--json")
    loaded = model_from_args(args)
    settings = EvaluationSettings(
        target=args.target,
        insdel_step=args.insdel_step,
        batch_size=args.batch_size,
        insdel_batch=args.insdel_batch,
        metrics=metrics,
    ).for_dataset(boxes_file is not None)
    methods = {} if args.ray else {spec.key: create_method(spec, loaded, layer=args.layer) for spec in specs}
    store_dir = Path(args.db).resolve().parent
    checkpoint = str(Path(args.checkpoint).resolve()) if args.checkpoint else None
    config = run_config(
        loaded,
        dataset_root=relative_to(root, store_dir),  # relative to the store: the pair can move together
        layer=args.layer,
        settings=settings,
        checkpoint=relative_to(Path(checkpoint), store_dir) if checkpoint else None,
        random_weights=args.random_weights,
        boxes=relative_to(boxes_file, store_dir) if boxes_file is not None else None,
        model=recorded_model_name(args.model, store_dir),  # a factory file, like the data set, relative to the store
    )
    with ResultStore(args.db) as store:
        run_id = store.open_run(config)
        for spec in specs:
            store.record_method(run_id, spec.key, method_settings(spec, config["layer"]))
        print(
            f"run {run_id} in {args.db}: {loaded.name}, "
            f"layer {config['layer'] or 'auto (the last with spatial feature maps)'}, target {args.target}, "
            f"{len(samples)} images, methods {', '.join(names)}, metrics {', '.join(settings.selected())}"
            + (f", boxes {boxes_file}" if boxes_file is not None else ""),
            file=sys.stderr,
        )
        if args.ray:
            recipe = WorkerRecipe(
                model=args.model,
                checkpoint=checkpoint,  # absolute: a worker's working folder is its own
                random_weights=args.random_weights,
                layer=args.layer,
                # the key names the maps; the speed-only options (batch sizes) travel beside it
                methods={s.key: {k: v for k, v in s.options.items() if k in SPEED_ONLY} for s in specs},
                setup=worker_process_setup(),
            )
            added = evaluate_with_ray(args, recipe, samples, names, store, run_id, settings)
        else:
            with torch.inference_mode(False):
                added = evaluate(
                    loaded,
                    samples,
                    methods,
                    store,
                    run_id,
                    settings,
                    device=args.device,
                    progress=show_progress(args),
                )
        print(f"stored {sum(added.values())} new rows ({args.db}, run {run_id})", file=sys.stderr)
        keys = [s.key for s in samples]
        summary = summarize(store.summary_rows(run_id, names, keys), names, list(run_metrics(config)))
        settings_of = {k: v for k, v in store.method_settings(run_id).items() if k in names}
        # Unreadable images were reported and skipped (not stored, so a rerun retries them): the ones still
        # without a row for every method make the run incomplete, exit status 1 as for `opticam explain`.
        done = [store.done(run_id, name) for name in names]
        missing = sum(1 for s in samples if not all(s.key in d for d in done))
    print(markdown_table(summary))
    if args.json_path:
        Path(args.json_path).write_text(summary_json(summary, run_id, config, settings_of))
        print(f"wrote {args.json_path}", file=sys.stderr)
    return unreadable_summary(missing, len(samples))


def relative_to(path: Path, store_dir: Path) -> str:
    """``path`` as the run records it: relative to the result file's folder (``../shared/data/...``), so that a
    store and its data set that move together (another machine, another checkout) still find each other;
    the report resolves it against the store's folder, or ``report --images-root`` rebinds it."""
    return os.path.relpath(Path(path).resolve(), store_dir)


def method_settings(spec, layer: str) -> dict:
    """What the run records of a method: its settings, with the layer it explains resolved."""
    settings = spec.settings()
    if "layer" in settings:
        settings["layer"] = settings["layer"] or layer
    return settings


def evaluate_with_ray(args, recipe, samples, names, store, run_id, settings) -> dict[str, int]:
    """The run on a Ray worker pool (``--ray``): same chunks and rows as one process, the driver stores them."""
    with ray_pool(args, EvaluationWorker, recipe, settings) as pool:
        print(f"ray: {pool.live} worker(s) ready", file=sys.stderr)
        return evaluate_on_ray(pool, samples, names, store, run_id, settings, progress=show_progress(args))
