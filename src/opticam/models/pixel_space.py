"""The pixel-space wrapper: a classifier that takes [0, 1] images, with the mean/std normalization inside.

Opti-CAM multiplies the image by the saliency mask in **pixel space** ([0, 1], before mean/std
normalization), so that a masked-out pixel is black, as in the paper's official code. The normalization
therefore lives inside the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class PixelSpaceModel(nn.Module):
    """A classifier that takes images in [0, 1] pixel space: ``model((x - mean) / std)``.

    Layer names given to opticam are looked up in the wrapped ``model`` first, so ``"layer4"`` works
    whether or not the classifier is wrapped.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} values but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(dtype=x.dtype)
        std = self.std.to(dtype=x.dtype)
        return self.model((x - mean) / std)
