"""The images an explainer head is trained on (a folder, a labelled data set, a MedMNIST split); their augmentation.

* :func:`training_images` reads them once, preprocessed for the model (``loaded.preprocess``), with their
  labels where the source has some: a folder with ``labels.csv`` or synset folders, an ``.npz`` split
  (:func:`opticam.evaluation.dataset.read_dataset`), or any folder of image files (no labels: the target is
  then the predicted class).
* :func:`augment` draws a random resized crop and a horizontal flip per image from a seeded generator, so a
  training run is reproducible and resumes to the same result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import DatasetError, ImageLoadError, UsageError
from ..evaluation import npz
from ..evaluation.dataset import SYNSET, Sample, load_sample, read_dataset
from ..images import IMAGE_SUFFIXES, load_image


@dataclass
class TrainingImages:
    """Preprocessed images ``[N, C, H, W]`` (float16 to halve the memory), their keys, and labels or ``None``."""

    images: torch.Tensor
    keys: list[str]
    labels: torch.Tensor | None
    skipped: list[str]

    def __len__(self) -> int:
        return len(self.keys)


def _has_labels(source: Path) -> bool:
    if npz.is_npz(source) or source.suffix.lower() == ".csv":
        return True
    return source.is_dir() and (
        (source / "labels.csv").is_file() or any(p.is_dir() and SYNSET.match(p.name) for p in source.iterdir())
    )


def training_images(
    source: str | Path,
    preprocess: Callable[[Image.Image], torch.Tensor],
    *,
    split: str | None = None,
    rows: tuple[int, int] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainingImages:
    """The images of ``source`` (``rows``: only rows ``start <= i < stop`` in the source's order), preprocessed.

    Files that cannot be read are skipped and listed in ``skipped``; no image at all is a ``DatasetError``.
    """
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"{source} does not exist: give a folder of images, a labels.csv or a MedMNIST .npz")
    if _has_labels(source):
        _, samples = read_dataset(source, boxes=None, split=split)
        items: list[tuple[str, Callable[[], Image.Image], int | None]] = [
            (s.key, _loader(s), s.class_index) for s in samples
        ]
    else:
        if split is not None:
            raise UsageError(f"--split {split} is for MedMNIST .npz files, and {source} is not one")
        files = sorted(f for f in source.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        items = [(str(f.relative_to(source)), _file_loader(f), None) for f in files]
    if rows is not None:
        items = items[rows[0] : rows[1]]
    if not items:
        raise DatasetError(f"{source}: no images to train on" + (f" in rows {rows[0]}:{rows[1]}" if rows else ""))
    tensors, keys, labels, skipped = [], [], [], []
    for key, load, label in items:
        try:
            tensors.append(preprocess(load()).half())
        except (ImageLoadError, DatasetError, OSError) as exc:
            skipped.append(f"{key}: {exc}")
            continue
        keys.append(key)
        labels.append(label)
    if not tensors:
        raise DatasetError(f"{source}: none of its {len(items)} images could be read")
    if log is not None and skipped:
        log(f"skipped {len(skipped)} unreadable images (first: {skipped[0]})")
    with_labels = torch.tensor(labels) if all(v is not None for v in labels) else None
    return TrainingImages(torch.stack(tensors), keys, with_labels, skipped)


def _loader(sample: Sample) -> Callable[[], Image.Image]:
    return lambda: load_sample(sample)


def _file_loader(path: Path) -> Callable[[], Image.Image]:
    return lambda: load_image(path)


def augment(x: torch.Tensor, generator: torch.Generator, scale: tuple[float, float] = (0.35, 1.0)) -> torch.Tensor:
    """Per image: a random crop of ``scale`` of its area (aspect 3/4 to 4/3) resized back, then a flip with
    probability 1/2; every draw from ``generator`` (CPU), so the same seed gives the same batch."""
    batch, _, height, width = x.shape
    out = []
    for i in range(batch):
        area = height * width * float(torch.empty(1).uniform_(*scale, generator=generator))
        log_ratio = float(torch.empty(1).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator))
        ratio = math.exp(log_ratio)
        h = min(height, max(1, round(math.sqrt(area / ratio))))
        w = min(width, max(1, round(math.sqrt(area * ratio))))
        top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
        crop = x[i : i + 1, :, top : top + h, left : left + w].float()
        crop = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        if bool(torch.rand(1, generator=generator) < 0.5):
            crop = crop.flip(-1)
        out.append(crop.clamp(0, 1))
    return torch.cat(out).to(x.dtype)
