"""Pictures as bytes: PNG encoding of PIL images and figures, ``data:`` URIs, figure files.

Why data URIs: the HTML report must be one self-contained file and the web page shows results without
writing any file, so pictures travel inline as base64.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

from matplotlib.figure import Figure
from PIL import Image


def png_bytes(image: Image.Image) -> bytes:
    """Encode a PIL image as PNG bytes (for HTTP responses and inlined HTML)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(payload: Image.Image | bytes, mime: str = "image/png") -> str:
    """A ``data:`` URI holding ``payload`` (a PIL image, encoded as PNG, or raw bytes of type ``mime``)."""
    raw = png_bytes(payload) if isinstance(payload, Image.Image) else payload
    return f"data:{mime};base64," + base64.b64encode(raw).decode("ascii")


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write the figure (format from the extension: .png, .pdf, .svg), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
