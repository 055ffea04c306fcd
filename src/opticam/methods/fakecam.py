"""Fake-CAM (Zhang et al., section 3): a map of ones everywhere except a zero at the top-left pixel.

It explains nothing, yet scores a near-perfect Average Drop; the paper uses it to expose the flaw of AD/AI
and to motivate Average Gain (method doc, section 3).
"""

from __future__ import annotations

import torch

from .base import Maps, SaliencyMethod, TargetsLike
from .registry import register_method


@register_method(summary="Fake-CAM, the paper's sanity row")
class FakeCAM(SaliencyMethod):
    """Fake-CAM (Zhang et al., section 3): ones everywhere, zero at the top-left pixel.

    Needs no layer; one forward pass gives the logits (and the predicted class when no target is given).
    """

    name = "fakecam"

    needs_layer = False  # a layer given is accepted and ignored, so the registry builds every method alike

    def compute(self, x: torch.Tensor, targets: TargetsLike) -> Maps:
        logits, classes = self.classify(x, targets)
        maps = torch.ones(x.shape[0], 1, *x.shape[-2:], dtype=torch.float32, device=x.device)
        maps[:, :, 0, 0] = 0.0
        return Maps(maps, classes, logits)
