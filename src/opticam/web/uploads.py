"""Checking an upload before anything expensive happens, and answering each refusal in the page's words.

The byte size is checked while the body streams in (:class:`UploadTooLarge` as soon as it passes the
limit); the decoding, pixel-count check included, is :func:`opticam.images.decode_image`, the same decoder
as for files. This module turns its :class:`~opticam.errors.ImageLoadError` into an HTTP status and a
sentence for the person at the browser.
"""

from __future__ import annotations

from PIL import Image

from ..errors import ImageLoadError, UsageError
from ..images import decode_image as decode_bytes

# Formats a browser can show and PIL decodes without plugins.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
_FORMATS_TEXT = "PNG, JPEG, GIF, BMP, WebP or TIFF"


class UploadRejected(UsageError):
    """An upload or form value the server will not process; ``status`` is the HTTP status."""


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
    """The RGB image in ``data``, or :class:`UploadRejected`: empty (400), not an image or an unsupported
    format (415), too many pixels (413), or a corrupt / truncated file (400)."""
    try:
        return decode_bytes(data, max_pixels, ALLOWED_FORMATS)
    except ImageLoadError as exc:
        raise _rejection(exc, max_pixels) from None


def _rejection(exc: ImageLoadError, max_pixels: int) -> UploadRejected:
    limit = f"the limit is {max_pixels / 1e6:.0f} megapixels. Resize it and try again."
    if exc.kind == "empty":
        return UploadRejected("The upload is empty; choose an image file.")
    if exc.kind == "not-image":
        return UploadRejected(f"This file is not an image. Upload a {_FORMATS_TEXT} file.", status=415)
    if exc.kind == "format":
        return UploadRejected(f"{exc} Upload a {_FORMATS_TEXT} file.", status=415)
    if exc.kind == "too-many-pixels":
        count = f"{exc.pixels / 1e6:.0f} megapixels" if exc.pixels else "too many pixels"
        if exc.size is not None:
            count = f"{exc.size[0]} x {exc.size[1]} = {count}"
        return UploadRejected(f"The image is {count}; {limit}", status=413)
    # exc's own message repeats the kind ("the upload: the image is corrupt or truncated (...)"): word the kind
    # here once and add only the underlying reason.
    if exc.kind == "zero-size":
        return UploadRejected(f"The image has zero size ({exc.detail or exc}). Choose another image.")
    reason = f" ({exc.detail})" if exc.detail else ""
    return UploadRejected(f"The image is corrupt or truncated{reason}. Choose another image.")
