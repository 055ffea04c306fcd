"""The pixel-space wrapper: a classifier that takes [0, 1] images, with the mean/std normalization inside.

Opti-CAM multiplies the image by the saliency mask in **pixel space** ([0, 1], before mean/std
normalization), so that a masked-out pixel is black, as in the paper's official code. The normalization
therefore lives inside the model. The wrapper also unwraps output objects (Hugging Face's
``ImageClassifierOutput``) to the logits tensor, so every method and metric sees ``[B, C]`` logits.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Sequence

import torch
from torch import nn

from .outputs import logits_of


class PixelSpaceModel(nn.Module):
    """A classifier that takes images in [0, 1] pixel space: ``model((x - mean) / std)``, as logits.

    The classifier may return a tensor or an output object with ``.logits`` (Hugging Face); the wrapper
    always returns the logits tensor ``[B, C]``.

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
        return logits_of(self.model((x - mean) / std))


class PixelSpaceWarning(UserWarning):
    """A model given to a masking method is not known to take [0, 1] pixels."""


_warned: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def warn_if_not_pixel_space(model: nn.Module) -> None:
    """Warn once per model when ``model`` is not a :class:`PixelSpaceModel` (silence with the method's
    ``warn_pixel_space=False``).

    Opti-CAM multiplies the model's input by the mask. If that input is mean/std-normalized, a masked
    value becomes 0 in normalized space (a grey-ish pixel, differently per channel), not a black pixel as
    in the paper; wrapping the model fixes it.
    """
    if isinstance(model, PixelSpaceModel) or model in _warned:
        return
    _warned.add(model)
    warnings.warn(
        f"{type(model).__name__} is not wrapped in opticam.PixelSpaceModel: if it takes normalized input, "
        "the mask blacks out normalized values rather than pixels. Fix: "
        "model = opticam.PixelSpaceModel(model, mean, std) and pass images in [0, 1] "
        "(or warn_pixel_space=False if it already takes [0, 1] pixels).",
        PixelSpaceWarning,
        stacklevel=3,
    )
