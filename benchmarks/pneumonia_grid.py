"""The comparison grid on PneumoniaMNIST X-rays for the example CNN and ViT (docs/results.md, "PneumoniaMNIST").

Picks the first ``--per-class`` test images of each class (normal, pneumonia) in the ``.npz`` order, explains each
one's **ground-truth** class with every method (as ``opticam evaluate --target gt`` does) and draws one grid per
model: the X-ray, then each method's map over it, titled with that image's AD / AG terms. Everything goes through
the library's own paths (``load_model`` with the factory form, ``read_dataset`` + ``load_sample``, ``explain_with``,
``comparison_grid``), so the maps are the ones the evaluation scored.

    .venv/bin/python benchmarks/pneumonia_grid.py --out docs/pneumonia-grid-{model}.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from opticam.evaluation import load_sample, read_dataset
from opticam.evaluation.scoring import explain_with
from opticam.models import load_model
from opticam.viz.encode import save_figure
from opticam.viz.grid import GridRow, comparison_grid

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples/pneumoniamnist"
DATA = REPO.parent / "shared/data/pneumoniamnist/pneumoniamnist.npz"
METHODS = ["opticam", "gradcam", "gradcampp", "xgradcam", "layercam", "scorecam", "fakecam"]


def pick(samples, per_class: int) -> list:
    """The first ``per_class`` samples of each class, in file order (classes in index order)."""
    chosen = []
    for c in sorted({s.class_index for s in samples}):
        chosen += [s for s in samples if s.class_index == c][:per_class]
    return chosen


def grid(kind: str, samples, out: Path, dpi: int) -> Path:
    loaded = load_model(f"{EXAMPLE / 'models.py'}:{kind}", checkpoint=EXAMPLE / f"{kind}.pt")
    x = torch.stack([loaded.preprocess(load_sample(s)) for s in samples])
    targets = torch.tensor([s.class_index for s in samples])
    with torch.no_grad():
        probs = torch.softmax(loaded.model(x), dim=1)
    with torch.inference_mode(False):
        results = explain_with(loaded, x, METHODS, targets)
    rows = []
    for i, s in enumerate(samples):
        c = s.class_index
        rows.append(
            GridRow(
                image=x[i],
                label=f"{kind.upper()} {s.key}\n{loaded.class_name(c)}, p = {float(probs[i, c]):.2f}",
                maps={m: results[m].maps[i, 0] for m in METHODS},
                scores={m: results[m].scores[i] for m in METHODS},
            )
        )
        print(kind, s.key, loaded.class_name(c), " ".join(f"{m} AD {results[m].scores[i]['AD']:.1f}" for m in METHODS))
    return save_figure(comparison_grid(rows, METHODS, cell=1.55), out, dpi=dpi)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--out", default="docs/pneumonia-grid-{model}.png", help="{model} becomes cnn / vit")
    parser.add_argument("--dpi", type=int, default=72)
    args = parser.parse_args()
    torch.manual_seed(0)
    _, samples = read_dataset(args.data, split="test")
    chosen = pick(samples, args.per_class)
    for kind in ("cnn", "vit"):
        print("wrote", grid(kind, chosen, Path(args.out.format(model=kind)), args.dpi))


if __name__ == "__main__":
    main()
