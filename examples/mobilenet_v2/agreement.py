"""Check the float MobileNetV2 rebuilt by ``convert.py`` against the int8 TorchScript module it came from.

Measures, with the preprocessing of torchvision's ImageNet models (and of opticam's ``torchvision:`` names):
resize the short side to 256 (bilinear, antialiased, on the PIL image), centre-crop 224, ImageNet mean/std:

(a) on the 1000 images of ``shared/data/imagenet-samples`` (one per class): top-1 agreement between the float
    model and the int8 module, and each one's top-1 / top-5 accuracy against ``labels.csv``;
(b) on the 1200 ImageNet validation images of ``shared/data/imagenet-val-boxes/squashed-227``: the same. These
    images were resized to 227 x 227 without keeping the aspect ratio; they get the same resize 256 / crop 224
    (the preprocessing a model card's numbers assume, and the one ``opticam --model torchvision:mobilenet_v2``
    applies), so the crop drops 1/8 of each side of an already squashed image. As a secondary number the float
    model is also scored with a plain resize to 224 x 224 (no crop).

The float model is ``torchvision.models.mobilenet_v2`` (ReLU6) with the converted state dict. The quantized
module uses ReLU (``conv2d_relu``, each output clamped at ``255 * scale``), so the float model is also run
with every ReLU6 replaced by ReLU (same weights). The int8 module runs with the QNNPACK engine, one image at a
time: its code flattens with ``reshape(x, [1, -1])``, so a batch of B images becomes one row of B * 1280
features (a crash or wrong classes).

Usage::

    python examples/mobilenet_v2/agreement.py [--checkpoint mnv2.pth] [--json agreement.json] [--limit N]

Prints a JSON summary; ``--json`` also writes it.
"""

from __future__ import annotations

import argparse
import copy
import csv
import importlib.util
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms

HERE = Path(__file__).resolve().parent
SHARED = Path(__file__).resolve().parents[3] / "shared"
DEFAULT_SAMPLES = SHARED / "data/imagenet-samples"
DEFAULT_SQUASHED = SHARED / "data/imagenet-val-boxes/squashed-227"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESSING = "resize short side 256 (bilinear, antialias) + centre crop 224 + ImageNet mean/std"


def load_convert() -> ModuleType:
    """The sibling ``convert.py``, imported by file path."""
    spec = importlib.util.spec_from_file_location("mobilenet_v2_convert", HERE / "convert.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def imagenet_transform(crop: bool = True) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> normalized ``[3, 224, 224]``: resize 256 + centre crop 224, or (``crop=False``) resize to 224."""
    resize = [transforms.Resize(256, interpolation=transforms.InterpolationMode.BILINEAR), transforms.CenterCrop(224)]
    if not crop:
        resize = [transforms.Resize((224, 224), interpolation=transforms.InterpolationMode.BILINEAR)]
    steps = transforms.Compose([*resize, transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return lambda image: steps(image.convert("RGB"))


def read_labels(folder: Path, limit: int | None = None) -> list[tuple[Path, int]]:
    """``(image path, class index)`` from ``folder/labels.csv`` (columns ``file,class_index,...``), in file order."""
    with (folder / "labels.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        if not {"file", "class_index"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{folder / 'labels.csv'} has columns {reader.fieldnames}, expected file,class_index")
        rows = [(folder / r["file"], int(r["class_index"])) for r in reader]
    return rows[:limit] if limit else rows


def float_models(state: dict[str, torch.Tensor]) -> dict[str, nn.Module]:
    """``{"float_relu6": torchvision's MobileNetV2, "float_relu": the same with ReLU6 -> ReLU}``, in eval mode."""
    relu6 = torchvision.models.mobilenet_v2()
    relu6.load_state_dict(state, strict=True)
    relu6.eval()
    relu = copy.deepcopy(relu6)
    for name, module in list(relu.named_modules()):
        if isinstance(module, nn.ReLU6):
            parent, _, child = name.rpartition(".")
            setattr(relu.get_submodule(parent), child, nn.ReLU(inplace=True))
    return {"float_relu6": relu6, "float_relu": relu.eval()}


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation of two ``[N, C]`` tensors."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


@torch.no_grad()
def evaluate(
    rows: Sequence[tuple[Path, int]],
    transform: Callable[[Image.Image], torch.Tensor],
    models: dict[str, nn.Module],
    quantized: torch.jit.ScriptModule | None,
    batch_size: int = 25,
) -> dict[str, Any]:
    """Top-1/top-5 accuracy of each model, top-1 agreement and logit correlation of each float model with int8.

    Float models run in batches; the int8 module (if given) one image at a time.
    """
    names = [*models, *(["int8"] if quantized is not None else [])]
    top5: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    pearson: dict[str, list[torch.Tensor]] = {name: [] for name in models}
    seconds = dict.fromkeys(names, 0.0)
    labels = torch.tensor([c for _, c in rows])
    decode = 0.0
    for start in range(0, len(rows), batch_size):
        t0 = time.perf_counter()
        x = torch.stack([transform(Image.open(path)) for path, _ in rows[start : start + batch_size]])
        decode += time.perf_counter() - t0
        logits = {}
        for name, model in models.items():
            t0 = time.perf_counter()
            logits[name] = model(x)
            seconds[name] += time.perf_counter() - t0
        if quantized is not None:
            t0 = time.perf_counter()
            logits["int8"] = torch.cat([quantized(x[i : i + 1]) for i in range(len(x))])
            seconds["int8"] += time.perf_counter() - t0
            for name in models:
                pearson[name].append(_pearson(logits[name], logits["int8"]))
        for name in names:
            top5[name].append(logits[name].topk(5, dim=1).indices)
    n = len(rows)
    preds = {name: torch.cat(top5[name]) for name in names}
    result: dict[str, Any] = {
        "n": n,
        "top1_accuracy": {name: round(float((p[:, 0] == labels).float().mean()), 4) for name, p in preds.items()},
        "top5_accuracy": {
            name: round(float((p == labels[:, None]).any(1).float().mean()), 4) for name, p in preds.items()
        },
    }
    if quantized is not None:
        result["agreement_top1_with_int8"] = {
            name: round(float((preds[name][:, 0] == preds["int8"][:, 0]).float().mean()), 4) for name in models
        }
        result["disagreements_with_int8"] = {
            name: int((preds[name][:, 0] != preds["int8"][:, 0]).sum()) for name in models
        }
        result["logit_pearson_with_int8"] = {
            name: {"mean": round(float(torch.cat(r).mean()), 4), "min": round(float(torch.cat(r).min()), 4)}
            for name, r in pearson.items()
        }
    result["ms_per_image"] = {name: round(1000 * s / n, 1) for name, s in seconds.items()}
    result["ms_per_image"]["decode_and_preprocess"] = round(1000 * decode / n, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="state dict written by convert.py (default: convert now)")
    parser.add_argument("--source", type=Path, help="the int8 TorchScript file (default: the shared one)")
    parser.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES, help="imagenet-samples folder")
    parser.add_argument("--squashed", type=Path, default=DEFAULT_SQUASHED, help="squashed-227 folder ('' to skip)")
    parser.add_argument("--limit", type=int, help="only the first N images of each folder (quick check)")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the CPU is shared)")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.backends.quantized.engine = "qnnpack"
    convert = load_convert()
    source = args.source or convert.DEFAULT_SOURCE
    start = time.perf_counter()
    quantized = convert.load_quantized(source)
    if args.checkpoint is not None:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    else:
        state = convert.convert(quantized)
    models = float_models(state)

    summary: dict[str, Any] = {
        "source": str(source),
        "checkpoint": str(args.checkpoint) if args.checkpoint else "converted in this run",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": args.threads,
        "int8_engine": "qnnpack, one image at a time",
        "preprocessing": PREPROCESSING,
    }
    summary["imagenet_samples"] = evaluate(
        read_labels(args.samples, args.limit), imagenet_transform(), models, quantized, args.batch_size
    )
    if str(args.squashed) not in ("", "."):
        rows = read_labels(args.squashed, args.limit)
        summary["squashed_227"] = evaluate(rows, imagenet_transform(), models, quantized, args.batch_size)
        no_crop = evaluate(rows, imagenet_transform(crop=False), {"float_relu6": models["float_relu6"]}, None)
        summary["squashed_227"]["float_relu6_resize224_no_crop"] = {
            "top1_accuracy": no_crop["top1_accuracy"]["float_relu6"],
            "top5_accuracy": no_crop["top5_accuracy"]["float_relu6"],
        }
    summary["seconds_total"] = round(time.perf_counter() - start, 1)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
