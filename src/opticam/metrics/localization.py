"""Localization metrics given ground-truth boxes (paper, appendix B): pointing game and energy pointing game.

Boxes are ``(x0, y0, x1, y1)`` in pixel coordinates of the map (``x`` = column, ``y`` = row), corners
inclusive of ``x0, y0`` and exclusive of ``x1, y1`` (Python slicing); an image may have several boxes
(several objects of the class), and a pixel counts as inside when it is inside any of them.

* **pointing game** (Zhang et al., "Top-down neural attention by excitation backprop", 2016): a hit when
  the map's maximum lies inside a box, or within ``tolerance`` pixels of one (their protocol: 15 pixels);
  ties for the maximum are broken by the first one in raster order.
* **energy pointing game** (Wang et al., Score-CAM, 2020): the share of the map's total mass inside the
  boxes, ``sum_{in boxes} M / sum M``; a map that sums to zero scores 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import InputError

Box = tuple[float, float, float, float]


def box_mask(boxes: Sequence[Box], height: int, width: int, *, tolerance: float = 0.0) -> torch.Tensor:
    """``[H, W]`` bool: pixels inside any box, or within ``tolerance`` pixels (Euclidean) of one."""
    rows = torch.arange(height, dtype=torch.float32).view(-1, 1)
    cols = torch.arange(width, dtype=torch.float32).view(1, -1)
    inside = torch.zeros(height, width, dtype=torch.bool)
    for box in boxes:
        if len(box) != 4:
            raise InputError(f"a box is (x0, y0, x1, y1), got {box!r}")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            raise InputError(f"a box's corners must be finite numbers, got {box!r}")
        if x1 <= x0 or y1 <= y0:
            raise InputError(f"empty or inverted box {box!r}: need x0 < x1 and y0 < y1")
        # Distance from each pixel to the box's pixel set [x0, x1 - 1] x [y0, y1 - 1].
        dx = (x0 - cols).clamp(min=0) + (cols - (x1 - 1)).clamp(min=0)
        dy = (y0 - rows).clamp(min=0) + (rows - (y1 - 1)).clamp(min=0)
        inside |= (dx**2 + dy**2) <= tolerance**2
    return inside


def _check(maps: torch.Tensor, boxes: Sequence[Sequence[Box]]) -> torch.Tensor:
    """``maps`` as float ``[B, H, W]`` on the CPU, or an :class:`~opticam.errors.InputError` saying what is off."""
    if not isinstance(maps, torch.Tensor):
        raise InputError(f"maps must be a tensor [B, 1, H, W], got {type(maps).__name__}")
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3:
        raise InputError(f"expected maps [B, 1, H, W] or [B, H, W], got {tuple(maps.shape)}")
    if maps.shape[-2] == 0 or maps.shape[-1] == 0:
        raise InputError(f"empty maps: shape {tuple(maps.shape)}")
    if len(boxes) != maps.shape[0]:
        raise InputError(f"got boxes for {len(boxes)} images but {maps.shape[0]} maps")
    if any(len(b) == 0 for b in boxes):
        raise InputError("every image needs at least one box")
    maps = maps.detach().float().cpu()
    if not torch.isfinite(maps).all():
        raise InputError("the maps contain NaN or infinite values")
    return maps


def pointing_game(maps: torch.Tensor, boxes: Sequence[Sequence[Box]], *, tolerance: float = 15.0) -> torch.Tensor:
    """``[B]`` bool hits: the maximum of each map within ``tolerance`` pixels of one of its boxes."""
    maps = _check(maps, boxes)
    height, width = maps.shape[-2:]
    hits = []
    for m, image_boxes in zip(maps, boxes, strict=True):
        index = int(torch.argmax(m.flatten()))
        row, col = divmod(index, width)
        hits.append(bool(box_mask(image_boxes, height, width, tolerance=tolerance)[row, col]))
    return torch.tensor(hits, dtype=torch.bool)  # also for an empty batch


def energy_pointing_game(maps: torch.Tensor, boxes: Sequence[Sequence[Box]]) -> torch.Tensor:
    """``[B]`` share of each map's mass inside its boxes, in [0, 1] (maps are clamped at 0 first)."""
    maps = _check(maps, boxes).clamp(min=0)
    height, width = maps.shape[-2:]
    shares = []
    for m, image_boxes in zip(maps, boxes, strict=True):
        total = float(m.sum())
        inside = float(m[box_mask(image_boxes, height, width)].sum())
        shares.append(inside / total if total > 0 else 0.0)
    return torch.tensor(shares, dtype=torch.float32)
