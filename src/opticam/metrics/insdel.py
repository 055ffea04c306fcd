"""Insertion and deletion (Petsiuk et al., RISE, 2018): area under the class-probability curve.

Pixels are ranked by saliency, highest first (a stable sort, so ties keep raster order). Step by step,
``step`` more pixels change (all three channels of a pixel together):

* **deletion** starts from the image and sets the top-ranked pixels to **zero** (black, in pixel space);
  a good map makes the probability fall fast, so lower is better;
* **insertion** starts from a **blurred copy** (Gaussian, kernel 11 x 11, sigma 5, reflect padding, as
  ``torchvision.transforms.functional.gaussian_blur``; RISE's kernel size and sigma) and puts the
  top-ranked original pixels back; higher is better.

The curve has a point at every multiple of ``step`` pixels and one at all pixels (``N = H * W``):
``counts = 0, step, 2 step, ..., N``. At 224 x 224 with the default ``step = 224`` that is 224 steps and
225 points. The score is the trapezoidal area under ``prob(count)`` over the fraction ``count / N``, in
[0, 1]. These are the conventions of torchcam's ``DeletionInsertionMetric`` with ``steps = N / step``,
which the tests use as an independent cross-check.

The perturbed images of all images in the batch go through the model in chunks of ``batch_size``, never
one forward pass per image.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InputError, InputTypeError, TargetError
from ..models.inputs import check_images, check_images_for_model
from ..options import Option
from .declaration import Column, Metric, MetricInput, TableColumn, mean

BLUR_KERNEL = 11
BLUR_SIGMA = 5.0


@dataclass
class InsDelResult:
    """Curves and areas for a batch of B images.

    Attributes:
        fractions: ``[T]`` fraction of pixels changed at each curve point (0 ... 1).
        deletion: ``[B, T]`` target-class probability as pixels are deleted.
        insertion: ``[B, T]`` target-class probability as pixels are inserted.
        deletion_auc: ``[B]`` trapezoidal area under ``deletion`` (lower is better).
        insertion_auc: ``[B]`` trapezoidal area under ``insertion`` (higher is better).
    """

    fractions: torch.Tensor
    deletion: torch.Tensor
    insertion: torch.Tensor
    deletion_auc: torch.Tensor
    insertion_auc: torch.Tensor


def blur(images: torch.Tensor, kernel: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """The insertion start image: a Gaussian blur (``kernel`` x ``kernel``, ``sigma``, reflect padding)."""
    from torchvision.transforms.functional import gaussian_blur

    return gaussian_blur(images, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


def curve_counts(num_pixels: int, step: int) -> list[int]:
    """How many pixels are changed at each curve point: ``0, step, 2 step, ..., num_pixels``."""
    if step < 1:
        raise InputError(f"step must be at least 1 pixel, got {step}")
    if num_pixels < 1:
        raise InputError(f"need at least one pixel, got {num_pixels}")
    return [*range(0, num_pixels, step), num_pixels]


def saliency_ranks(maps: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` rank of each pixel, 0 = most salient; ties are broken in raster order (stable sort)."""
    order = torch.argsort(maps.flatten(1).float(), dim=1, descending=True, stable=True)
    return torch.argsort(order, dim=1)


@torch.no_grad()
def insertion_deletion(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    classes: torch.Tensor,
    *,
    step: int = 224,
    batch_size: int = 64,
    blur_kernel: int = BLUR_KERNEL,
    blur_sigma: float = BLUR_SIGMA,
) -> InsDelResult:
    """Deletion and insertion curves and AUCs of ``maps`` for ``images`` and target ``classes``.

    Args:
        model: classifier taking [0, 1] pixel-space images (normalization inside), in eval mode.
        images: ``[B, C, H, W]`` in [0, 1].
        maps: ``[B, 1, H, W]`` saliency at the images' resolution (only the ranking matters).
        classes: ``[B]`` the class whose softmax probability is tracked.
        step: pixels changed per step (224 at 224 x 224 = RISE's 224 steps).
        batch_size: perturbed images per forward pass.
        blur_kernel, blur_sigma: the insertion start image's Gaussian blur.

    Raises:
        InputTypeError: not tensors, integer images, or a dtype other than the model's. InputError: shapes that
            do not match, images that no method could explain (:func:`~opticam.models.inputs.check_images`;
            NaN images: NumericalError) or that the model cannot take
            (:func:`~opticam.models.inputs.check_images_for_model`), images smaller than the blur's reflect
            padding allows (``blur_kernel // 2 + 1`` pixels a side), NaN maps, a bad ``step`` or
            ``batch_size``. TargetError: a class per image is missing or out of range.
    """
    _check_inputs(images, maps, classes, blur_kernel)
    check_images_for_model(images, model)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    batch, channels = images.shape[:2]
    num_pixels = images.shape[-2] * images.shape[-1]
    counts = curve_counts(num_pixels, step)
    points = len(counts)
    ranks = saliency_ranks(maps.to(images.device))
    flat = images.flatten(2)
    blurred = blur(images, blur_kernel, blur_sigma).flatten(2)
    classes = classes.to(images.device)

    # One job per (image, curve, point); curve 0 = deletion, 1 = insertion.
    jobs = torch.cartesian_prod(torch.arange(batch), torch.arange(2), torch.arange(points)).to(images.device)
    count_of = torch.tensor(counts, device=images.device)
    scores = torch.empty(jobs.shape[0], device=images.device)
    for start in range(0, jobs.shape[0], batch_size):
        chunk = jobs[start : start + batch_size]
        sample, curve, point = chunk[:, 0], chunk[:, 1], chunk[:, 2]
        changed = (ranks[sample] < count_of[point].unsqueeze(1)).unsqueeze(1)  # [n, 1, N]
        deleted = torch.where(changed, torch.zeros_like(flat[sample]), flat[sample])
        inserted = torch.where(changed, flat[sample], blurred[sample])
        perturbed = torch.where((curve == 0).view(-1, 1, 1), deleted, inserted)
        logits = model(perturbed.view(-1, channels, *images.shape[-2:])).float()
        if start == 0 and int(classes.max()) >= logits.shape[1]:
            raise TargetError(f"class index {int(classes.max())} is out of range: the model has {logits.shape[1]}")
        scores[start : start + chunk.shape[0]] = torch.softmax(logits, dim=1).gather(1, classes[sample, None])[:, 0]
    scores = scores.view(batch, 2, points)
    fractions = count_of.float() / num_pixels
    deletion, insertion = scores[:, 0], scores[:, 1]
    return InsDelResult(
        fractions=fractions,
        deletion=deletion,
        insertion=insertion,
        deletion_auc=torch.trapezoid(deletion, fractions, dim=1),
        insertion_auc=torch.trapezoid(insertion, fractions, dim=1),
    )


def _check_inputs(images: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor, blur_kernel: int) -> None:
    """What :func:`insertion_deletion` needs, checked before any model pass (the classes against the model's
    output are checked at its first pass)."""
    check_images(images)  # a finite float tensor [B, C, H, W], as every saliency method takes
    for name, value in (("maps", maps), ("classes", classes)):
        if not isinstance(value, torch.Tensor):
            raise InputTypeError(f"{name} must be a tensor, got {type(value).__name__}")
    if maps.dim() != 4 or maps.shape[1] != 1:
        raise InputError(
            f"expected images [B, C, H, W] and maps [B, 1, H, W], got {tuple(images.shape)}, {tuple(maps.shape)}"
        )
    if maps.shape[0] != images.shape[0] or maps.shape[-2:] != images.shape[-2:]:
        raise InputError(f"maps {tuple(maps.shape)} do not match images {tuple(images.shape)}")
    side = blur_kernel // 2 + 1
    if min(images.shape[-2:]) < side:
        raise InputError(
            f"images of {images.shape[-2]} x {images.shape[-1]} pixels are too small for the {blur_kernel} x "
            f"{blur_kernel} insertion blur: at least {side} x {side}"
        )
    if maps.is_floating_point() and not torch.isfinite(maps).all():
        raise InputError("the maps contain NaN or infinite values")
    if classes.dim() != 1 or classes.shape[0] != images.shape[0] or classes.is_floating_point():
        raise TargetError(f"expected one integer class per image ({images.shape[0]}), got {tuple(classes.shape)}")
    if classes.numel() and int(classes.min()) < 0:
        raise TargetError(f"class index {int(classes.min())} is negative")


def _record(options: Mapping[str, Any], input_size: tuple[int, int]) -> dict[str, Any]:
    """The curves' definition: step, baselines and the fractions of pixels at each point."""
    height, width = input_size
    counts = curve_counts(height * width, int(options["step"]))
    return {
        "step": int(options["step"]),
        "deletion_baseline": "zeros",
        "insertion_start": {"blur": "gaussian", "kernel": BLUR_KERNEL, "sigma": BLUR_SIGMA, "padding": "reflect"},
        "fractions": [c / (height * width) for c in counts],
    }


def _score(batch: MetricInput) -> list[dict[str, Any]]:
    curves = insertion_deletion(
        batch.model,
        batch.x,
        batch.maps,
        batch.classes,
        step=int(batch.options["step"]),
        batch_size=int(batch.options["batch"]),
    )
    return [
        {
            "insertion": float(curves.insertion_auc[i]),
            "deletion": float(curves.deletion_auc[i]),
            "insertion_curve": json.dumps(curves.insertion[i].tolist()),
            "deletion_curve": json.dumps(curves.deletion[i].tolist()),
        }
        for i in range(batch.x.shape[0])
    ]


def _aggregate(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "insertion": mean([r["insertion"] for r in rows], 100),
        "deletion": mean([r["deletion"] for r in rows], 100),
    }


METRIC = Metric(
    name="insdel",
    description="insertion and deletion AUCs (RISE; percent): blurred start, black deletion, `step` pixels a step",
    columns=(
        Column("insertion", "REAL", "insertion AUC in [0, 1]"),
        Column("deletion", "REAL", "deletion AUC in [0, 1]"),
        Column("insertion_curve", "TEXT", "JSON list of probabilities at the run's insdel fractions", summary=False),
        Column("deletion_curve", "TEXT", "JSON list, same points", summary=False),
    ),
    score=_score,
    aggregate=_aggregate,
    table=(TableColumn("insertion", "I", "higher"), TableColumn("deletion", "D", "lower")),
    options=(
        Option(
            "step",
            "int",
            224,
            "pixels inserted or deleted per step (224: RISE's 224 steps at 224 x 224); 0 leaves insertion/deletion out",
            low=0,
            flag="insdel_step",
        ),
        Option(
            "batch",
            "int",
            64,
            "perturbed images per forward pass (speed only)",
            low=1,
            speed_only=True,
            flag="insdel_batch",
        ),
    ),
    record=_record,
    skipped=lambda options: options["step"] == 0,
    note="I, D: area under the insertion / deletion class-probability curve x 100.",
)
"""Insertion / deletion: ``2 * (H * W / step + 1)`` forward passes per image (224 steps at 224 x 224)."""
