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
import sys
from pathlib import Path

from ..evaluation import TARGETS, EvaluationSettings, markdown_table, summary_json
from ..evaluation.evaluate_job import EvaluationRequest, run_evaluation
from ..metrics.registry import DEFAULT_METRICS, METRICS, metric_options_with_flags, parse_metric_specs
from .image_args import unreadable_summary
from .method_args import add_dataset_arguments, method_specs_from_args
from .model_args import add_model_arguments, model_from_args
from .opticam_args import add_opticam_arguments, add_preset_argument, check_batch_size
from .paths import check_output_file, check_sqlite_file
from .progress import add_progress_argument, show_progress
from .ray_args import add_ray_arguments, check_ray_arguments, ray_plan, worker_process_setup

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
        help=f"comma-separated, from: {', '.join(METRICS)}, options in parentheses, lists as a;b;c, e.g. "
        "'drop-gain,insdel(step=224,batch=32),road(percentiles=10;50;90)' (`opticam metrics` lists them; "
        f"default {','.join(DEFAULT_METRICS)}, localization only where there are boxes)",
    )
    p.add_argument(
        "--insdel-step",
        type=int,
        default=None,
        help="alias of insdel(step=N): pixels per insertion/deletion step (default 224 = RISE's 224 steps at "
        "224x224; 0 leaves insertion/deletion out)",
    )
    p.add_argument(
        "--insdel-batch",
        type=int,
        default=None,
        help="alias of insdel(batch=N): perturbed images per pass (default 64)",
    )
    p.add_argument(
        "--cam-batch-size",
        type=int,
        default=None,
        help="alias of scorecam(batch_size=N) and ablationcam(batch_size=N): masked images per pass (default 64)",
    )
    p.add_argument(
        "--extremal-iterations",
        type=int,
        default=None,
        help="alias of extremal(iterations=N): SGD steps per image (default 800, TorchRay's)",
    )
    add_ray_arguments(p)
    add_progress_argument(p)
    add_model_arguments(p)
    add_opticam_arguments(p, defaults=None)
    add_preset_argument(p)
    p.set_defaults(func=evaluate_command)


def evaluate_command(args: argparse.Namespace) -> int:
    """Turn the flags into an :class:`~opticam.evaluation.EvaluationRequest`, run it, print the table."""
    specs = method_specs_from_args(args)  # --cam-batch-size, --extremal-iterations fill the declared options
    check_ray_arguments(args)
    check_batch_size(args.batch_size)
    metrics = parse_metric_specs(args.metrics) if args.metrics is not None else None
    settings = EvaluationSettings(
        target=args.target,
        batch_size=args.batch_size,
        metrics=tuple(m.name for m in metrics) if metrics is not None else None,
        metric_options=metric_options_with_flags(metrics, vars(args)),  # --insdel-step, --insdel-batch too
    )
    check_sqlite_file(args.db, "--db")
    if args.json_path:
        check_output_file(args.json_path, "--json")
    request = EvaluationRequest(
        images=args.images,
        db=args.db,
        methods=specs,
        settings=settings,
        model=args.model,
        checkpoint=args.checkpoint,
        random_weights=args.random_weights,
        device=args.device,
        layer=args.layer,
        split=args.split,
        limit=args.limit,
        boxes=None if args.no_boxes else (args.boxes or "auto"),
        ray=ray_plan(args) if args.ray else None,
        worker_setup=worker_process_setup(),
        progress=show_progress(args),
    )
    outcome = run_evaluation(request, load=lambda *_args, **_kwargs: model_from_args(args))
    print(markdown_table(outcome.summary))
    if args.json_path:
        Path(args.json_path).write_text(
            summary_json(outcome.summary, outcome.run_id, outcome.config, outcome.method_settings)
        )
        print(f"wrote {args.json_path}", file=sys.stderr)
    # Unreadable images were reported and skipped (not stored, so a rerun retries them): the ones still without
    # a row for every method make the run incomplete, exit status 1 as for `opticam explain`.
    return unreadable_summary(outcome.missing, outcome.images)
