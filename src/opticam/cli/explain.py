"""``opticam explain`` and ``opticam demo``: saliency maps for image files, as PNG overlays and JSON."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ..core import OptiCAM
from ..errors import ImageLoadError, TargetError
from ..images import load_image
from ..models import DEFAULT_MODEL, LoadedModel, load_model
from ..presets import PRESETS, preset_options
from ..viz import overlay


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--checkpoint``, ``--random-weights``, ``--device``: shared by every command."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name (default {DEFAULT_MODEL}, offline)")
    parser.add_argument("--checkpoint", help="state-dict file to load into the model's architecture")
    parser.add_argument(
        "--random-weights", action="store_true", help="random weights instead of pretrained (wiring tests)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def model_from_args(args: argparse.Namespace) -> LoadedModel:
    return load_model(args.model, pretrained=not args.random_weights, checkpoint=args.checkpoint, device=args.device)


def add_opticam_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layer", help="target layer, dotted name (default: the model's usual layer)")
    parser.add_argument("--iterations", type=int, default=100, help="most Adam steps per image (default 100)")
    parser.add_argument("--lr", type=float, default=0.1, help="Adam learning rate (default 0.1)")
    parser.add_argument("--objective", default="mask", choices=["mask", "diff", "io-mask", "log-prob"])
    parser.add_argument("--normalization", default="range", choices=["range", "max", "sigmoid"])
    parser.add_argument("--batch-size", type=int, default=8, help="images optimized together (default 8)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="explain images: heatmap PNG + JSON per image")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--class", dest="class_index", type=int, help="class to explain (default: top-1)")
    p.add_argument("--out", default="opticam-out", help="output folder (default ./opticam-out)")
    add_model_arguments(p)
    add_opticam_arguments(p)
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="paper",
        help="named settings (default paper; fast: a third of the passes, see docs/speed.md); "
        "--iterations/--lr given explicitly override the preset",
    )
    p.add_argument(
        "--batch-invariant",
        action="store_true",
        help="optimize images one at a time so each map is bit for bit the one it gets alone "
        "(slower; see the README, 'Batches and precision')",
    )
    p.set_defaults(func=run_explain, iterations=None, lr=None, objective=None, normalization=None)

    d = sub.add_parser("demo", help="explain a sample image with the offline default model")
    d.add_argument("--out", default="opticam-demo", help="output folder (default ./opticam-demo)")
    d.add_argument("--iterations", type=int, default=100)
    d.set_defaults(func=run_demo)


def sample_image() -> Path:
    """matplotlib's Grace Hopper photo: a sample image that ships inside a dependency."""
    import matplotlib.cbook

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def check_class_argument(class_index: int | None, loaded: LoadedModel) -> None:
    """Refuse a ``--class`` the model does not have, before any work is done."""
    if class_index is not None and not 0 <= class_index < len(loaded.class_names):
        raise TargetError(f"--class {class_index} is out of range: {loaded.name} has {len(loaded.class_names)} classes")


def read_images(paths: list[str], loaded: LoadedModel) -> tuple[list[tuple[Path, torch.Tensor]], int]:
    """``([(path, preprocessed image)], number skipped)``: unreadable files are reported and skipped,
    so one bad file does not lose the others."""
    images, failed = [], 0
    for path in paths:
        try:
            images.append((Path(path), loaded.preprocess(load_image(path))))
        except ImageLoadError as exc:
            print(f"opticam: skipping {exc}", file=sys.stderr)
            failed += 1
    return images, failed


def run_explain(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise TargetError("--batch-size must be at least 1")
    loaded = model_from_args(args)
    check_class_argument(args.class_index, loaded)
    layer = args.layer or loaded.target_layer
    options = preset_options(getattr(args, "preset", None) or "paper")
    explicit = ("iterations", "lr", "objective", "normalization")
    options.update({k: getattr(args, k) for k in explicit if getattr(args, k, None) is not None})
    if getattr(args, "batch_invariant", False):
        options["batch_invariant"] = True
    cam = OptiCAM(loaded.model, layer, loaded.reshape_transform, progress=True, **options)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, failed = read_images(args.images, loaded)
    for start in range(0, len(images), args.batch_size):
        chunk = images[start : start + args.batch_size]
        x = torch.stack([t for _, t in chunk]).to(args.device)
        begin = time.perf_counter()
        result = cam.explain(x, None if args.class_index is None else args.class_index)
        seconds = (time.perf_counter() - begin) / len(chunk)
        probs = torch.softmax(result.logits.float(), dim=1)
        for i, (path, tensor) in enumerate(chunk):
            record = _record(path, loaded, cam, result, probs[i], i, seconds)
            _print_top5(path, record)
            stem = _unique_stem(out, path)
            overlay(tensor, result.maps[i]).save(out / f"{stem}.png")
            (out / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
            print(f"  wrote {out / (stem + '.png')} and {out / (stem + '.json')}")
    if failed:
        print(f"opticam: {failed} of {len(args.images)} images could not be read", file=sys.stderr)
    return 1 if failed else 0


def _record(path, loaded, cam, result, probs, i, seconds) -> dict:
    top = probs.topk(min(5, probs.numel()))
    c = int(result.class_indices[i])
    return {
        "image": str(path),
        "model": loaded.name,
        "layer": cam.target_layer_name,
        "class_index": c,
        "class_name": loaded.class_name(c),
        "class_prob": float(probs[c]),
        "topk": [
            {"class_index": int(k), "name": loaded.class_name(int(k)), "prob": round(float(v), 6)}
            for v, k in zip(top.values, top.indices, strict=True)
        ],
        "objective": cam.objective,
        "normalization": cam.normalization,
        "objective_initial": float(result.objective_initial[i]),
        "objective_final": float(result.objective_final[i]),
        "iterations": int(result.iterations[i]),
        "seconds": round(seconds, 4),
    }


def _print_top5(path: Path, record: dict) -> None:
    print(f"{path.name}: explaining class {record['class_index']} ({record['class_name']})")
    for rank, entry in enumerate(record["topk"], 1):
        print(f"  {rank}. {entry['class_index']:4d} {entry['name']:<30s} {entry['prob']:.3f}")
    print(
        f"  objective {record['objective_initial']:.3f} -> {record['objective_final']:.3f} "
        f"in {record['iterations']} iterations, {record['seconds']:.2f} s"
    )


def _unique_stem(out: Path, path: Path) -> str:
    """``path``'s stem, with a suffix if another image of this run already wrote it."""
    stem, n = path.stem, 1
    used = getattr(_unique_stem, "_used", set())
    while (out, stem) in used:
        n += 1
        stem = f"{path.stem}-{n}"
    used.add((out, stem))
    _unique_stem._used = used  # type: ignore[attr-defined]
    return stem


def run_demo(args: argparse.Namespace) -> int:
    image = sample_image()
    print(f"Explaining {image} with {DEFAULT_MODEL} (offline weights)...")
    ns = argparse.Namespace(
        images=[str(image)],
        class_index=None,
        out=args.out,
        model=DEFAULT_MODEL,
        checkpoint=None,
        random_weights=False,
        device="cuda" if torch.cuda.is_available() else "cpu",
        layer=None,
        iterations=args.iterations,
        lr=0.1,
        objective="mask",
        normalization="range",
        batch_size=1,
    )
    code = run_explain(ns)
    print(f"Demo output is in {Path(args.out).resolve()}")
    return code
