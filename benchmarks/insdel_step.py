"""How much a coarser insertion/deletion step changes the AUCs, read from curves already stored.

A run with ``--insdel-step 224`` (RISE's 225-point curves at 224 x 224) stores every curve point. A step
that is a multiple ``k`` of the stored one probes a subset of those points (every ``k``-th, ends included
when ``k`` divides the number of intervals), so its AUC is the trapezoid over that subset: no model pass is
needed to know what the coarser step would have reported on the same images. docs/results.md uses this to
justify ``--insdel-step 896`` (57 points) on the validation images.

    .venv/bin/python benchmarks/insdel_step.py results/lite0-pred-insdel-224.sqlite --factors 2,4,8
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from opticam.evaluation.store import ResultStore


def subsampled_auc(curve: torch.Tensor, fractions: torch.Tensor, factor: int) -> torch.Tensor:
    """Trapezoidal AUC of ``curve`` over every ``factor``-th point of ``fractions`` (both ends kept)."""
    if (len(fractions) - 1) % factor:
        raise ValueError(f"factor {factor} does not divide the {len(fractions) - 1} intervals of the stored curves")
    return torch.trapezoid(curve[..., ::factor], fractions[::factor], dim=-1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", help="an `opticam evaluate` SQLite file whose run has insertion/deletion curves")
    parser.add_argument("--run", help="run id (default: the first run with curves)")
    parser.add_argument("--factors", default="2,4,8", help="coarser steps as multiples of the stored step")
    args = parser.parse_args()
    factors = [int(f) for f in args.factors.split(",")]
    with ResultStore(args.store, readonly=True) as store:
        runs = [(r, c) for r, c, _ in store.runs() if c.get("insdel") and (args.run in (None, r))]
        if not runs:
            print(f"{args.store}: no run with insertion/deletion curves", file=sys.stderr)
            return 1
        run, config = runs[0]
        rows = store.rows(run)
    step = config["insdel"]["step"]
    fractions = torch.tensor(config["insdel"]["fractions"], dtype=torch.float64)
    print(f"run {run}: stored step {step} ({len(fractions)} points); AUCs as % (mean over images), "
          "and the largest change of one image's AUC")  # fmt: skip
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method]
        curves = {
            name: torch.tensor([json.loads(r[f"{name}_curve"]) for r in mine], dtype=torch.float64)
            for name in ("insertion", "deletion")
        }
        cells = []
        for name, curve in curves.items():
            full = subsampled_auc(curve, fractions, 1)
            parts = [f"{name} {100 * full.mean():.2f}"]
            for k in factors:
                coarse = subsampled_auc(curve, fractions, k)
                worst = 100 * (coarse - full).abs().max()
                parts.append(f"step {step * k}: {100 * coarse.mean():.2f} (max {worst:.2f})")
            cells.append(", ".join(parts))
        print(f"{method:12s} n {len(mine):4d} | " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
