"""Insertion / deletion curves (matplotlib): one line per method, for one image or the mean over a run.

:func:`curves_figure` draws insertion and deletion side by side, a curve per image or the mean over many
images with the inter-quartile band; :func:`curves_rows` does the same for several images, one row each.
Built on :class:`matplotlib.figure.Figure` directly (no ``pyplot``), like the grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

CURVE_KINDS = ("insertion", "deletion")


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
