"""Image arguments: folders expanded to their image files, images read one by one (an unreadable file is
reported and skipped, not fatal), the closing count of what could not be read, and the samples folder."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import torch

from ..errors import ImageLoadError, UsageError
from ..images import IMAGE_SUFFIXES, load_image
from ..models.loading import LoadedModel

T = TypeVar("T")
V = TypeVar("V")


def read_images(paths: list[str], loaded: LoadedModel) -> tuple[list[tuple[Path, torch.Tensor]], int]:
    """``([(path, preprocessed image)], number skipped)``, by :func:`read_each`."""
    return read_each(paths, lambda path: (Path(path), loaded.preprocess(load_image(path))))


def read_each(items: Sequence[T], read: Callable[[T], V]) -> tuple[list[V], int]:
    """``([read(item)], number skipped)``: items whose image cannot be read (``read`` raises
    :class:`~opticam.errors.ImageLoadError`) are reported and skipped, so one bad file does not lose the
    others. When none can be read, that is the one error (exit status 1): there is nothing to do."""
    values, failures = [], []
    for item in items:
        try:
            values.append(read(item))
        except ImageLoadError as exc:
            failures.append(exc)
    if failures and not values:
        if len(failures) == 1:
            raise failures[0]
        raise ImageLoadError(f"none of the {len(failures)} images could be read (the first: {failures[0]})")
    for exc in failures:
        print(f"opticam: skipping {exc}", file=sys.stderr)
    return values, len(failures)


def unreadable_summary(failed: int, total: int) -> int:
    """Say once more, at the end, how many images could not be read; the exit status: 1 if any, else 0.

    Every command that reads several images ends this way (``explain``, ``compare``, ``evaluate``,
    ``sanity``): the others are done, and the status says that the output is not complete.
    """
    if failed:
        print(f"opticam: {failed} of {total} image(s) could not be read", file=sys.stderr)
    return 1 if failed else 0


def expand_images(items: list[str]) -> list[str]:
    """The image arguments with each folder replaced by its image files (recursively, sorted).

    A folder without an image file is a usage error (there would be nothing to do for it); a file argument is
    kept as it is (a missing or unreadable one is reported when it is read).
    """
    paths = []
    for item in items:
        folder = Path(item)
        if folder.is_dir():
            found = sorted(str(f) for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                kinds = ", ".join(sorted(IMAGE_SUFFIXES))
                raise UsageError(f"{item}: the folder holds no image file ({kinds})")
            paths += found
        else:
            paths.append(item)
    return paths


def imagenet_samples_folder() -> Path:
    """The folder of labelled ImageNet samples ``opticam bench --images`` reads by default:
    ``$OPTICAM_SAMPLES``, else the shared ImageNet samples beside the repository checkout."""
    env = os.environ.get("OPTICAM_SAMPLES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4] / "shared/data/imagenet-samples"
