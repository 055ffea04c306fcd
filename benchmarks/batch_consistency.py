"""How far a batch's maps are from the same images explained one at a time (docs/models.md, "Batches and precision").

On the first N shared samples (ground-truth class, offline EfficientNet-Lite0, early stopping off), for each
setting it explains the images once as one batch and once one at a time, and prints per image the largest
absolute difference between the two maps and between the two optimized objectives:

* ``float32``: plain batching, the default;
* ``float32-invariant``: ``batch_invariant=True``;
* ``float64``: plain batching with the model and images in float64.

    .venv/bin/python benchmarks/batch_consistency.py --images 8 --iterations 100 --settings float32 float64

The JSON it writes with ``--json`` keeps the per-image numbers. It takes minutes (float64 on a CPU is slow);
it is a measurement, not a test: the tests check the same property on fewer steps.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

from opticam import OptiCAM, load_image, load_model
from opticam.evaluation.dataset import read_dataset

SAMPLES = Path(os.environ.get("OPTICAM_SAMPLES", Path(__file__).resolve().parents[2] / "shared/data/imagenet-samples"))
SETTINGS = ("float32", "float32-invariant", "float64")


def sample_batch(preprocess, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` rows of the samples' labels.csv: images in [0, 1] and their classes."""
    _, samples = read_dataset(SAMPLES, limit=count)
    x = torch.stack([preprocess(load_image(s.path)) for s in samples])
    return x, torch.tensor([s.class_index for s in samples])


def measure(setting: str, model: torch.nn.Module, layer: str, x: torch.Tensor, classes: torch.Tensor, iterations: int):
    if setting == "float64":
        model, x = copy.deepcopy(model).double(), x.double()
    cam = OptiCAM(model, layer, iterations=iterations, early_stop=False, batch_invariant=setting == "float32-invariant")
    start = time.perf_counter()
    batch = cam.explain(x, classes)
    single = [cam.explain(x[i : i + 1], classes[i : i + 1]) for i in range(x.shape[0])]
    maps = torch.cat([s.maps for s in single])
    objectives = torch.cat([s.objective_final for s in single])
    return {
        "setting": setting,
        "map_max_abs_diff": (batch.maps - maps).abs().flatten(1).amax(1).tolist(),
        "objective_abs_diff": (batch.objective_final - objectives).abs().tolist(),
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--json", type=Path, help="write the per-image numbers here")
    args = parser.parse_args(argv)
    if not (SAMPLES / "labels.csv").exists():
        print(f"no samples at {SAMPLES} (set OPTICAM_SAMPLES)", file=sys.stderr)
        return 2
    loaded = load_model("efficientnet_lite0")
    x, classes = sample_batch(loaded.preprocess, args.images)
    rows = []
    for setting in args.settings:
        row = measure(setting, loaded.model, loaded.target_layer, x, classes, args.iterations)
        rows.append(row)
        print(
            f"{setting:>18}: map diff max {max(row['map_max_abs_diff']):.2e}, "
            f"objective diff max {max(row['objective_abs_diff']):.2e} ({row['seconds']:.0f} s)",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"images": args.images, "iterations": args.iterations, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
