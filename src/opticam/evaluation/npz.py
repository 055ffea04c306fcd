"""MedMNIST-style ``.npz`` data sets: ``<split>_images`` and ``<split>_labels`` arrays, one split at a time.

The layout every 2D MedMNIST data set uses (PneumoniaMNIST, ChestMNIST's single-label cousins, BloodMNIST,
...): ``<split>_images`` uint8 ``[N, H, W]`` (grayscale) or ``[N, H, W, 3]`` (RGB), ``<split>_labels``
integers ``[N, 1]`` (or ``[N]``), for the splits ``train``, ``val`` and ``test``.

The arrays of a split are read once per process and kept (:func:`split_arrays`, keyed by the file's path,
size and modification time, so a replaced file is read again): a Ray worker that is sent samples (the file,
the split and a row number, never pixels) reads the file itself the first time. A split costs its uint8 size
in memory (PneumoniaMNIST's test split: 624 x 28 x 28 = 0.5 MB).
"""

from __future__ import annotations

import hashlib
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatasetError

SPLITS = ("train", "val", "test")


def is_npz(source: str | Path) -> bool:
    """True for a path ending in ``.npz`` (the MedMNIST layout is then expected)."""
    return Path(source).suffix.lower() == ".npz"


def split_arrays(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of ``split``: uint8 ``[N, H, W]`` or ``[N, H, W, 3]``, and int64 ``[N]``.

    Raises:
        DatasetError: a missing or unreadable file, an unknown split, missing arrays (naming the splits the file
            has), images that are not uint8 ``[N, H, W(, 3)]``, labels that are not one integer per image, or
            lengths that differ.
    """
    path = Path(path).resolve()
    if split not in SPLITS:
        raise DatasetError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    try:
        stat = path.stat()
    except OSError:
        raise DatasetError(f"{path} does not exist") from None
    return _split_arrays(str(path), split, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4)
def _split_arrays(path: str, split: str, _size: int, _mtime: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            names = set(data.files)
            wanted = (f"{split}_images", f"{split}_labels")
            missing = [n for n in wanted if n not in names]
            if missing:
                have = [s for s in SPLITS if f"{s}_images" in names and f"{s}_labels" in names]
                raise DatasetError(
                    f"{path} has no {' or '.join(missing)} array: the splits it has are "
                    f"{', '.join(have) or 'none'} (expected MedMNIST's <split>_images and <split>_labels)"
                )
            images, labels = data[wanted[0]], data[wanted[1]]
    except DatasetError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"{path} is not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if images.dtype != np.uint8 or not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise DatasetError(
            f"{path}: {split}_images is {images.dtype} {list(images.shape)}; expected uint8 [N, H, W] (grayscale) "
            "or [N, H, W, 3] (RGB)"
        )
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(
            f"{path}: {split}_labels is {labels.dtype} {list(labels.shape)}; expected one integer class per image, "
            "[N, 1] (multi-label data sets such as ChestMNIST are not supported)"
        )
    if len(images) != len(labels):
        raise DatasetError(
            f"{path}: {split}_images has {len(images)} images but {split}_labels has {len(labels)} labels"
        )
    if len(images) == 0:
        raise DatasetError(f"{path}: the {split} split is empty")
    if (labels < 0).any():
        raise DatasetError(f"{path}: {split}_labels has negative classes")
    images.setflags(write=False)
    labels = labels.astype(np.int64)
    labels.setflags(write=False)
    return images, labels


def npz_image(path: str | Path, split: str, index: int) -> Image.Image:
    """Image ``index`` of ``split`` as a PIL image: mode ``L`` for grayscale arrays, ``RGB`` for colour."""
    images, _ = split_arrays(path, split)
    return Image.fromarray(images[index], mode="L" if images.ndim == 3 else "RGB")


def npz_digest(path: str | Path, split: str, index: int) -> bytes:
    """A digest of image ``index``'s pixels (shape and bytes): what a stored row was computed from."""
    images, _ = split_arrays(path, split)
    pixels = images[index]
    return hashlib.sha256(repr(pixels.shape).encode() + pixels.tobytes()).digest()


def key_for(split: str, index: int) -> str:
    """The store key of a sample: ``test/000123`` (stable: the split and the row number)."""
    return f"{split}/{index:06d}"


def parse_key(key: str) -> tuple[str, int]:
    """``test/000123`` -> ``("test", 123)``.

    Raises:
        DatasetError: a key that is not ``<split>/<number>``.
    """
    split, _, number = key.partition("/")
    if split not in SPLITS or not number.isdigit():
        raise DatasetError(f"{key!r} is not an .npz sample key (<split>/<row>, e.g. test/000123)")
    return split, int(number)


__all__ = ["SPLITS", "is_npz", "key_for", "npz_digest", "npz_image", "parse_key", "split_arrays"]
