"""The pure tensor pieces of Opti-CAM: feature maps + weights -> mask, and the objectives.

Kept free of hooks and models so that each piece can be checked by hand (see ``tests/``).

    S(x; u)   = sum_k softmax(u)_k * A_k          combine()
    M(x; u)   = n(up(S(x; u)))                    upsample(), normalize()
    F_c(x; u) = g_c(f(x * M(x; u)))               objective()
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .opticam_config import NORMALIZATIONS, OBJECTIVES, Normalization, Objective

# Below this spread a map counts as constant; see normalize().
_EPS = 1e-12


def combine(features: torch.Tensor, logits_u: torch.Tensor) -> torch.Tensor:
    """``S = sum_k softmax(u)_k A_k``: features ``[B, K, h, w]``, u ``[B, K]`` -> ``[B, 1, h, w]``."""
    weights = torch.softmax(logits_u, dim=1).to(features.dtype)
    return torch.einsum("bk,bkhw->bhw", weights, features).unsqueeze(1)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling ``[B, 1, h, w]`` -> ``[B, 1, H, W]`` (corners not aligned, as the paper's code)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def normalize(maps: torch.Tensor, kind: Normalization = "range") -> torch.Tensor:
    """Per-image normalization of ``[B, 1, H, W]`` maps into [0, 1].

    * ``range``: ``(S - min S) / (max S - min S)``.
    * ``max``: ``S / max S`` (for S >= 0, as after the ReLU).
    * ``sigmoid``: ``sigmoid(S)`` elementwise.

    A constant map (``max == min`` for range, ``max == 0`` for max) has no saliency to show and is
    defined as **all zeros**, never NaN.
    """
    if kind == "sigmoid":
        return torch.sigmoid(maps)
    flat = maps.flatten(1)
    hi = flat.amax(dim=1).view(-1, 1, 1, 1)
    if kind == "range":
        lo = flat.amin(dim=1).view(-1, 1, 1, 1)
        spread = hi - lo
        safe = torch.where(spread > _EPS, spread, torch.ones_like(spread))
        return torch.where(spread > _EPS, (maps - lo) / safe, torch.zeros_like(maps))
    if kind == "max":
        safe = torch.where(hi > _EPS, hi, torch.ones_like(hi))
        return torch.where(hi > _EPS, maps / safe, torch.zeros_like(maps))
    raise ValueError(f"unknown normalization {kind!r}; use one of {NORMALIZATIONS}")


def saliency_mask(
    features: torch.Tensor, logits_u: torch.Tensor, size: tuple[int, int], kind: Normalization = "range"
) -> torch.Tensor:
    """``M(x; u) = n(up(S(x; u)))`` as ``[B, 1, H, W]`` in [0, 1]."""
    return normalize(upsample(combine(features, logits_u), size), kind)


def objective(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    masks: torch.Tensor,
    classes: torch.Tensor,
    kind: Objective = "mask",
    original_logit: torch.Tensor | None = None,
) -> torch.Tensor:
    """The per-image objective ``F_c`` (to maximize), shape ``[B]``.

    * ``mask``: ``y_c(x * M)``, the class logit of the masked image.
    * ``diff``: ``-|y_c(x) - y_c(x * M)|`` (needs ``original_logit`` = ``y_c(x)``).
    * ``io-mask``: ``y_c(x * M) - y_c(x * (1 - M))``; both images go through the model in one batch.
    * ``log-prob``: ``log softmax(y(x * M))_c``, the log-probability of class c on the masked image (not in
      the paper: the quantity AD / AG / AI measure, where ``mask`` can also raise the other logits).
    """
    rows = torch.arange(images.shape[0], device=images.device)
    if kind == "io-mask":
        both = model(torch.cat([images * masks, images * (1 - masks)]))
        n = images.shape[0]
        return both[:n][rows, classes] - both[n:][rows, classes]
    if kind == "log-prob":
        logits = model(images * masks)
        # Half-precision logits (autocast) are summed in float32; float64 stays float64.
        logits = logits if logits.dtype == torch.float64 else logits.float()
        return torch.log_softmax(logits, dim=1)[rows, classes]
    masked = model(images * masks)[rows, classes]
    if kind == "mask":
        return masked
    if kind == "diff":
        if original_logit is None:
            raise ValueError("the diff objective needs the original logits")
        return -(original_logit - masked).abs()
    raise ValueError(f"unknown objective {kind!r}; use one of {OBJECTIVES}")
