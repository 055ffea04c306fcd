"""Distillation targets for amortized Opti-CAM (issue 28): paper Opti-CAM's channel weights, computed once.

Issue 28 starts a learned explainer from **distillation**: regress a head onto paper Opti-CAM's own output for
the training images, then fine-tune it on the objective. The expensive part is that output (about 100 forward
and backward passes per image), so it is computed once here and kept. Per image: the optimized channel weights
``softmax(u*)`` (float16, ``[K]``), the class explained (the model's top-1, the issue's default target), the
label, the objective before and after, the steps taken. The map is ``sum_k w_k A_k`` on the layer's features,
recomputable from the weights and the image, so maps are not stored.

Only images that no evaluation uses: rows 200-999 of ``data/imagenet-samples`` (``labels.csv`` order) by default;
the first 200 and ``data/imagenet-val-boxes`` are refused. Resumable: one shard file per chunk of images, a
chunk already written is skipped; ``merge`` joins the shards into one file.

    .venv/bin/python benchmarks/distill_targets.py run --out benchmarks/results/distill-lite0 [--rows 200:1000]
    .venv/bin/python benchmarks/distill_targets.py merge benchmarks/results/distill-lite0 OUT.pt

Each shard and the merged file record the model's name, its layer, a fingerprint of its weights (sha256 of
the state dict's bytes, 16 hex digits) and the Opti-CAM settings, so a head trained on them can refuse
another model or layer.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import torch

from opticam import OptiCAM, load_image, load_model
from opticam.models.fingerprint import weights_fingerprint

SAMPLES = Path(os.environ.get("OPTICAM_SAMPLES", Path(__file__).resolve().parents[2] / "shared/data/imagenet-samples"))
HELD_OUT = 200
"""The first rows of labels.csv are evaluation images (``opticam evaluate --limit 200``): never targets."""


def rows(spec: str) -> range:
    start, _, stop = spec.partition(":")
    chosen = range(int(start), int(stop))
    if chosen.start < HELD_OUT:
        raise SystemExit(f"--rows {spec}: rows below {HELD_OUT} are evaluation images and are never targets")
    return chosen


def run(args: argparse.Namespace) -> int:
    if "imagenet-val-boxes" in str(args.samples):
        raise SystemExit("the validation images with boxes are evaluation images: never distillation targets")
    torch.set_num_threads(args.threads)
    with (args.samples / "labels.csv").open(newline="") as f:
        listed = [(r["file"], int(r["class_index"])) for r in csv.DictReader(f)]
    chosen = rows(args.rows)
    loaded = load_model(args.model)
    meta = {
        "model": loaded.name,
        "layer": loaded.resolved_layer(),
        "weights_fingerprint": weights_fingerprint(loaded.model),
        "opticam": {"iterations": args.iterations, "lr": 0.1, "objective": "mask", "normalization": "range"},
        "target": "predicted",
        "samples": str(args.samples.name),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    cam = OptiCAM(loaded.model, loaded.target_layer, iterations=args.iterations)
    starts = list(range(chosen.start, min(chosen.stop, len(listed)), args.chunk))
    for n, start in enumerate(starts):
        shard = args.out / f"rows-{start:05d}.pt"
        if shard.exists():
            continue
        stop = min(start + args.chunk, chosen.stop, len(listed))
        batch = listed[start:stop]
        x = torch.stack([loaded.preprocess(load_image(args.samples / name)) for name, _ in batch])
        began = time.perf_counter()
        result = cam.explain(x)
        seconds = time.perf_counter() - began
        d = result.diagnostics
        record = {
            **meta,
            "rows": list(range(start, stop)),
            "files": [name for name, _ in batch],
            "labels": torch.tensor([label for _, label in batch]),
            "classes": result.class_indices.cpu(),
            "weights": result.weights.detach().cpu().half(),
            "objective_initial": d.objective_initial.cpu() if d.objective_initial is not None else None,
            "objective_final": d.objective_final.cpu() if d.objective_final is not None else None,
            "iterations": d.iterations.cpu() if d.iterations is not None else None,
            "seconds": seconds,
        }
        tmp = shard.with_suffix(".tmp")
        torch.save(record, tmp)
        tmp.replace(shard)  # a shard is whole or absent: an interrupted chunk is computed again
        print(f"chunk {n + 1}/{len(starts)} rows {start}-{stop - 1}: {seconds / len(batch):.1f} s/img", file=sys.stderr)
    return 0


def merge(args: argparse.Namespace) -> int:
    shards = sorted(args.folder.glob("rows-*.pt"))
    if not shards:
        raise SystemExit(f"{args.folder}: no shards")
    parts = [torch.load(s, weights_only=True) for s in shards]
    keys = ("model", "layer", "weights_fingerprint", "opticam", "target", "samples")
    for p, s in zip(parts, shards, strict=True):
        if any(p[k] != parts[0][k] for k in keys):
            raise SystemExit(f"{s}: made with another model, layer or setting than {shards[0]}")
    merged = {k: parts[0][k] for k in keys}
    for k in ("rows", "files"):
        merged[k] = [v for p in parts for v in p[k]]
    for k in ("labels", "classes", "weights", "objective_initial", "objective_final", "iterations"):
        merged[k] = torch.cat([p[k] for p in parts])
    merged["seconds"] = sum(p["seconds"] for p in parts)
    torch.save(merged, args.out)
    print(f"{args.out}: {len(merged['rows'])} images, {merged['seconds'] / 60:.0f} minutes of Opti-CAM")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(required=True)
    r = sub.add_parser("run", help="compute the targets, resumably")
    r.add_argument("--out", type=Path, required=True, help="folder of shards")
    r.add_argument("--rows", default="200:1000", help="labels.csv rows START:STOP (default 200:1000; >= 200)")
    r.add_argument("--samples", type=Path, default=SAMPLES, help="the ImageNet samples folder (labels.csv)")
    r.add_argument("--model", default="efficientnet_lite0", help="model name (default efficientnet_lite0)")
    r.add_argument("--iterations", type=int, default=100, help="Opti-CAM steps (default 100, the paper's)")
    r.add_argument("--chunk", type=int, default=8, help="images per shard and batch (default 8)")
    r.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    r.set_defaults(func=run)
    m = sub.add_parser("merge", help="join the shards into one file")
    m.add_argument("folder", type=Path)
    m.add_argument("out", type=Path)
    m.set_defaults(func=merge)
    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
