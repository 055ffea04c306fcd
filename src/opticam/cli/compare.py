"""``opticam compare``: a grid of several methods' overlays on a few images, scored per image (AD / AG)."""

from __future__ import annotations

import argparse

import torch

from ..errors import UsageError
from ..evaluation.scoring import explain_with
from ..metrics.insdel import insertion_deletion
from ..viz.curves import curves_rows
from ..viz.encode import save_figure
from ..viz.grid import GridRow, comparison_grid
from .image_args import expand_images, read_images, unreadable_summary
from .method_args import check_class_argument, method_specs_from_args, parse_methods
from .model_args import add_model_arguments, model_from_args
from .opticam_args import add_preset_argument
from .paths import check_output_file

FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="grid of methods' overlays per image, titled with class and AD/AG")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders (searched recursively)")
    p.add_argument(
        "--methods", default="opticam", help="comma-separated methods (default opticam); e.g. opticam,fakecam,gradcam"
    )
    p.add_argument("--out", default="compare.png", help="output figure: .png, .pdf or .svg (default compare.png)")
    p.add_argument("--class", dest="class_index", type=int, help="class to explain (default: each image's top-1)")
    p.add_argument("--iterations", type=int, default=None, help="Opti-CAM steps (default: the preset's; paper 100)")
    add_preset_argument(p)
    p.add_argument(
        "--curves",
        metavar="FILE",
        help="also write each image's insertion/deletion curves here (.png, .pdf, .svg; default: none)",
    )
    p.add_argument(
        "--insdel-step", type=int, default=224, help="pixels per insertion/deletion step (default 224 = RISE's)"
    )
    p.add_argument("--dpi", type=int, default=100, help="resolution of the written figures (default 100)")
    add_model_arguments(p)
    p.set_defaults(func=compare_command)


def compare_command(args: argparse.Namespace) -> int:
    """``opticam compare``: every value checked first (``--preset`` and ``--iterations`` set the methods that
    take the Opti-CAM flags), then one grid of every method's overlay per image."""
    methods = parse_methods(args.methods)  # the names shown, as the user wrote them
    specs = method_specs_from_args(args)  # what runs: with the preset's and the flags' options
    if args.dpi < 1:
        raise UsageError(f"--dpi must be at least 1, got {args.dpi}")
    if args.insdel_step < 1:
        raise UsageError(f"--insdel-step must be at least 1, got {args.insdel_step}")
    check_output_file(args.out, "--out", FIGURE_SUFFIXES)
    if args.curves:
        check_output_file(args.curves, "--curves", FIGURE_SUFFIXES)
    paths = expand_images(args.images)
    loaded = model_from_args(args)
    check_class_argument(args.class_index, loaded)
    images, failed = read_images(paths, loaded)
    tensors = [t for _, t in images]
    x = torch.stack(tensors).to(args.device)
    print(f"Explaining {len(tensors)} image(s) with {', '.join(methods)} on {loaded.name}...")
    ran = explain_with(loaded, x, [spec.key for spec in specs], args.class_index, iterations=None)
    results = dict(zip(methods, ran.values(), strict=True))
    first = results[methods[0]]
    rows = []
    for i in range(x.shape[0]):
        c = int(first.classes[i])
        rows.append(
            GridRow(
                image=x[i].cpu(),
                label=f"{loaded.class_name(c)} ({c})\np = {float(first.p[i]):.2f}",
                maps={m: results[m].maps[i, 0].cpu() for m in methods},
                scores={
                    m: {**results[m].scores[i], "steps": results[m].result.record(i).get("iterations")} for m in methods
                },
            )
        )
        line = "  ".join(
            f"{m}: AD {results[m].scores[i]['AD']:.1f} AG {results[m].scores[i]['AG']:.1f}" for m in methods
        )
        print(f"  image {i + 1}: {loaded.class_name(c)} | {line}")
    out = save_figure(comparison_grid(rows, methods), args.out, dpi=args.dpi)
    print(f"wrote {out}")
    if args.curves:
        write_curves(loaded, x, results, methods, args)
    return unreadable_summary(failed, len(paths))


def write_curves(loaded, x: torch.Tensor, results: dict, methods: list[str], args: argparse.Namespace) -> None:
    """Per-image insertion/deletion curves (RISE protocol, :mod:`opticam.metrics.insdel`), one row per image."""
    per_method = {}
    for m in methods:
        print(f"insertion/deletion for {m}...")
        with torch.no_grad():
            per_method[m] = insertion_deletion(
                loaded.model, x, results[m].maps.to(x.device), results[m].classes, step=args.insdel_step
            )
    fractions = per_method[methods[0]].fractions.cpu().numpy()
    items = []
    for i in range(x.shape[0]):
        c = int(results[methods[0]].classes[i])
        curves = {
            m: {"insertion": r.insertion[i].cpu().numpy(), "deletion": r.deletion[i].cpu().numpy()}
            for m, r in per_method.items()
        }
        items.append((f"image {i + 1}, {loaded.class_name(c)}", curves))
    out = save_figure(curves_rows(items, x=fractions), args.curves, dpi=args.dpi)
    print(f"wrote {out}")
