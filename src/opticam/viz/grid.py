"""The comparison grid: one row per image; the image titled with its class, then each method's overlay
titled with that image's AD / AG for that method.

Built on a :class:`matplotlib.figure.Figure` directly (no ``pyplot``), so that the web server can draw from a
worker thread and nothing depends on a display or on global figure state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from matplotlib.figure import Figure

from .overlay import as_rgb, overlay


@dataclass
class GridRow:
    """One image of a comparison grid.

    Attributes:
        image: ``[3, H, W]`` in [0, 1].
        label: the image column's title (e.g. the explained class name).
        maps: method name -> saliency map ``[H, W]`` (or ``[1, H, W]``) in [0, 1].
        scores: method name -> ``{"AD": ..., "AG": ...}`` for this image, in percent (optional).
    """

    image: torch.Tensor
    label: str
    maps: dict[str, torch.Tensor]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)


def cell_title(method: str, scores: Mapping[str, float] | None) -> str:
    """``"opticam\\nAD 1.2  AG 45.0"``: a method column's title for one image (AD/AG in percent)."""
    if not scores:
        return method
    parts = [f"{key} {scores[key]:.1f}" for key in ("AD", "AG") if key in scores]
    return method + "\n" + "  ".join(parts)


def comparison_grid(rows: Sequence[GridRow], methods: Sequence[str] | None = None, cell: float = 2.3) -> Figure:
    """A grid: one row per image, columns = the image and each method's overlay.

    Args:
        rows: the images with their maps and per-image scores.
        methods: column order (default: the first row's maps, in insertion order).
        cell: size of one cell in inches.
    """
    if not rows:
        raise ValueError("comparison_grid needs at least one image")
    methods = list(methods) if methods is not None else list(rows[0].maps)
    if not methods:
        raise ValueError("comparison_grid needs at least one method")
    for i, row in enumerate(rows):
        missing = [m for m in methods if m not in row.maps]
        if missing:
            raise ValueError(f"row {i} ({row.label}) has no map for {', '.join(missing)}")
    ncols = 1 + len(methods)
    fig = Figure(figsize=(cell * ncols, (cell + 0.45) * len(rows)), layout="constrained")
    axes = np.asarray(fig.subplots(len(rows), ncols, squeeze=False))
    for r, row in enumerate(rows):
        image = row.image.detach().float().cpu().clamp(0, 1)
        axes[r, 0].imshow(as_rgb(image).permute(1, 2, 0).numpy())
        axes[r, 0].set_title(row.label, fontsize=9)
        for c, method in enumerate(methods, start=1):
            axes[r, c].imshow(overlay(image, row.maps[method].reshape(image.shape[-2:])))
            axes[r, c].set_title(cell_title(method, row.scores.get(method)), fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
