"""Reading a labelled image set: a ``labels.csv`` (``file,class_index``), ImageNet-style synset folders, or a
MedMNIST ``.npz`` file and a split.

* A CSV file, or a folder holding ``labels.csv``: one row per image with at least the columns ``file``
  (relative to the CSV's folder) and ``class_index`` (as in ``../shared/data/imagenet-samples``).
* Otherwise a folder of synset folders (``n01440764/``, ``n01443537/``, ...): the folder name is the
  WordNet id, mapped to the ImageNet-1k class index with timm's offline ImageNet table; every image file
  inside (sorted) is a sample of that class.
* A MedMNIST-style ``.npz`` file with ``split=`` (``train``, ``val`` or ``test``): its ``<split>_images`` and
  ``<split>_labels`` arrays (:mod:`.npz`); keys ``test/000123`` (split and row). Such a sample carries the
  file, the split and the row, not the pixels, so it stays small on its way to a Ray worker.

:func:`load_sample` is the one way to get a sample's image, whichever the source.

Boxes (optional): a ``boxes.csv`` beside ``labels.csv`` (or any file given as ``boxes=``) with the header
``file,x0,y0,x1,y1``, one row per box in the stored image's pixels (``x1``/``y1`` exclusive), several rows
per image allowed. Each sample then carries its boxes (an empty tuple when the file has no row for it); a
dataset without a boxes file gives samples with ``boxes = None``.

Samples come in a fixed order (CSV order, or sorted folders then files), so ``--limit N`` always means the
same N images and a resumed run sees the same list.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from PIL import Image

from ..errors import DatasetError  # defined there since the .npz reader raises it too; importable from here
from ..images import IMAGE_SUFFIXES, decode_image, load_image, read_image_file
from . import npz

SYNSET = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class Sample:
    """One labelled image: ``key`` is its path relative to the dataset root (the row key in the store).

    ``boxes``: the ground-truth boxes ``(x0, y0, x1, y1)`` in the stored image's pixels, ``()`` when the
    boxes file has none for this image, ``None`` when the dataset has no boxes file at all.

    ``split`` and ``index``: for a sample of an ``.npz`` data set, ``path`` is the ``.npz`` file and the image
    is row ``index`` of its ``<split>_images`` (``key`` is ``<split>/<index:06d>``); ``None`` for image files.
    """

    path: Path
    class_index: int
    key: str
    boxes: tuple[tuple[float, float, float, float], ...] | None = None
    split: str | None = None
    index: int | None = None


def load_sample(sample: Sample) -> Image.Image:
    """The sample's image as a PIL image: the decoded file (RGB), or the ``.npz`` row (``L`` for grayscale
    arrays, so a 1-channel model sees the stored pixels unchanged; ``RGB`` for colour).

    Raises:
        ImageLoadError: an image file that is missing or cannot be decoded.
        DatasetError: an ``.npz`` file that no longer has the sample's split or row.
    """
    return _decode_sample(sample)[0]


def image_for_key(root: Path, key: str) -> Image.Image:
    """The image stored under ``key`` in the data set at ``root`` (a folder, or an ``.npz`` file whose keys
    are ``<split>/<row>``), for readers of a store (the report)."""
    if npz.is_npz(root):
        split, index = npz.parse_key(key)
        return npz.npz_image(root, split, index)
    return load_image(root / key)


BOX_COLUMNS = ("file", "x0", "y0", "x1", "y1")


def read_sample(sample: Sample) -> tuple[Image.Image, str]:
    """The sample's image (as :func:`load_sample`) and its :func:`fingerprint`, from one read of the file: the
    fingerprint is of the very bytes that were decoded, so a file replaced between two reads can never pair
    a new fingerprint with numbers from the old pixels.

    Raises:
        ImageLoadError, DatasetError: as :func:`load_sample`.
    """
    image, data = _decode_sample(sample)
    return image, fingerprint(sample, data)


def _decode_sample(sample: Sample) -> tuple[Image.Image, bytes | None]:
    """The one path from a sample to its image: the decoded file with the bytes it was decoded from, or the
    ``.npz`` row (``None``: :func:`fingerprint` digests the row's own pixels)."""
    if sample.split is not None and sample.index is not None:
        return npz.npz_image(sample.path, sample.split, sample.index), None
    data = read_image_file(sample.path)
    return decode_image(data, label=str(sample.path)), data


def fingerprint(sample: Sample, data: bytes | None = None) -> str:
    """What a stored row was computed from: 16 hex digits of the sha256 of the image file's bytes (for an
    ``.npz`` sample, its own pixels, not the whole file), the label and the boxes. A row whose fingerprint
    differs from its sample's now (an edited ``labels.csv`` or ``boxes.csv``, a replaced image) is stale, and
    the runner computes it again instead of reusing it. A missing file fingerprints as missing (the runner
    then reports it when it cannot read it). ``data``: the file's bytes, when the caller has read them."""
    digest = hashlib.sha256()
    if sample.split is not None and sample.index is not None:
        digest.update(npz.npz_digest(sample.path, sample.split, sample.index))
    elif data is not None:
        digest.update(data)
    else:
        try:
            digest.update(sample.path.read_bytes())
        except OSError:
            digest.update(b"<unreadable>")
    digest.update(f"|{sample.class_index}|{sample.boxes!r}".encode())
    return digest.hexdigest()[:16]


def find_boxes_file(source: str | Path, boxes: str | Path | None | Literal["auto"] = "auto") -> Path | None:
    """The boxes file of a dataset: ``boxes`` itself when given (it must exist), else with ``"auto"`` the
    ``boxes.csv`` beside the dataset's ``labels.csv`` if there is one, else ``None``.

    Raises:
        DatasetError: an explicit ``boxes`` file that does not exist.
    """
    if boxes is None:
        return None
    if boxes != "auto":
        path = Path(boxes)
        if not path.is_file():
            raise DatasetError(f"boxes file {path} does not exist (expected a CSV 'file,x0,y0,x1,y1')")
        return path.resolve()
    source = Path(source)
    if npz.is_npz(source):
        return None  # an .npz holds no boxes; a boxes.csv beside it belongs to something else
    folder = source.parent if source.is_file() else source
    candidate = folder / "boxes.csv"
    return candidate.resolve() if candidate.is_file() else None


def read_boxes(path: str | Path) -> dict[str, list[tuple[float, float, float, float]]]:
    """``{file: [(x0, y0, x1, y1), ...]}`` from a boxes CSV (header ``file,x0,y0,x1,y1``).

    Raises:
        DatasetError: a missing column, a coordinate that is not a finite number, or an empty/inverted box,
            naming the file and line.
    """
    path = Path(path)
    out: dict[str, list[tuple[float, float, float, float]]] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = set(BOX_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{path} lacks the column(s) {sorted(missing)}; expected a header 'file,x0,y0,x1,y1'")
        for line, row in enumerate(reader, start=2):
            try:
                x0, y0, x1, y1 = (float(row[c]) for c in BOX_COLUMNS[1:])
            except (TypeError, ValueError):
                raise DatasetError(f"{path}:{line}: box coordinates must be numbers, got {row}") from None
            if not all(map(math.isfinite, (x0, y0, x1, y1))):
                raise DatasetError(f"{path}:{line}: box coordinates must be finite, got {row}")
            if not row["file"]:
                raise DatasetError(f"{path}:{line}: empty file name")
            if x1 <= x0 or y1 <= y0:
                raise DatasetError(f"{path}:{line}: empty or inverted box (need x0 < x1 and y0 < y1), got {row}")
            out.setdefault(row["file"], []).append((x0, y0, x1, y1))
    return out


def read_dataset(
    source: str | Path,
    limit: int | None = None,
    *,
    boxes: str | Path | None | Literal["auto"] = "auto",
    split: str | None = None,
) -> tuple[Path, list[Sample]]:
    """``(root, samples)`` from a labels CSV, a folder with ``labels.csv``, synset folders, or an ``.npz``
    file's ``split`` (``root`` is then the file itself).

    ``boxes``: ``"auto"`` reads the ``boxes.csv`` beside ``labels.csv`` when there is one; a path reads
    that file; ``None`` reads no boxes (see :func:`find_boxes_file`). Box rows are matched to samples by
    their ``file`` (the sample's key; ``test/000123`` for an ``.npz``).

    Raises:
        DatasetError: with what is wrong and what was expected (an ``.npz`` without ``split``, a ``split``
            for something else than an ``.npz``, a split the file lacks, arrays of different lengths, ...).
    """
    source = Path(source)
    if limit is not None and limit < 1:
        raise DatasetError(f"--limit must be at least 1, got {limit}")
    if not source.exists():
        raise DatasetError(f"{source} does not exist: give a labels.csv, a folder of labelled images or an .npz")
    if npz.is_npz(source):
        samples = _from_npz(source, split)
        root = source
    elif split is not None:
        raise DatasetError(
            f"--split {split} is for MedMNIST .npz files, and {source} is not one "
            "(a labels.csv or a folder has no splits)"
        )
    elif source.is_file():
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
    boxes_path = find_boxes_file(source, boxes)
    if boxes_path is not None:
        table = read_boxes(boxes_path)
        samples = [replace(s, boxes=tuple(table.get(s.key, ()))) for s in samples]
    return root.resolve(), samples[:limit] if limit else samples


def _from_npz(path: Path, split: str | None) -> list[Sample]:
    if split is None:
        raise DatasetError(f"{path} is an .npz data set: say which split, --split {{{','.join(npz.SPLITS)}}}")
    _, labels = npz.split_arrays(path, split)
    file = path.resolve()
    return [Sample(file, int(c), npz.key_for(split, i), split=split, index=i) for i, c in enumerate(labels)]


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
