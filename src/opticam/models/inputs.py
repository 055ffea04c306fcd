"""Whether images can be explained at all (:func:`check_images`: a finite float tensor ``[B, C, H, W]``) and
whether they suit a model (:func:`check_images_for_model`: its dtype, its channel count and, in pixel space,
the [0, 1] range).

Shared by every saliency method (:meth:`opticam.methods.base.SaliencyMethod.explain`) and the metrics that
run the model on images (:func:`opticam.metrics.insertion_deletion`), so that a mismatch is one clear
:class:`~opticam.errors.OpticamError` before any pass, never PyTorch's error deep inside a layer.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import InputError, InputTypeError, NumericalError
from .outputs import LogitsModel
from .pixel_space import PixelSpaceModel

PIXEL_RANGE_SLACK = 0.5
"""How far outside [0, 1] a pixel-space image may stray before it is refused: resampling overshoot and the
noise of robustness metrics (Quantus) stay well inside; 0-255 pixels and mean/std-normalized images do not."""


def check_images(x: torch.Tensor) -> None:
    """Reject what no method can explain, with a message that says why.

    Raises:
        InputTypeError: not a tensor (a numpy array, a PIL image), or not floating point (uint8 pixels).
        InputError: not ``[B, C, H, W]``, an empty batch or zero-size images.
        NumericalError: NaN or infinite values.
    """
    if not isinstance(x, torch.Tensor):
        hint = " (torch.from_numpy(a) gives one)" if isinstance(x, np.ndarray) else ""
        raise InputTypeError(f"expected a tensor [B, C, H, W] of float images in [0, 1], got {type(x).__name__}{hint}")
    if x.dim() != 4:
        hint = " (one image? use x[None])" if x.dim() == 3 else ""
        raise InputError(f"expected images [B, C, H, W], got shape {tuple(x.shape)}{hint}")
    if x.numel() == 0:
        raise InputError(f"empty input: shape {tuple(x.shape)} (zero images or zero-size images)")
    if not x.is_floating_point():
        raise InputTypeError(
            f"expected float images in [0, 1], got dtype {x.dtype} (for 0-255 pixels use x.float() / 255)"
        )
    if not torch.isfinite(x).all():
        raise NumericalError("the input images contain NaN or infinite values")


def check_images_for_model(x: torch.Tensor, model: nn.Module) -> None:
    """Reject images this model cannot take, before any pass, saying what would fit (after the shape and type
    checks of :func:`check_images`):

    * a dtype other than the model's (float64 images, float32 model: PyTorch's "expected scalar type Double
      but found Float" deep in a layer), unless autocast is on;
    * a channel count other than the model's (1-channel images for an RGB model would be broadcast against
      the 3-channel normalization and explained without a word);
    * values far outside [0, 1] for a :class:`~opticam.models.PixelSpaceModel` (0-255 pixels, or images already
      normalized; :data:`PIXEL_RANGE_SLACK`): the mask would black out the wrong values.

    Raises:
        InputTypeError: the dtype. InputError: the channels or the value range.
    """
    inner = model.model if isinstance(model, LogitsModel) else model
    weight = next((p for p in model.parameters() if p.is_floating_point()), None)
    if weight is not None and x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        fix = "x.float()" if weight.dtype == torch.float32 else f"x.to({weight.dtype})"
        other = "model.double()" if x.dtype == torch.float64 else f"model.to({x.dtype})"
        raise InputTypeError(
            f"the images are {x.dtype} but the model's parameters are {weight.dtype}: use {fix} "
            f"(or {other} to compute in {x.dtype})"
        )
    channels = expected_channels(inner)
    if channels is not None and x.shape[1] != channels:
        hint = " (grayscale? x.expand(-1, 3, -1, -1) repeats it)" if x.shape[1] == 1 and channels == 3 else ""
        raise InputError(f"the images have {x.shape[1]} channel(s) but the model takes {channels}{hint}")
    if isinstance(inner, PixelSpaceModel):
        low, high = float(x.min()), float(x.max())
        if low < -PIXEL_RANGE_SLACK or high > 1 + PIXEL_RANGE_SLACK:
            hint = "divide 0-255 pixels by 255" if high > 2 else "pass pixels, not normalized values"
            raise InputError(
                f"images must be in [0, 1] (the model normalizes them itself), got values from {low:.3g} to "
                f"{high:.3g}: {hint}"
            )


def expected_channels(model: nn.Module) -> int | None:
    """The image channels ``model`` takes: its :class:`~opticam.models.PixelSpaceModel` normalization's length
    (when per channel), else its first ``Conv2d``'s ``in_channels``; ``None`` when neither says."""
    if isinstance(model, PixelSpaceModel) and model.mean.numel() > 1:
        return int(model.mean.numel())
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(first.in_channels) if first is not None else None
