"""``opticam explain`` and ``opticam demo``: saliency maps for image files, as PNG overlays and JSON.

``--save-maps`` also writes each raw map as ``.npy`` (float32 ``[H, W]`` in [0, 1], the input's resolution);
``--topk K`` explains each image's K most probable classes in one batched run, and every file name then
carries the class (``<stem>_c<class>.png/.json/.npy``).
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ImageLoadError
from ..evaluation.distributed import WorkerRecipe
from ..images import IMAGE_SUFFIXES, load_image
from ..methods.opticam import OptiCAM, OptiCAMResult
from ..methods.presets import PRESETS, preset_config
from ..models.loading import LoadedModel
from ..models.specs import DEFAULT_MODEL
from ..viz.encode import png_bytes
from ..viz.overlay import overlay
from .common import (
    add_model_arguments,
    add_opticam_arguments,
    add_ray_arguments,
    check_batch_size,
    check_class_argument,
    check_ray_arguments,
    check_topk,
    default_device,
    model_from_args,
    opticam_config_from_args,
    ray_pool,
    read_images,
    sample_image,
    worker_process_setup,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="explain images: heatmap PNG + JSON per image")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders (searched recursively)")
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
    add_ray_arguments(p)
    p.set_defaults(func=run_explain)

    d = sub.add_parser("demo", help="explain a sample image with the offline default model")
    d.add_argument("--out", default="opticam-demo", help="output folder (default ./opticam-demo)")
    d.add_argument("--iterations", type=int, default=100)
    d.set_defaults(func=run_demo)


def run_explain(args: argparse.Namespace) -> int:
    check_batch_size(args.batch_size)
    if getattr(args, "ray", False) or getattr(args, "ray_address", None):
        check_ray_arguments(args)
    extra = {"batch_invariant": True} if getattr(args, "batch_invariant", False) else {}
    config = opticam_config_from_args(args, preset_config(getattr(args, "preset", None) or "paper"), **extra)
    loaded = model_from_args(args)
    check_class_argument(args.class_index, loaded)
    topk = getattr(args, "topk", None)
    if topk is not None:
        check_topk(topk, args.class_index, loaded)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = expand_images(args.images)
    if getattr(args, "ray", False):
        return _explain_with_ray(args, config, paths, out)
    job = ExplainJob(args.class_index, topk, bool(getattr(args, "save_maps", False)))
    cam = job.method(loaded, args.layer, config, progress=True)
    images, failed = read_images(paths, loaded)
    used: set[str] = set()  # stems written by this call, so two cat.jpg from different folders both survive
    for start in range(0, len(images), args.batch_size):
        chunk = images[start : start + args.batch_size]
        stems = [_unique_stem(used, path) for path, _ in chunk]
        for output in job.explain(loaded, cam, chunk, stems, args.device):
            _write(output, out)
    return _finish(failed, len(paths))


def _write(output: ExplainOutput, out: Path) -> None:
    """Write one map's files and say so (the same for a map computed here and one from a Ray worker)."""
    _print_top5(Path(output.record["image"]), output.record)
    print("  wrote " + ", ".join(str(w) for w in output.write(out)))


def _finish(failed: int, total: int) -> int:
    """The exit status: 1 when some images could not be read (said once more at the end), else 0."""
    if failed:
        print(f"opticam: {failed} of {total} images could not be read", file=sys.stderr)
    return 1 if failed else 0


def expand_images(items: list[str]) -> list[str]:
    """The image arguments with each folder replaced by its image files (recursively, sorted)."""
    paths = []
    for item in items:
        folder = Path(item)
        if folder.is_dir():
            paths += sorted(str(f) for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            paths.append(item)
    return paths


@dataclass
class ExplainOutput:
    """One map's files as bytes (a Ray worker sends them to the driver, which writes them)."""

    stem: str
    png: bytes
    record: dict
    npy: bytes | None

    def write(self, out: Path) -> list[Path]:
        written = [out / f"{self.stem}.png", out / f"{self.stem}.json"]
        written[0].write_bytes(self.png)
        if self.npy is not None:
            written.append(out / f"{self.stem}.npy")
            written[2].write_bytes(self.npy)
        written[1].write_text(json.dumps(self.record, indent=2) + "\n")
        return written


@dataclass(frozen=True)
class ExplainJob:
    """What ``opticam explain`` computes per image (the same in one process and on a Ray worker)."""

    class_index: int | None
    topk: int | None
    save_maps: bool

    def method(self, loaded: LoadedModel, layer: str | None, config, progress: bool = False) -> OptiCAM:
        return OptiCAM(loaded.model, layer or loaded.target_layer, loaded.reshape_transform, config=config,
                       progress=progress)  # fmt: skip

    def explain(self, loaded: LoadedModel, cam: OptiCAM, chunk, stems: list[str], device) -> list[ExplainOutput]:
        """Maps for ``chunk`` (``[(path, preprocessed image)]``, one batch) as :class:`ExplainOutput`."""
        x = torch.stack([t for _, t in chunk]).to(device)
        begin = time.perf_counter()
        if self.topk is None:
            targets = self.class_index
        else:
            with torch.no_grad():
                targets = loaded.model(x).topk(self.topk, dim=1).indices  # [B, K]: one map per image and class
        result = cam.explain(x, targets)
        seconds = (time.perf_counter() - begin) / result.maps.shape[0]
        rows = result.image_indices.tolist() if result.image_indices is not None else list(range(len(chunk)))
        outputs = []
        for i, image in enumerate(rows):
            path, tensor = chunk[image]
            record = _record(path, loaded, cam, result, i, seconds)
            stem = stems[image] if self.topk is None else f"{stems[image]}_c{record['class_index']}"
            npy = None
            if self.save_maps:
                buffer = io.BytesIO()
                np.save(buffer, result.maps[i, 0].detach().float().cpu().numpy().astype(np.float32))
                npy = buffer.getvalue()
                record["map"] = f"{stem}.npy"
            outputs.append(ExplainOutput(stem, png_bytes(overlay(tensor, result.maps[i])), record, npy))
        return outputs


@dataclass
class ExplainChunk:
    outputs: list[ExplainOutput]
    reports: list[str]
    pid: int


class ExplainWorker:
    """A Ray actor for ``opticam explain --ray``: builds the model and Opti-CAM once, decodes its own images."""

    def __init__(self, threads: int, recipe: WorkerRecipe, config, job: ExplainJob) -> None:
        from ..evaluation.distributed import worker_setup

        self.device = worker_setup(threads, recipe.setup)
        self.loaded, _ = recipe.build(self.device)
        self.cam = job.method(self.loaded, recipe.layer, config)
        self.job = job

    def pid(self) -> int:
        return os.getpid()

    def run(self, number: int, items: list[tuple[str, str, str]]) -> ExplainChunk:
        """``items``: ``(absolute path, the path as given, stem)`` (a worker's working folder is its own)."""
        chunk, stems, reports = [], [], []
        for absolute, path, stem in items:
            try:
                chunk.append((Path(path), self.loaded.preprocess(load_image(absolute))))
                stems.append(stem)
            except ImageLoadError as exc:
                reports.append(f"skipping {exc}")
        outputs = self.job.explain(self.loaded, self.cam, chunk, stems, self.device) if chunk else []
        return ExplainChunk(outputs, reports, os.getpid())


def _done(out: Path, stem: str, job: ExplainJob) -> bool:
    """Whether an earlier run wrote every output of the image with this stem."""
    if job.topk is not None:
        return len(list(out.glob(f"{glob.escape(stem)}_c*.json"))) >= job.topk
    names = [f"{stem}.png", f"{stem}.json"] + ([f"{stem}.npy"] if job.save_maps else [])
    return all((out / n).is_file() for n in names)


def _explain_with_ray(args: argparse.Namespace, config, paths: list[str], out: Path) -> int:
    """``--ray``: the images in chunks of ``--batch-size`` on the worker pool; the driver writes the files and
    skips images whose outputs exist (so the same command resumes)."""
    job = ExplainJob(args.class_index, getattr(args, "topk", None), bool(getattr(args, "save_maps", False)))
    used: set[str] = set()
    items = [(str(Path(p).resolve()), p, _unique_stem(used, Path(p))) for p in paths]
    todo = [item for item in items if not _done(out, item[2], job)]
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
            for output in result.outputs:
                _write(output, out)
    return _finish(failed, len(paths))


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
        "objective": cam.config.objective,
        "normalization": cam.config.normalization,
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
