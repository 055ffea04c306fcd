"""Reading a labelled image set: a ``labels.csv`` (``file,class_index``) or ImageNet-style synset folders.

* A CSV file, or a folder holding ``labels.csv``: one row per image with at least the columns ``file``
  (relative to the CSV's folder) and ``class_index`` (as in ``../shared/data/imagenet-samples``).
* Otherwise a folder of synset folders (``n01440764/``, ``n01443537/``, ...): the folder name is the
  WordNet id, mapped to the ImageNet-1k class index with timm's offline ImageNet table; every image file
  inside (sorted) is a sample of that class.

Samples come in a fixed order (CSV order, or sorted folders then files), so ``--limit N`` always means the
same N images and a resumed run sees the same list.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import OpticamError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".gif"}
SYNSET = re.compile(r"^n\d{8}$")


class DatasetError(OpticamError, ValueError):
    """The image set cannot be read: missing, no labels, malformed CSV, unknown synset."""


@dataclass(frozen=True)
class Sample:
    """One labelled image: ``key`` is its path relative to the dataset root (the row key in the store)."""

    path: Path
    class_index: int
    key: str


def read_dataset(source: str | Path, limit: int | None = None) -> tuple[Path, list[Sample]]:
    """``(root, samples)`` from a labels CSV, a folder with ``labels.csv``, or synset folders.

    Raises:
        DatasetError: with what is wrong and what was expected.
    """
    source = Path(source)
    if limit is not None and limit < 1:
        raise DatasetError(f"--limit must be at least 1, got {limit}")
    if not source.exists():
        raise DatasetError(f"{source} does not exist: give a labels.csv or a folder of labelled images")
    if source.is_file():
        samples = _from_csv(source)
        root = source.parent
    elif (source / "labels.csv").is_file():
        samples = _from_csv(source / "labels.csv")
        root = source
    else:
        samples = _from_synsets(source)
        root = source
    if not samples:
        raise DatasetError(f"no images found in {source}")
    return root.resolve(), samples[:limit] if limit else samples


def _from_csv(path: Path) -> list[Sample]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"file", "class_index"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{path} lacks the column(s) {sorted(missing)}; expected a header 'file,class_index'")
        samples = []
        for line, row in enumerate(reader, start=2):
            try:
                index = int(row["class_index"])
            except (TypeError, ValueError) as exc:
                raise DatasetError(f"{path}:{line}: class_index {row['class_index']!r} is not an integer") from exc
            if not row["file"]:
                raise DatasetError(f"{path}:{line}: empty file name")
            samples.append(Sample(path.parent / row["file"], index, row["file"]))
    return samples


def _from_synsets(root: Path) -> list[Sample]:
    from timm.data import ImageNetInfo

    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise DatasetError(f"{root} has neither a labels.csv nor class folders (n01440764/ ...)")
    info = ImageNetInfo()
    index_of = {info.index_to_label_name(i): i for i in range(info.num_classes())}
    samples = []
    for folder in folders:
        if not SYNSET.match(folder.name) or folder.name not in index_of:
            raise DatasetError(f"{folder} is not an ImageNet-1k synset folder (expected names like n01440764)")
        for file in sorted(folder.iterdir()):
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(Sample(file, index_of[folder.name], f"{folder.name}/{file.name}"))
    return samples
