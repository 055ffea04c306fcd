"""Figures for comparing saliency methods: overlay grids and insertion / deletion curves (matplotlib).

Everything here builds a :class:`matplotlib.figure.Figure` directly (no ``pyplot``), so that the web
server can draw from a worker thread and nothing depends on a display or on global figure state.

* :func:`comparison_grid`: one row per image; the first column is the image titled with its class,
  then one overlay per method titled with that image's AD / AG for that method.
* :func:`curves_figure`: insertion and deletion curves side by side, one line per method; a curve per
  image, or the mean over many images (a run) with the inter-quartile band. :func:`curves_rows`: the
  same for several images, one row each.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from .viz import overlay

CURVE_KINDS = ("insertion", "deletion")


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
        axes[r, 0].imshow(image.permute(1, 2, 0).numpy())
        axes[r, 0].set_title(row.label, fontsize=9)
        for c, method in enumerate(methods, start=1):
            axes[r, c].imshow(overlay(image, row.maps[method].reshape(image.shape[-2:])))
            axes[r, c].set_title(cell_title(method, row.scores.get(method)), fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def fractions(points: int) -> np.ndarray:
    """The x axis of a curve with ``points`` values: the fraction of pixels changed, 0 to 1 evenly."""
    if points < 2:
        raise ValueError(f"a curve needs at least 2 points, got {points}")
    return np.linspace(0.0, 1.0, points)


def area_under_curve(curve: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
    """Trapezoidal area under curves ``[..., T] -> [...]`` at points ``x`` (default: evenly on [0, 1])."""
    curve = np.asarray(curve, dtype=np.float64)
    if curve.shape[-1] < 2:
        raise ValueError(f"a curve needs at least 2 points, got {curve.shape[-1]}")
    x = fractions(curve.shape[-1]) if x is None else np.asarray(x, dtype=np.float64)
    if x.shape != curve.shape[-1:]:
        raise ValueError(f"{x.shape[0]} x values for curves of {curve.shape[-1]} points")
    return ((curve[..., 1:] + curve[..., :-1]) * np.diff(x)).sum(axis=-1) / 2


def _as_curves(values: np.ndarray | torch.Tensor, method: str, kind: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    values = np.asarray(values, dtype=np.float64)
    values = values[None] if values.ndim == 1 else values
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"{method} {kind}: expected [T] or [N, T] values, got shape {values.shape}")
    return values


def draw_curves(
    axes: Sequence[Any],
    curves: Mapping[str, Mapping[str, np.ndarray | torch.Tensor]],
    x: np.ndarray | Sequence[float] | None = None,
) -> None:
    """Insertion on ``axes[0]``, deletion on ``axes[1]``: one line per method (the mean, with the 25-75 % band
    when there are several images) labelled with its area under the curve."""
    for ax, kind in zip(axes, CURVE_KINDS, strict=True):
        drawn = 0
        for method, by_kind in curves.items():
            if kind not in by_kind or by_kind[kind] is None:
                continue
            values = _as_curves(by_kind[kind], method, kind)
            points = fractions(values.shape[1]) if x is None else np.asarray(x, dtype=np.float64)
            mean = values.mean(axis=0)
            label = f"{method} (AUC {float(area_under_curve(values, points).mean()):.3f})"
            (line,) = ax.plot(points, mean, label=label)
            if values.shape[0] > 1:
                low, high = np.percentile(values, [25, 75], axis=0)
                ax.fill_between(points, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
            drawn += 1
        better = "higher" if kind == "insertion" else "lower"
        ax.set_title(f"{kind} ({better} AUC is better)", fontsize=10)
        ax.set_xlabel("fraction of pixels " + ("inserted" if kind == "insertion" else "deleted"))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
    axes[0].set_ylabel("class probability")


def curves_figure(
    curves: Mapping[str, Mapping[str, np.ndarray | torch.Tensor]],
    title: str | None = None,
    size: tuple[float, float] = (9.0, 3.6),
    x: np.ndarray | Sequence[float] | None = None,
) -> Figure:
    """Insertion (left) and deletion (right) curves, one line per method.

    Args:
        curves: method -> ``{"insertion": c, "deletion": c}`` where ``c`` is one curve ``[T]`` (one image)
            or ``[N, T]`` (N images: the mean is drawn, with the 25-75 % band). Either kind may be absent.
            Values are the class probability after changing a fraction of the pixels.
        title: figure title (e.g. the image or the run).
        x: the fraction of pixels changed at each point (default: evenly from 0 to 1); a run stores its own,
            whose last step may be shorter.

    The legend gives each method's area under its (mean) curve; higher is better for insertion, lower for
    deletion.
    """
    if not curves:
        raise ValueError("curves_figure needs at least one method")
    fig = Figure(figsize=size, layout="constrained")
    draw_curves(fig.subplots(1, 2, sharey=True), curves, x)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def curves_rows(
    items: Sequence[tuple[str, Mapping[str, Mapping[str, np.ndarray | torch.Tensor]]]],
    x: np.ndarray | Sequence[float] | None = None,
    row_height: float = 3.0,
) -> Figure:
    """Per-image curves: one row per ``(title, curves)`` item, insertion left and deletion right."""
    if not items:
        raise ValueError("curves_rows needs at least one image")
    fig = Figure(figsize=(9.0, row_height * len(items)), layout="constrained")
    axes = np.asarray(fig.subplots(len(items), 2, squeeze=False))
    for row, (title, curves) in enumerate(items):
        draw_curves(axes[row], curves, x)
        axes[row, 0].set_title(f"{title}: insertion", fontsize=10)
        axes[row, 1].set_title(f"{title}: deletion", fontsize=10)
    return fig


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
