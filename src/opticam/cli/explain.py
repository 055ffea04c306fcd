"""``opticam explain`` and ``opticam demo``: saliency maps for image files, as PNG overlays and JSON.

``--save-maps`` also writes each raw map as ``.npy`` (float32 ``[H, W]`` in [0, 1], the input's resolution);
``--topk K`` explains each image's K most probable classes in one batched run, and every file name then
carries the class (``<stem>_c<class>.png/.json/.npy``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..methods.opticam import OptiCAM, OptiCAMResult
from ..methods.presets import PRESETS, preset_config
from ..models.loading import LoadedModel
from ..models.specs import DEFAULT_MODEL
from ..viz.overlay import overlay
from .common import (
    add_model_arguments,
    add_opticam_arguments,
    check_batch_size,
    check_class_argument,
    check_topk,
    default_device,
    model_from_args,
    opticam_config_from_args,
    read_images,
    sample_image,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="explain images: heatmap PNG + JSON per image")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--class", dest="class_index", type=int, help="class to explain (default: top-1)")
    p.add_argument("--out", default="opticam-out", help="output folder (default ./opticam-out)")
    p.add_argument(
        "--topk",
        type=int,
        metavar="K",
        help="explain each image's top-K classes in one batched run; file names carry the class",
    )
    p.add_argument(
        "--save-maps",
        action="store_true",
        help="also write each raw map as .npy (float32 [H, W] in [0, 1], input resolution)",
    )
    add_model_arguments(p)
    add_opticam_arguments(p, defaults=None)
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="paper",
        help="named settings (default paper; fast: a third of the passes, see docs/speed.md); "
        "Opti-CAM flags given explicitly override the preset",
    )
    p.add_argument(
        "--batch-invariant",
        action="store_true",
        help="optimize images one at a time so each map is bit for bit the one it gets alone "
        "(slower; see the README, 'Batches and precision')",
    )
    p.set_defaults(func=run_explain)

    d = sub.add_parser("demo", help="explain a sample image with the offline default model")
    d.add_argument("--out", default="opticam-demo", help="output folder (default ./opticam-demo)")
    d.add_argument("--iterations", type=int, default=100)
    d.set_defaults(func=run_demo)


def run_explain(args: argparse.Namespace) -> int:
    check_batch_size(args.batch_size)
    extra = {"batch_invariant": True} if getattr(args, "batch_invariant", False) else {}
    config = opticam_config_from_args(args, preset_config(getattr(args, "preset", None) or "paper"), **extra)
    loaded = model_from_args(args)
    check_class_argument(args.class_index, loaded)
    topk = getattr(args, "topk", None)
    if topk is not None:
        check_topk(topk, args.class_index, loaded)
    layer = args.layer or loaded.target_layer
    cam = OptiCAM(loaded.model, layer, loaded.reshape_transform, config=config, progress=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, failed = read_images(args.images, loaded)
    used: set[str] = set()  # stems written by this call, so two cat.jpg from different folders both survive
    for start in range(0, len(images), args.batch_size):
        chunk = images[start : start + args.batch_size]
        x = torch.stack([t for _, t in chunk]).to(args.device)
        begin = time.perf_counter()
        if topk is None:
            targets = None if args.class_index is None else args.class_index
        else:
            with torch.no_grad():
                targets = loaded.model(x).topk(topk, dim=1).indices  # [B, K]: one map per image and class
        result = cam.explain(x, targets)
        seconds = (time.perf_counter() - begin) / result.maps.shape[0]
        rows = result.image_indices.tolist() if result.image_indices is not None else list(range(len(chunk)))
        stems = [_unique_stem(used, path) for path, _ in chunk]
        for i, image in enumerate(rows):
            path, tensor = chunk[image]
            record = _record(path, loaded, cam, result, i, seconds)
            _print_top5(path, record)
            stem = stems[image] if topk is None else f"{stems[image]}_c{record['class_index']}"
            written = [out / f"{stem}.png", out / f"{stem}.json"]
            overlay(tensor, result.maps[i]).save(written[0])
            if getattr(args, "save_maps", False):
                written.append(out / f"{stem}.npy")
                np.save(written[2], result.maps[i, 0].detach().float().cpu().numpy().astype(np.float32))
                record["map"] = str(written[2].name)
            written[1].write_text(json.dumps(record, indent=2) + "\n")
            print("  wrote " + ", ".join(str(w) for w in written))
    if failed:
        print(f"opticam: {failed} of {len(args.images)} images could not be read", file=sys.stderr)
    return 1 if failed else 0


def _record(path: Path, loaded: LoadedModel, cam: OptiCAM, result: OptiCAMResult, i: int, seconds: float) -> dict:
    c = int(result.class_indices[i])
    return {
        "image": str(path),
        "model": loaded.name,
        "layer": cam.target_layer_name,
        "class_index": c,
        "class_name": loaded.class_name(c),
        "class_prob": float(torch.softmax(result.logits[i].float(), dim=0)[c]),
        "topk": [{**t, "prob": round(t["prob"], 6)} for t in loaded.top_k(result.logits[i])],
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


def _unique_stem(used: set[str], path: Path) -> str:
    """``path``'s stem, with a ``-2``, ``-3``... suffix if an earlier image of the same call took it."""
    stem, n = path.stem, 1
    while stem in used:
        n += 1
        stem = f"{path.stem}-{n}"
    used.add(stem)
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
        device=default_device(),
        layer=None,
        preset="paper",
        iterations=args.iterations,
        batch_size=1,
    )
    code = run_explain(ns)
    print(f"Demo output is in {Path(args.out).resolve()}")
    return code
