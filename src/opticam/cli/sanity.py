"""``opticam sanity``: the cascading model-parameter randomization check (Adebayo et al., NeurIPS 2018).

Re-initializes the model from the classifier down, stage by stage (see ``docs/evaluation.md``), recomputes
every method's map of the ground-truth class at each stage, and prints the similarity to the intact
model's map (Spearman rank correlation and SSIM, means over the images) as a Markdown table. ``--out DIR``
writes the plot of similarity against depth and the picture grid of the first image; ``--json`` the
numbers. A method whose similarity stays near 1 down to the input does not depend on the model: Fake-CAM
must fail this way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..errors import UsageError
from ..evaluation.dataset import load_sample, read_dataset
from ..evaluation.sanity import sanity_check, sanity_markdown
from ..methods.registry import create_method
from .image_args import read_each, unreadable_summary
from .method_args import add_dataset_arguments, method_specs_from_args
from .model_args import add_model_arguments, model_from_args
from .opticam_args import add_opticam_arguments, add_preset_argument, check_batch_size
from .paths import check_output_file, check_output_folder
from .progress import add_progress_argument, show_progress

DEFAULT_METHODS = "fakecam,gradcam,opticam"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sanity",
        help="sanity check: similarity of each method's maps as the model is randomized from the top down",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataset_arguments(p, DEFAULT_METHODS)
    p.add_argument("--limit", type=int, default=2, help="the first N images (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the re-initialization (default 0)")
    p.add_argument("--json", dest="json_path", help="write the numbers as JSON here (default: none)")
    p.add_argument(
        "--out",
        help="folder for sanity-plot.png (similarity vs depth) and sanity-grid.png (default: none, no pictures)",
    )
    add_progress_argument(p)
    add_model_arguments(p)
    add_opticam_arguments(p, defaults=None)
    add_preset_argument(p)
    p.set_defaults(func=sanity_command)


def sanity_command(args: argparse.Namespace) -> int:
    specs = method_specs_from_args(args)
    names = [spec.key for spec in specs]
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {args.limit}")
    check_batch_size(args.batch_size)
    _, samples = read_dataset(args.images, args.limit, boxes=None, split=args.split)
    if args.json_path:
        check_output_file(args.json_path, "--json")
    if args.out:
        check_output_folder(args.out, "--out")
    loaded = model_from_args(args)
    for spec in specs:  # built once now, so that an option value that cannot work is refused before any stage
        create_method(spec, loaded, layer=args.layer)
    read, skipped = read_each(samples, lambda s: (s.key, loaded.preprocess(load_sample(s)), s.class_index))
    keys = [key for key, _, _ in read]  # the images checked: a skipped one is not among them
    x = torch.stack([image for _, image, _ in read]).to(args.device)
    targets = torch.tensor([c for _, _, c in read], device=args.device)

    def factory(spec):
        return lambda stage_loaded: create_method(spec, stage_loaded, layer=args.layer)

    def progress(stage: str, method: str) -> None:
        print(f"opticam sanity: {stage}: {method}", file=sys.stderr)

    result = sanity_check(
        loaded,
        x,
        targets,
        {spec.key: factory(spec) for spec in specs},
        seed=args.seed,
        progress=progress if show_progress(args) else None,  # on a terminal, as every command's progress
    )
    for method, stage, message in result.errors:
        print(f"opticam: {method} failed at stage {stage}: {message}", file=sys.stderr)
    print(sanity_markdown(result))
    means = result.means()
    if args.json_path:
        payload = {
            "stages": result.stages,
            "methods": means,
            "model": loaded.name,
            "images": keys,
            "seed": args.seed,
            "per_image": {m: {"spearman": result.spearman[m].tolist(), "ssim": result.ssim[m].tolist()} for m in names},
        }
        text = json.dumps(payload, indent=2).replace("NaN", "null")
        Path(args.json_path).write_text(text + "\n")
        print(f"wrote {args.json_path}", file=sys.stderr)
    if args.out:
        from ..viz import randomization_grid, save_figure, similarity_plot

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        title = f"{loaded.name}, {len(keys)} image(s), cascading randomization"
        save_figure(similarity_plot(result.stages, means, title), out / "sanity-plot.png")
        grid = randomization_grid(x[0].cpu(), result.stages, {m: result.maps[m][:, 0] for m in names})
        save_figure(grid, out / "sanity-grid.png")
        print(f"wrote {out / 'sanity-plot.png'} and {out / 'sanity-grid.png'}", file=sys.stderr)
    return unreadable_summary(skipped, len(samples))
