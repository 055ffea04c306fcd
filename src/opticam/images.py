"""Decoding images into RGB PIL images, from files and from uploaded bytes, with clear errors.

One decoder serves both sources (:func:`load_image` for files, :func:`decode_image` for bytes), in an order
that keeps bad input cheap: the pixel count is read from the image **header** (PIL opens lazily and reports
the size without decoding), so a decompression bomb (a 20000 x 20000 PNG of a few kilobytes) is refused
before a single row is inflated; only then is the image decoded, turned upright (EXIF orientation) and
converted to RGB.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError

# PIL refuses images over twice this many pixels (decompression bombs) and warns above it; we refuse
# above it, with a message, instead of a warning nobody reads.
MAX_PIXELS = 178_956_970

# File endings taken for images when a folder is listed (data sets, `opticam explain DIR`, the web page's
# sample folder): one list, so every entry point accepts the same files.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".gif"})


def sample_image() -> Path:
    """matplotlib's Grace Hopper photo: a sample image that ships inside a dependency (``opticam demo`` and the
    web page's default sample; it lives here so that both can use it without importing each other)."""
    import matplotlib.cbook  # deferred: matplotlib is slow to import and only these two callers need it

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open the image file ``path`` as RGB, honouring EXIF orientation.

    Grayscale, palette, RGBA, CMYK and 16-bit images are converted to RGB.

    Raises:
        ImageLoadError: the file is missing, empty, not an image, truncated or corrupt, has zero size,
            or has more than ``max_pixels`` pixels.
    """
    path = Path(path)
    return decode_image(read_image_file(path), max_pixels, label=str(path))


def read_image_file(path: str | Path) -> bytes:
    """The bytes of the image file ``path``, read once (a data set's fingerprint is taken from the very bytes
    that are decoded: :func:`opticam.evaluation.dataset.read_sample`).

    Raises:
        ImageLoadError: the file is missing, a folder, empty or cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"{path}: no such file", "missing")
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a folder, not an image", "missing")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageLoadError(f"{path}: cannot be read ({exc.strerror or exc})", "missing") from None
    if not data:
        raise ImageLoadError(f"{path}: the file is empty", "empty")
    return data


def decode_image(
    data: bytes, max_pixels: int = MAX_PIXELS, formats: Sequence[str] | None = None, *, label: str = "the upload"
) -> Image.Image:
    """The RGB image in ``data`` (a file's bytes or an upload), after checking its format and its pixel count
    from the header.

    Args:
        formats: PIL format names accepted (``None``: any PIL can read).
        label: what the messages call the image (a file's path; "the upload" for the web page).

    Raises:
        ImageLoadError: as :func:`load_image`, plus ``kind="format"`` for a format not in ``formats``.
    """
    if not data:
        raise ImageLoadError(f"{label} is empty", "empty")
    return _decode(io.BytesIO(data), label, max_pixels, formats)


def _decode(stream: IO[bytes], label: str, max_pixels: int, formats: Sequence[str] | None = None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # PIL's own header check (far above our usual limit) fired first; report its count.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found.group(1)) if found else None
        stream.seek(0)
        size = _png_size(stream.read(24))
        raise ImageLoadError(f"{label}: too many pixels ({exc})", "too-many-pixels", size, pixels) from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{label}: not an image file PIL can read", "not-image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(
            f"{label}: the image is corrupt or truncated (header: {exc})", "corrupt", detail=f"header: {exc}"
        ) from None
    with image:
        if formats is not None and image.format not in formats:
            raise ImageLoadError(f"{label}: {image.format} images are not accepted", "format")
        width, height = image.size
        if width * height > max_pixels:
            raise ImageLoadError(
                f"{label}: {width} x {height} pixels is more than the limit of {max_pixels}",
                "too-many-pixels",
                (width, height),
                width * height,
            )
        if width == 0 or height == 0:
            raise ImageLoadError(
                f"{label}: the image has zero size ({width} x {height})",
                "zero-size",
                (width, height),
                detail=f"{width} x {height}",
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.load()
            return to_rgb(ImageOps.exif_transpose(image))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageLoadError(
                f"{label}: the image is corrupt or truncated ({exc})", "corrupt", detail=str(exc)
            ) from None


def _png_size(head: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG header's first 24 bytes, or ``None`` for other formats."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    return None


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of any PIL image; transparent pixels become white, 16-bit images are rescaled."""
    if image.mode == "RGB":
        return image.copy()
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v * (1 / 256)).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
