"""Check the shipped PneumoniaMNIST weights: load ``cnn.pt`` / ``vit.pt`` strictly and score the 624 test images.

    python examples/pneumoniamnist/evaluate_models.py [--data PATH/pneumoniamnist.npz] [--split test]

Prints accuracy, balanced accuracy and AUC (of the pneumonia probability) per model. Needs only torch, numpy
and scipy (for the AUC's ranks), not opticam.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

HERE = Path(__file__).resolve().parent


def _import(name: str) -> ModuleType:
    """Import ``<name>.py`` from beside this file (``examples/`` is not a package)."""
    spec = importlib.util.spec_from_file_location(f"pneumoniamnist_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def load(kind: str, checkpoint: Path | None = None) -> torch.nn.Module:
    """``models.<kind>()`` with the weights of ``checkpoint`` (default ``<kind>.pt`` beside this file), strict,
    in eval mode."""
    model = getattr(_import("models"), kind)()
    state = torch.load(checkpoint or HERE / f"{kind}.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def evaluate(kind: str, data: Path, split: str = "test", checkpoint: Path | None = None) -> dict[str, float]:
    """Accuracy, balanced accuracy and AUC of the trained ``kind`` model on one split of ``data``."""
    train = _import("train")
    images, labels = train.load_split(data, split)
    return train.metrics(train.predict(load(kind, checkpoint), images), labels)


def main(argv: list[str] | None = None) -> int:
    train = _import("train")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=train.DEFAULT_DATA, help="default: %(default)s")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test")
    parser.add_argument("--models", nargs="+", choices=("cnn", "vit"), default=["cnn", "vit"])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for kind in args.models:
        m = evaluate(kind, args.data, args.split)
        n = len(train.load_split(args.data, args.split)[1])
        print(f"{kind} on {args.split} ({n} images): " + train.report("", m).strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
