"""Train the PneumoniaMNIST CNN or ViT of ``models.py`` on the CPU, seeded, and save its ``state_dict``.

    python examples/pneumoniamnist/train.py --model cnn --out examples/pneumoniamnist/cnn.pt
    python examples/pneumoniamnist/train.py --model vit --out examples/pneumoniamnist/vit.pt

The recipe (see README.md beside this file for why):

* class-weighted cross-entropy: the stored train split has 388 normal vs 3494 pneumonia images, so each class
  is weighted by ``n / (2 n_class)`` (normal x5.0, pneumonia x0.56), which trains for a balanced prior;
* light augmentation: a random affine per image (rotation up to 10 degrees, scale 0.9-1.1, shift up to 2 px)
  and a random brightness/contrast change; no horizontal flip (a flipped chest X-ray puts the heart on the wrong
  side, an image the test split never shows);
* AdamW with a linear warm-up and a cosine decay;
* the epoch kept is the one with the best **validation balanced accuracy** (ties: validation AUC). The test
  split is evaluated once, at the end, and only reported.

Everything runs on the CPU with a fixed seed and deterministic algorithms, so a rerun with the same
arguments and the same torch build gives the same weights.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared/data/pneumoniamnist/pneumoniamnist.npz"


@dataclass(frozen=True)
class Recipe:
    """Optimization settings of one model (the defaults chosen on the validation split)."""

    epochs: int
    lr: float
    weight_decay: float
    warmup_epochs: int
    batch_size: int = 64
    label_smoothing: float = 0.0


RECIPES: dict[str, Recipe] = {
    "cnn": Recipe(epochs=30, lr=2e-3, weight_decay=5e-4, warmup_epochs=1),
    "vit": Recipe(epochs=60, lr=1e-3, weight_decay=0.05, warmup_epochs=5),
}


def load_models() -> ModuleType:
    """Import ``models.py`` from beside this file (``examples/`` is not a package)."""
    spec = importlib.util.spec_from_file_location("pneumoniamnist_models", HERE / "models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def load_split(path: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of the npz as ``(images [N, 1, 28, 28] float in [0, 1], labels [N] int64)``."""
    with np.load(path) as data:
        images = torch.from_numpy(data[f"{split}_images"].astype(np.float32) / 255.0)[:, None]
        labels = torch.from_numpy(data[f"{split}_labels"].reshape(-1).astype(np.int64))
    return images, labels


def binary_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` for the positive class ``labels == 1`` (the Mann-Whitney U statistic, ties averaged)."""
    ranks = rankdata(scores)
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy, balanced accuracy (mean per-class recall) and AUC (pneumonia probability) of ``[N, 2]`` logits."""
    y = labels.numpy()
    pred = logits.argmax(1).numpy()
    recalls = [float((pred[y == c] == c).mean()) for c in (0, 1)]
    score = torch.softmax(logits.double(), 1)[:, 1].numpy()
    return {
        "acc": float((pred == y).mean()),
        "bal_acc": float(np.mean(recalls)),
        "auc": binary_auc(score, y),
        "recall_normal": recalls[0],
        "recall_pneumonia": recalls[1],
    }


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits ``[N, 2]`` of ``model`` in eval mode."""
    model.eval()
    return torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random affine (rotation <= 10 deg, scale 0.9-1.1, shift <= 2 px) and brightness/contrast, per image."""
    b = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(b, generator=generator) * (hi - lo) + lo

    angle = uniform(-10.0, 10.0) * math.pi / 180
    scale = uniform(0.9, 1.1)
    shift = uniform(-2.0, 2.0), uniform(-2.0, 2.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin, shift[0] * 2 / x.shape[-1]], 1),
            torch.stack([sin, cos, shift[1] * 2 / x.shape[-2]], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = uniform(0.8, 1.2)[:, None, None, None]
    brightness = uniform(-0.1, 0.1)[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + brightness).clamp(0.0, 1.0)


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(
    kind: str, data: Path, recipe: Recipe, seed: int = 0, log: bool = True
) -> tuple[nn.Module, dict[str, float], int]:
    """Train ``models.<kind>()`` and return the best-on-validation model, its validation metrics and epoch."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)
    generator = torch.Generator().manual_seed(seed)

    model: nn.Module = getattr(load_models(), kind)()
    x_train, y_train = load_split(data, "train")
    x_val, y_val = load_split(data, "val")

    counts = torch.bincount(y_train, minlength=2).double()
    class_weights = (counts.sum() / (2 * counts)).float()
    criterion = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=recipe.label_smoothing)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n and "cls_token" not in n]
    no_decay = [
        p for n, p in model.named_parameters() if not (p.ndim > 1 and "pos_embed" not in n and "cls_token" not in n)
    ]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr,
    )
    steps_per_epoch = math.ceil(len(x_train) / recipe.batch_size)
    total, warmup = recipe.epochs * steps_per_epoch, recipe.warmup_epochs * steps_per_epoch

    best: tuple[float, float] = (-1.0, -1.0)
    best_state, best_metrics, best_epoch = None, {}, -1
    step, start = 0, time.perf_counter()
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        running = 0.0
        for i in range(0, len(order), recipe.batch_size):
            idx = order[i : i + recipe.batch_size]
            x = augment(x_train[idx], generator)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, warmup, recipe.lr)
            loss = criterion(model(x), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(idx)
            step += 1
        val = metrics(predict(model, x_val), y_val)
        key = (val["bal_acc"], val["auc"])
        marker = ""
        if key > best:
            best, best_state, best_metrics, best_epoch = key, copy.deepcopy(model.state_dict()), val, epoch
            marker = " *"
        if log:
            print(
                f"epoch {epoch:3d}  loss {running / len(x_train):.4f}  val acc {val['acc']:.4f}  "
                f"bal {val['bal_acc']:.4f}  auc {val['auc']:.4f}  ({time.perf_counter() - start:.0f} s){marker}",
                flush=True,
            )
    assert best_state is not None
    model.load_state_dict(best_state)
    return model, best_metrics, best_epoch


def report(name: str, m: dict[str, float]) -> str:
    """One line of metrics."""
    return (
        f"{name:5s} acc {m['acc']:.4f}  balanced acc {m['bal_acc']:.4f}  AUC {m['auc']:.4f}  "
        f"(recall normal {m['recall_normal']:.4f}, pneumonia {m['recall_pneumonia']:.4f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(RECIPES), required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="pneumoniamnist.npz (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="where to save the state_dict (default: <model>.pt beside this file)")
    parser.add_argument("--epochs", type=int, help="default: the model's recipe")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the model's recipe)")
    parser.add_argument("--weight-decay", type=float, help="default: the model's recipe")
    parser.add_argument("--label-smoothing", type=float, help="default: the model's recipe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default: %(default)s; on a small shared CPU two threads can be 7x slower)",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    recipe = RECIPES[args.model]
    overrides = {
        "epochs": args.epochs,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "label_smoothing": args.label_smoothing,
    }
    recipe = Recipe(**{**recipe.__dict__, **{k: v for k, v in overrides.items() if v is not None}})
    out = args.out or HERE / f"{args.model}.pt"
    print(f"{args.model}: {recipe}, seed {args.seed}, data {args.data}", flush=True)

    start = time.perf_counter()
    model, _, epoch = train(args.model, args.data, recipe, seed=args.seed)
    seconds = time.perf_counter() - start
    torch.save(model.state_dict(), out)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB, {n_params} parameters): epoch {epoch}, {seconds:.0f} s")

    for split in ("val", "test"):  # test is reported only; nothing above looked at it
        x, y = load_split(args.data, split)
        print(report(split, metrics(predict(model, x), y)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
