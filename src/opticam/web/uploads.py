"""Reading and checking an upload before anything expensive happens, and answering each refusal in the page's words.

:func:`read_upload` takes the image's bytes from the request: the raw body, or the first file field of a
``multipart/form-data`` form (parsed here with the standard library, no ``python-multipart``). The byte size
is checked while the body streams in (:class:`UploadTooLarge` as soon as it passes the limit); the decoding,
pixel-count check included, is :func:`opticam.images.decode_image`, the same decoder as for files. This
module turns its :class:`~opticam.errors.ImageLoadError` into an HTTP status and a sentence for the person
at the browser.
"""

from __future__ import annotations

import email.parser
import email.policy

from fastapi import Request
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ..errors import ImageLoadError, UsageError
from ..images import decode_image

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


def decode_upload(data: bytes, max_pixels: int) -> Image.Image:
    """The RGB image in ``data``, or :class:`UploadRejected`: empty (400), not an image or an unsupported
    format (415), too many pixels (413), or a corrupt / truncated file (400)."""
    try:
        return decode_image(data, max_pixels, ALLOWED_FORMATS)
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


MULTIPART_OVERHEAD = 64 * 1024
"""Bytes a multipart form may hold beyond the file (boundaries, part headers, small fields)."""


async def read_upload(request: Request, limit: int) -> bytes:
    """The uploaded image's bytes: the raw body, or the first file field of a ``multipart/form-data`` form
    (what ``curl -F file=@cat.jpg`` and HTML forms send). Either way the body is counted as it streams and
    refused past ``limit`` (plus :data:`MULTIPART_OVERHEAD` for a form's framing); the file itself must fit
    ``limit``.

    The form is parsed with the standard library's ``email`` parser (MIME multipart is its format), so the
    server needs no ``python-multipart`` and never spools an upload to disk.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        return await read_limited(request, limit)
    body = await read_limited(request, limit + MULTIPART_OVERHEAD, shown_limit=limit)
    data = await run_in_threadpool(first_file_field, content_type, body)  # ~0.1 s a MB: off the event loop
    if len(data) > limit:
        raise UploadTooLarge(too_large_message(len(data), limit))
    return data


def first_file_field(content_type: str, body: bytes) -> bytes:
    """The content of the first part of a ``multipart/form-data`` body that carries a file name; an
    :class:`UploadRejected` (400) when the form holds no such part (only text fields, or nothing)."""
    header = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + body)
    parts = [part for part in message.iter_parts() if not part.is_multipart()] if message.is_multipart() else []
    files = [part for part in parts if part.get_filename() is not None]
    chosen = files[0] if files else None
    if chosen is None:
        raise UploadRejected("The form holds no file; send the image as a file field (curl -F file=@cat.jpg).")
    payload = chosen.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


async def read_limited(request: Request, limit: int, *, shown_limit: int | None = None) -> bytes:
    """The request body, refused with 413 once it passes ``limit`` bytes (before reading it, if the header says so).

    ``shown_limit`` is the limit the refusal names (a form's allowance for its framing is not the user's limit).
    """
    shown = limit if shown_limit is None else shown_limit
    header = request.headers.get("content-length")
    if header is not None:
        try:
            declared = int(header)
        except ValueError:
            raise UploadRejected("bad Content-Length header") from None
        if declared > limit:
            raise UploadTooLarge(too_large_message(declared, shown))
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise UploadTooLarge(too_large_message(None, shown))
        chunks.append(chunk)
    return b"".join(chunks)
