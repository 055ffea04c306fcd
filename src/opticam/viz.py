"""Pictures of saliency maps: a heatmap blended over the image, and their encodings (PNG bytes, data URIs)."""

from __future__ import annotations

import base64
import io

import matplotlib
import numpy as np
import torch
from PIL import Image


def overlay(image: torch.Tensor, saliency: torch.Tensor, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """Blend a colour-mapped saliency map over an image.

    Args:
        image: ``[3, H, W]`` in [0, 1].
        saliency: ``[H, W]`` or ``[1, H, W]`` in [0, 1], same size as the image.
        alpha: weight of the heatmap.
    """
    saliency = saliency.detach().float().cpu().reshape(image.shape[-2:]).clamp(0, 1).numpy()
    heat = matplotlib.colormaps[cmap](saliency)[..., :3]
    base = image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
    blended = (1 - alpha) * base + alpha * heat
    return Image.fromarray(np.round(blended * 255).astype(np.uint8))


def to_pil(image: torch.Tensor) -> Image.Image:
    """``[3, H, W]`` in [0, 1] -> PIL image."""
    array = image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
    return Image.fromarray(np.round(array * 255).astype(np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    """Encode a PIL image as PNG bytes (for HTTP responses and inlined HTML)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(payload: Image.Image | bytes, mime: str = "image/png") -> str:
    """A ``data:`` URI holding ``payload`` (a PIL image, encoded as PNG, or raw bytes of type ``mime``).

    Why: the HTML report must be one self-contained file and the web page shows results without writing
    any file, so pictures travel inline as base64.
    """
    raw = png_bytes(payload) if isinstance(payload, Image.Image) else payload
    return f"data:{mime};base64," + base64.b64encode(raw).decode("ascii")
