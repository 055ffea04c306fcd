"""A saliency map as a picture: a colour-mapped heatmap blended over the image."""

from __future__ import annotations

import matplotlib
import numpy as np
import torch
from PIL import Image


def as_rgb(image: torch.Tensor) -> torch.Tensor:
    """``[3, H, W]`` for drawing: a grayscale ``[1, H, W]`` image repeated over the three channels."""
    return image.expand(3, *image.shape[-2:]) if image.shape[0] == 1 else image


def overlay(image: torch.Tensor, saliency: torch.Tensor, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """Blend a colour-mapped saliency map over an image.

    Args:
        image: ``[3, H, W]`` (or grayscale ``[1, H, W]``) in [0, 1].
        saliency: ``[H, W]`` or ``[1, H, W]`` in [0, 1], same size as the image.
        alpha: weight of the heatmap.
    """
    saliency = saliency.detach().float().cpu().reshape(image.shape[-2:]).clamp(0, 1).numpy()
    heat = matplotlib.colormaps[cmap](saliency)[..., :3]
    base = as_rgb(image.detach().float().cpu().clamp(0, 1)).permute(1, 2, 0).numpy()
    blended = (1 - alpha) * base + alpha * heat
    return Image.fromarray(np.round(blended * 255).astype(np.uint8))


def to_pil(image: torch.Tensor) -> Image.Image:
    """``[3, H, W]`` (or grayscale ``[1, H, W]``) in [0, 1] -> RGB PIL image."""
    array = as_rgb(image.detach().float().cpu().clamp(0, 1)).permute(1, 2, 0).numpy()
    return Image.fromarray(np.round(array * 255).astype(np.uint8))
