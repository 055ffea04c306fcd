"""``opticam explain`` and ``opticam demo``: saliency maps for image files, as PNG overlays and JSON.

``--save-maps`` also writes each raw map as ``.npy`` (float32 ``[H, W]`` in [0, 1], the image file's resolution);
``--topk K`` explains each image's K most probable classes in one batched run, and every file name then
carries the class (``<stem>_c<class>.png/.json/.npy``).

This module parses the flags, prints and writes files; what is computed per image (and the Ray worker that
computes it with ``--ray``) is :mod:`opticam.evaluation.explain_job`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..evaluation.distributed import WorkerRecipe
from ..evaluation.explain_job import ExplainJob, ExplainOutput, ExplainWorker
from ..images import sample_image
from ..methods.opticam_config import OptiCAMConfig
from ..methods.registry import MethodSpec, parse_method_spec, specs_with_flags
from ..models.specs import DEFAULT_MODEL
from .image_args import expand_images, read_images, unreadable_summary
from .method_args import check_class_argument, check_topk
from .model_args import add_model_arguments, model_from_args
from .opticam_args import (
    add_opticam_arguments,
    add_preset_argument,
    check_batch_size,
    opticam_config_from_args,
    preset_from_args,
)
from .paths import check_output_folder
from .progress import add_progress_argument, show_progress
from .ray_args import add_ray_arguments, check_ray_arguments, ray_pool, worker_process_setup


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="explain images: heatmap PNG + JSON per image")
    add_explain_arguments(p)
    p.set_defaults(func=explain_command)

    d = sub.add_parser("demo", help="explain a sample image with the offline default model")
    d.add_argument("--out", default="opticam-demo", help="output folder (default ./opticam-demo)")
    d.add_argument("--iterations", type=int, default=100, help="Opti-CAM steps (default 100, the paper's)")
    add_progress_argument(d)
    d.set_defaults(func=demo_command)


def add_explain_arguments(p: argparse.ArgumentParser) -> None:
    """Every flag of ``opticam explain`` (also what ``opticam demo`` parses its own explain call with)."""
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders (searched recursively)")
    p.add_argument("--class", dest="class_index", type=int, help="class to explain (default: top-1)")
    p.add_argument("--out", default="opticam-out", help="output folder (default ./opticam-out)")
    p.add_argument(
        "--topk",
        type=int,
        metavar="K",
        help="explain each image's top-K classes in one batched run; file names carry the class "
        "(default: one class per image, --class or the top-1)",
    )
    p.add_argument(
        "--save-maps",
        action="store_true",
        help="also write each raw map as .npy (float32 [H, W] in [0, 1], the image file's resolution)",
    )
    p.add_argument(
        "--method",
        metavar="SPEC",
        help="the method, any of `opticam methods` with options, e.g. opticam-amortized(refine=3) "
        "(default: Opti-CAM with the Opti-CAM flags below)",
    )
    add_model_arguments(p)
    add_opticam_arguments(p, defaults=None)
    add_preset_argument(p)
    p.add_argument(
        "--batch-invariant",
        action="store_true",
        help="optimize images one at a time so each map is bit for bit the one it gets alone "
        "(slower; see docs/models.md, 'Batches and precision')",
    )
    add_progress_argument(p)
    add_ray_arguments(p)


def explain_command(args: argparse.Namespace) -> int:
    """``opticam explain``: check the flags, then explain the images here or on the Ray pool (``--ray``)
    with :class:`~opticam.evaluation.explain_job.ExplainJob`, writing each map's files into ``--out``.

    Every value is checked before the model loads (the class and ``--topk`` right after, against its
    classes); images that cannot be read are reported and skipped, and the exit status is then 1."""
    check_batch_size(args.batch_size)
    check_ray_arguments(args)
    extra = {"batch_invariant": True} if args.batch_invariant else {}
    config = opticam_config_from_args(args, preset_from_args(args), **extra)
    method_spec(args)  # a bad --method is refused before the model loads
    paths = expand_images(args.images)
    out = check_output_folder(args.out, "--out")
    loaded = model_from_args(args)
    check_class_argument(args.class_index, loaded)
    if args.topk is not None:
        check_topk(args.topk, args.class_index, loaded)
    job = ExplainJob(args.class_index, args.topk, args.save_maps, preset=args.preset, spec=method_spec(args))
    if args.ray:
        out.mkdir(parents=True, exist_ok=True)
        return _explain_with_ray(args, job, config, paths, out)
    images, failed = read_images(paths, loaded)
    cam = job.method(loaded, args.layer, config, progress=show_progress(args))
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()  # stems written by this call, so two cat.jpg from different folders both survive
    for start in range(0, len(images), args.batch_size):
        chunk = images[start : start + args.batch_size]
        stems = [_unique_stem(used, path) for path, _ in chunk]
        shown: set[str] = set()
        for output in job.explain(loaded, cam, chunk, stems, args.device):
            _write(output, out, shown)
    return unreadable_summary(failed, len(paths))


def method_spec(args: argparse.Namespace) -> MethodSpec | None:
    """``--method`` as a checked spec, with what the alias flags fill (``None`` without ``--method``)."""
    if getattr(args, "method", None) is None:
        return None
    return specs_with_flags([parse_method_spec(args.method)], vars(args))[0]


def _write(output: ExplainOutput, out: Path, shown: set[str]) -> None:
    """Write one map's files and say so (the same for a map computed here and one from a Ray worker); an
    image's top-5 table is printed with its first map only (``--topk`` gives several maps per image)."""
    image = output.record["image"]
    if image not in shown:
        shown.add(image)
        _print_top5(Path(image), output.record)
    _print_map(output.record)
    print("  wrote " + ", ".join(str(w) for w in output.write(out)))


def _explain_with_ray(
    args: argparse.Namespace, job: ExplainJob, config: OptiCAMConfig, paths: list[str], out: Path
) -> int:
    """``--ray``: the images in chunks of ``--batch-size`` on the worker pool; the driver writes the files and
    skips images whose outputs exist (so the same command resumes)."""
    used: set[str] = set()
    items = [(str(Path(p).resolve()), p, _unique_stem(used, Path(p))) for p in paths]
    todo = [item for item in items if not job.done(out, item[2])]
    print(f"ray: {len(items) - len(todo)} of {len(items)} images already explained in {out}", file=sys.stderr)
    jobs = [(n, todo[i : i + args.batch_size]) for n, i in enumerate(range(0, len(todo), args.batch_size))]
    checkpoint = str(Path(args.checkpoint).resolve()) if args.checkpoint else None
    recipe = WorkerRecipe(model=args.model, checkpoint=checkpoint, random_weights=args.random_weights,
                          layer=args.layer, setup=worker_process_setup())  # fmt: skip
    failed = 0
    with ray_pool(args, ExplainWorker, recipe, config, job) as pool:
        for _, _, _, result in pool.stream(jobs):
            for message in result.reports:
                print(f"opticam: {message}", file=sys.stderr)
            failed += len(result.reports)
            shown: set[str] = set()
            for output in result.outputs:
                _write(output, out, shown)
    return unreadable_summary(failed, len(paths))


def _print_top5(path: Path, record: dict) -> None:
    """The image's name and the model's top-5 classes (once per image)."""
    print(f"{path.name}: top-5 classes")
    for rank, entry in enumerate(record["topk"], 1):
        print(f"  {rank}. {entry['class_index']:4d} {entry['name']:<30s} {entry['prob']:.3f}")


def _print_map(record: dict) -> None:
    """One map: the class it explains, the method, and how its optimization went (where it has one)."""
    line = f"  explaining class {record['class_index']} ({record['class_name']}) with {record['method']}"
    if "objective_initial" in record and "objective_final" in record:
        line += f": objective {record['objective_initial']:.3f} -> {record['objective_final']:.3f}"
    if "iterations" in record:
        line += f" in {record['iterations']} iterations"
    if "notes" in record:
        line += "".join(f", {k} {v}" for k, v in record["notes"].items())
    print(line + f", {record['seconds']:.2f} s")


def _unique_stem(used: set[str], path: Path) -> str:
    """``path``'s stem, with a ``-2``, ``-3``... suffix if an earlier image of the same call took it."""
    stem, n = path.stem, 1
    while stem in used:
        n += 1
        stem = f"{path.stem}-{n}"
    used.add(stem)
    return stem


def demo_command(args: argparse.Namespace) -> int:
    """``opticam demo``: ``opticam explain`` on matplotlib's Grace Hopper photo with the offline default model,
    through explain's own parser (so the demo gets every explain default)."""
    image = sample_image()
    print(f"Explaining {image} with {DEFAULT_MODEL} (offline weights)...")
    from . import OneLineParser

    parser = OneLineParser(prog="opticam explain")
    add_explain_arguments(parser)
    flags = [f"--out={args.out}", f"--model={DEFAULT_MODEL}", "--preset=paper", "--batch-size=1"]
    flags += ["--no-progress"] if args.no_progress else []
    explain_args = parser.parse_args([str(image), *flags, f"--iterations={args.iterations}"])
    code = explain_command(explain_args)
    print(f"Demo output is in {Path(args.out).resolve()}")
    return code
