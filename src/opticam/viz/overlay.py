"""A saliency map as a picture: a colour-mapped heatmap blended over the image."""

from __future__ import annotations

import matplotlib
import numpy as np
import torch
from PIL import Image

from ..errors import InputError, InputTypeError


def as_rgb(image: torch.Tensor) -> torch.Tensor:
    """``[3, H, W]`` for drawing: a grayscale ``[1, H, W]`` image repeated over the three channels."""
    return image.expand(3, *image.shape[-2:]) if image.shape[0] == 1 else image


def overlay(image: torch.Tensor, saliency: torch.Tensor, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """Blend a colour-mapped saliency map over an image.

    Args:
        image: ``[3, H, W]`` (or grayscale ``[1, H, W]``) in [0, 1].
        saliency: ``[H, W]`` or ``[1, H, W]`` in [0, 1], same size as the image.
        alpha: weight of the heatmap.

    Raises:
        InputTypeError: not tensors. InputError: an image that is not ``[3, H, W]`` (or ``[1, 3, H, W]``), a
            map of another size, an ``alpha`` outside [0, 1], or an unknown colour map.
    """
    image, saliency = _check(image, saliency)
    if not 0 <= alpha <= 1:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    if cmap not in matplotlib.colormaps:
        raise InputError(f"unknown colour map {cmap!r} (matplotlib's names: jet, viridis, ...)")
    saliency = torch.nan_to_num(saliency.detach().float().cpu(), nan=0.0).reshape(image.shape[-2:])
    saliency = saliency.clamp(0, 1).numpy()
    heat = matplotlib.colormaps[cmap](saliency)[..., :3]
    base = as_rgb(torch.nan_to_num(image.detach().float().cpu(), nan=0.0).clamp(0, 1)).permute(1, 2, 0).numpy()
    blended = (1 - alpha) * base + alpha * heat
    return Image.fromarray(np.round(blended * 255).astype(np.uint8))


def _check(image: torch.Tensor, saliency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image [3, H, W], map with H * W values)``, or a clear error instead of a reshape failure."""
    for name, value in (("image", image), ("saliency", saliency)):
        if not isinstance(value, torch.Tensor):
            raise InputTypeError(f"overlay's {name} must be a tensor, got {type(value).__name__}")
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise InputError(f"overlay takes one image [3, H, W] (RGB) or [1, H, W] (grayscale), got {tuple(image.shape)}")
    while saliency.dim() > 2 and saliency.shape[0] == 1:
        saliency = saliency[0]
    if tuple(saliency.shape) != tuple(image.shape[-2:]):
        raise InputError(
            f"the map {tuple(saliency.shape)} does not match the image {tuple(image.shape[-2:])}: give an "
            "[H, W] or [1, H, W] map at the image's size (e.g. result.maps[i])"
        )
    return image, saliency


def to_pil(image: torch.Tensor) -> Image.Image:
    """``[3, H, W]`` (or grayscale ``[1, H, W]``) in [0, 1] -> RGB PIL image."""
    array = as_rgb(image.detach().float().cpu().clamp(0, 1)).permute(1, 2, 0).numpy()
    return Image.fromarray(np.round(array * 255).astype(np.uint8))
