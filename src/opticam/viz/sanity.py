"""Pictures of the randomization sanity check: similarity against depth, and the classic grid (one image,
one row per method, one column per stage), as in Adebayo et al. (NeurIPS 2018), figures 2 and 4.

Built on :class:`matplotlib.figure.Figure` directly (no ``pyplot``), like the other figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from .overlay import as_rgb, overlay


def similarity_plot(
    stages: Sequence[str], means: Mapping[str, Mapping[str, Sequence[float | None]]], title: str = ""
) -> Figure:
    """Two panels (Spearman, SSIM): one line per method, the stages from intact to fully randomized on x."""
    fig = Figure(figsize=(max(6.0, 0.55 * len(stages) + 2), 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    xs = np.arange(len(stages))
    for ax, kind, label in zip(axes, ("spearman", "ssim"), ("Spearman rank correlation", "SSIM"), strict=True):
        for method, values in means.items():
            ys = [np.nan if v is None else v for v in values[kind]]
            ax.plot(xs, ys, marker="o", label=method)
        ax.set_xticks(xs, list(stages), rotation=60, ha="right", fontsize=8)
        ax.set_title(label)
        ax.set_xlabel("randomized down to (cascading, from the output)")
        ax.axhline(0, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("similarity to the intact model's map")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def randomization_grid(
    image: torch.Tensor, stages: Sequence[str], maps: Mapping[str, np.ndarray], cell: float = 1.6
) -> Figure:
    """One image: the image in the first column, then one row per method, one column per stage.

    Args:
        image: ``[3, H, W]`` in [0, 1].
        stages: stage names (column titles).
        maps: method -> ``[stages, H, W]`` maps of this image (NaN where a map could not be computed).
    """
    if not maps:
        raise ValueError("randomization_grid needs at least one method")
    ncols = 1 + len(stages)
    fig = Figure(figsize=(cell * ncols, (cell + 0.3) * len(maps)), layout="constrained")
    axes = np.asarray(fig.subplots(len(maps), ncols, squeeze=False))
    image = as_rgb(image.detach().float().cpu().clamp(0, 1))
    for r, (method, per_stage) in enumerate(maps.items()):
        axes[r, 0].imshow(image.permute(1, 2, 0).numpy())
        axes[r, 0].set_ylabel(method, fontsize=9)
        for c, stage in enumerate(stages, start=1):
            m = per_stage[c - 1]
            if np.isfinite(m).all():
                axes[r, c].imshow(overlay(image, torch.from_numpy(np.asarray(m, np.float32))))
            if r == 0:
                axes[r, c].set_title(stage, fontsize=7, rotation=30)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
