"""Checking an uploaded image before anything expensive happens: size, type, pixel count, then decoding.

Order matters. The byte size is checked while the body streams in (:class:`UploadTooLarge` as soon as it
passes the limit), the pixel count is read from the image **header** (PIL opens lazily and reports the
size without decoding), so a decompression bomb such as a 20000 x 20000 PNG of a few kilobytes is
refused before a single row is inflated. Only then is the image decoded, in memory.
"""

from __future__ import annotations

import io
import re
import struct
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from ..images import to_rgb

# Formats a browser can show and PIL decodes without plugins.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")


class UploadRejected(Exception):
    """An upload the server will not process; ``status`` is the HTTP status, the message is for the user."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class UploadTooLarge(UploadRejected):
    status = 413


def megabytes(n: int) -> str:
    """``"20 MB"`` for byte counts (decimal megabytes, as browsers show file sizes)."""
    value = n / 1e6
    return f"{value:.0f} MB" if value >= 10 else f"{value:.1f} MB"


def too_large_message(size: int | None, limit: int) -> str:
    shown = f"The upload is {megabytes(size)}; " if size is not None else "The upload is too large; "
    return shown + f"the limit is {megabytes(limit)}. Choose a smaller image."


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """The RGB image in ``data``, after checking its type and its pixel count from the header.

    Raises:
        UploadRejected: empty data (400), not an image or an unsupported format (415), too many pixels
            (413), or a corrupt / truncated file (400).
    """
    if not data:
        raise UploadRejected("The upload is empty; choose an image file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # PIL's own header check (above 89 megapixels) fired before ours could; same answer, its count.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        count = f"{int(found.group(1)) / 1e6:.0f} megapixels" if found else "too many pixels"
        if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:  # the PNG header's width and height
            width, height = struct.unpack(">II", data[16:24])
            count = f"{width} x {height} = {count}"
        raise UploadRejected(
            f"The image is {count}; the limit is {max_pixels / 1e6:.0f} megapixels. Resize it and try again.",
            status=413,
        ) from None
    except UnidentifiedImageError:
        raise UploadRejected(
            "This file is not an image. Upload a PNG, JPEG, GIF, BMP, WebP or TIFF file.", status=415
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UploadRejected(f"The image header could not be read ({exc}).") from None
    if image.format not in ALLOWED_FORMATS:
        raise UploadRejected(
            f"{image.format} images are not accepted; upload a PNG, JPEG, GIF, BMP, WebP or TIFF file.", status=415
        )
    width, height = image.size
    if width * height > max_pixels:
        raise UploadRejected(
            f"The image is {width} x {height} = {width * height / 1e6:.0f} megapixels; the limit is "
            f"{max_pixels / 1e6:.0f} megapixels. Resize it and try again.",
            status=413,
        )
    if width == 0 or height == 0:
        raise UploadRejected(f"The image has zero size ({width} x {height}).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
        return to_rgb(ImageOps.exif_transpose(image))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UploadRejected(f"The image is corrupt or truncated ({exc}).") from None
