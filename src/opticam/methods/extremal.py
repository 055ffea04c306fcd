"""Extremal Perturbation (Fong, Patrick and Vedaldi, ICCV 2019) through TorchRay, its authors' library.

The paper's strongest perturbation baseline (its Table 1): a smooth mask of a fixed area, optimized (800
SGD steps) so that the image blurred outside the mask keeps the class score. TorchRay is an optional
extra (``pip install 'opticam[extremal]'``); without it, building the method raises a one-line
:class:`~opticam.errors.UsageError` saying how to install it.

Settings. The Opti-CAM paper names TorchRay but no settings, so the method runs TorchRay's
``extremal_perturbation`` defaults, which are the ICCV paper's: the *preserve* variant, one area of 10 %
of the image, 800 iterations of SGD (lr 0.01, momentum 0.9), a mask of step 7 and smoothing sigma 21,
a blur perturbation (8 levels, blur up to sigma 20), horizontal-flip jitter every other step and the
class logit as the reward; the mask is upsampled (bilinear) to the input size. ``areas`` with several
values gives the mean of the masks (Fong et al.'s summary map), as TorchRay's benchmark does.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..errors import UsageError
from ..options import Option
from .base import Diagnostics, Maps, SaliencyMethod, TargetsLike
from .registry import register_method

INSTALL_HINT = (
    "Extremal Perturbation needs TorchRay, an optional extra: pip install 'opticam[extremal]' (or pip install torchray)"
)


def require_torchray():
    """TorchRay's ``extremal_perturbation`` function, or a :class:`UsageError` saying how to install it."""
    try:
        from torchray.attribution.extremal_perturbation import extremal_perturbation
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return extremal_perturbation


@register_method(requires=require_torchray)
class ExtremalPerturbation(SaliencyMethod):
    """Extremal Perturbation (TorchRay) with the ICCV paper's settings; one image at a time.

    Args:
        model: classifier taking [0, 1] images (the blur perturbs pixels, so the model must be in pixel
            space, as ``opticam.load_model`` gives it).
        **options: :attr:`options` (``areas``, ``iterations``, ``jitter``).
    """

    name = "extremal"
    needs_layer = False  # a perturbation of the input: any given layer is accepted and ignored
    options = (
        Option(
            "areas",
            "floats",
            (0.1,),
            "target area(s) as a share of the image; several give the mean of their masks",
            low=0,
            low_open=True,
            high=1,
            high_open=True,
        ),
        Option(
            "iterations",
            "int",
            800,
            "SGD steps per image (TorchRay's, the ICCV paper's)",
            low=1,
            paper=800,
            flag="extremal_iterations",
        ),
        Option("jitter", "bool", True, "flip the image every other step, as TorchRay does by default"),
    )

    def __init__(self, model: nn.Module, target_layers=None, reshape_transform=None, **options: object) -> None:
        super().__init__(model, target_layers, reshape_transform)
        chosen = self.check_options(**options)
        self._extremal = require_torchray()
        self.areas = [float(a) for a in chosen["areas"]]
        self.iterations = int(chosen["iterations"])
        self.jitter = bool(chosen["jitter"])

    def compute(self, x: torch.Tensor, targets: TargetsLike) -> Maps:
        logits, classes = self.classify(x, targets)
        maps = []
        for i in range(x.shape[0]):  # TorchRay explains one image per call
            with warnings.catch_warnings():  # TorchRay's mask generator calls meshgrid the old way
                warnings.filterwarnings("ignore", message="torch.meshgrid", category=UserWarning)
                masks, _ = self._extremal(
                    self.model,
                    x[i : i + 1],
                    int(classes[i]),
                    areas=self.areas,
                    max_iter=self.iterations,
                    jitter=self.jitter,
                    resize=True,
                )
            maps.append(masks.detach().float().mean(dim=0, keepdim=True))
            self.step_done(i + 1, x.shape[0], x.shape[0] - i - 1)
        steps = torch.full((x.shape[0],), self.iterations, dtype=torch.long, device=x.device)
        return Maps(torch.cat(maps).clamp(0, 1), classes, logits, Diagnostics(iterations=steps))
