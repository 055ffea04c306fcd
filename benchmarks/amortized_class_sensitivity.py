"""Class sensitivity of amortized Opti-CAM against Opti-CAM (issue 28, part 6): an explanation, not a learned prior.

For each image, each method explains the model's top-1 and its top-2 class; the two maps are compared by their
Spearman rank correlation over the pixels (1: the same map whatever the class). A head that ignored the class
would give correlation 1 at ``refine=0``. Reported per method: the mean correlation with a 95 % bootstrap
interval, and the paired difference to ``opticam``'s correlation on the same images.

    .venv/bin/python benchmarks/amortized_class_sensitivity.py --limit 24 \
        --json benchmarks/results/amortized-class-sensitivity.json

Images: the first ``--limit`` rows of ``data/imagenet-samples`` (never used to train the shipped head).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from opticam import load_model
from opticam.evaluation.dataset import load_sample, read_dataset
from opticam.methods.registry import create_method

sys.path.insert(0, str(Path(__file__).resolve().parent))
from intervals import interval  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "shared/data/imagenet-samples"
METHODS = ["opticam", "opticam-amortized", "opticam-amortized(refine=3)", "opticam-amortized(refine=9)", "gradcam"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=SAMPLES)
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    loaded = load_model("efficientnet_lite0")
    _, samples = read_dataset(args.images, args.limit, boxes=None)
    x = torch.stack([loaded.preprocess(load_sample(s)) for s in samples])
    with torch.no_grad():
        top2 = loaded.model(x).topk(2, dim=1).indices
    corr: dict[str, np.ndarray] = {}
    for spec in METHODS:
        method = create_method(spec, loaded)
        values = []
        for start in range(0, len(x), 8):
            chunk, classes = x[start : start + 8], top2[start : start + 8]
            first = method.explain(chunk, classes[:, 0]).maps.flatten(1)
            second = method.explain(chunk, classes[:, 1]).maps.flatten(1)
            values += [spearmanr(a.numpy(), b.numpy()).statistic for a, b in zip(first, second, strict=True)]
        corr[spec] = np.nan_to_num(np.array(values), nan=1.0)  # a constant map pair counts as identical
        print(f"{spec}: {corr[spec].mean():.3f}", file=sys.stderr)
    rows = {}
    for spec, v in corr.items():
        lo, hi = interval(v)
        d = v - corr["opticam"]
        dlo, dhi = interval(d)
        rows[spec] = {"n": len(v), "mean": v.mean(), "ci": [lo, hi], "minus_opticam": d.mean(), "diff_ci": [dlo, dhi]}
    print("| method | n | top-1 vs top-2 map, Spearman [95 % CI] | minus opticam's [95 % CI] |")
    print("| --- | ---: | ---: | ---: |")
    for spec, r in rows.items():
        print(
            f"| {spec} | {r['n']} | {r['mean']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] | "
            f"{r['minus_opticam']:+.3f} [{r['diff_ci'][0]:+.3f}, {r['diff_ci'][1]:+.3f}] |"
        )
    if args.json:
        args.json.write_text(json.dumps({"images": [s.key for s in samples], "methods": rows}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
