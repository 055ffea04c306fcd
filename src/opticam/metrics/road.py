"""ROAD, Remove And Debias (Rong et al., ICML 2022), per image, through pytorch-grad-cam's ``ROADCombined``.

ROAD measures how faithful a saliency map is by **removing** pixels in the map's order and watching the
target-class probability, like deletion/insertion, but removed pixels are not set to black or blurred:
they are **imputed** by noisy linear interpolation from the pixels kept (the ``NoisyLinearImputer``), so
that the shape of the removed region carries little class information ("debias"). For one image, class
``c`` and one percentile ``p`` (pytorch-grad-cam's ``RemoveMostRelevantFirst`` / ``RemoveLeastRelevantFirst``):

* **MoRF** (most relevant first): ``t = np.percentile(m, p)``; pixels with ``m >= t`` are imputed, about
  the top ``100 - p`` % of the map (ties at the threshold are all removed);
* **LeRF** (least relevant first): the same on ``1 - m``: pixels with ``1 - m >= np.percentile(1 - m, p)``,
  about the bottom ``100 - p`` %, are imputed;
* each gives ``softmax(model(imputed))[c] - softmax(model(x))[c]`` (``return_diff``: a change, <= 0 when
  removing hurts).

The score is ``ROAD = mean_p (LeRF_p - MoRF_p) / 2`` over ``percentiles`` (default 10, 20, ..., 90, so
10 % ... 90 % of the pixels removed in each order). The original probability cancels in the difference:
ROAD is half the mean gap between the probability with the least and with the most relevant pixels
removed, in [-0.5, 0.5]. **Higher is better**: a faithful map loses little when its least relevant pixels
go (LeRF near 0) and much when its most relevant pixels go (MoRF very negative). A map that ranks pixels
no better than chance scores about 0.

**Equal to** ``ROADCombined(percentiles)(x, maps[:, 0].numpy(), [ClassifierOutputSoftmaxTarget(c) ...],
model)``; this module only converts opticam's tensors, freezes the model, seeds the noise and quiets a
numpy deprecation warning that pytorch-grad-cam triggers on every threshold.

**Noise and determinism.** The imputer adds ``0.01 * torch.randn_like(...)`` to every imputed value: the
noise comes from **torch's global CPU generator** (``torch.default_generator``; imputation always runs on
the CPU, whatever the model's device), one draw per (order, percentile, image), in the order LeRF then
MoRF, percentiles ascending, images in batch order. Nothing else is random (numpy's RNG is not used). With
``seed`` the generator is seeded with it for the call and its previous state restored afterwards, so a
stored score is reproducible (on the same CPU maths and model outputs) and the caller's random stream is
untouched; with ``seed=None`` the global stream is used and advanced, as pytorch-grad-cam does. The draws
are shared across the batch, so an image's score depends on its position in the batch and on the other
images (their number of imputed pixels) through its noise, not otherwise; the noise moves a score by about
0.01 on real images (one Grad-CAM map: 0.218, 0.223 and 0.230 under three draws), so compare methods on many
images, and store the seed and batch composition with a score to reproduce it exactly.

**Pixel space.** opticam models take [0, 1] images (normalization inside), so imputation and noise happen in
[0, 1] pixel units, which is what the ROAD authors do (their reference code imputes ``ToTensor()`` images and
normalizes after). The interpolation itself is affine-equivariant (each imputed pixel is a weighted mean of
its neighbours), so only the noise scale depends on the space: 0.01 in pixel units is 0.01 / std (about
0.044 for ImageNet's std) in normalized units, about 4.4 times what pytorch-grad-cam users, whose models
take normalized tensors, get from the same default. Exception: when *every* pixel is removed (a constant
map, or a tie at the threshold covering the whole image) nothing is left to interpolate from and the
imputer returns 0 plus noise: black in pixel space.

**Cost** per image: ``2 * len(percentiles)`` imputations, each a sparse linear system built with scipy's
``lil_matrix`` and solved with ``spsolve`` (up to ~45 000 unknowns x 3 channels at 224 x 224 and p = 10), and
``4 * len(percentiles)`` forward passes (one imputed and one original image per removal; the original ones
are redundant but are what pytorch-grad-cam computes), so 18 imputations and 36 forwards with the defaults,
batched over the images one removal at a time. Measured on EfficientNet-Lite0 at 224 x 224, one CPU thread
on a shared 2-core machine (load ~7): 15.5-17.8 s per image, of which ~40 % the solves, ~35 % building the
systems and ~15 % the 36 forwards: about the cost of insertion + deletion at 224 steps (450 forwards), but
~85 % of it is scipy on the CPU, which a GPU does not speed up.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..options import Option
from .declaration import Column, Metric, MetricInput, TableColumn, mean

PERCENTILES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
"""pytorch-grad-cam's default ROAD percentiles (the threshold percentile, not the fraction removed)."""


def road_combined(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    classes: torch.Tensor | Sequence[int],
    percentiles: Sequence[float] = PERCENTILES,
    *,
    seed: int | None = None,
) -> torch.Tensor:
    """Per-image ROAD score (``ROADCombined`` with softmax targets) of ``maps`` for ``x`` and ``classes``.

    Args:
        model: classifier taking [0, 1] pixel-space images (normalization inside), in eval mode; it runs
            under ``torch.no_grad`` on ``x``'s device (put both on the same device).
        x: ``[B, C, H, W]`` images in [0, 1].
        maps: ``[B, 1, H, W]`` saliency in [0, 1] at the images' resolution (only the order matters, up to
            ties at the thresholds and the float32 rounding of ``1 - m``).
        classes: ``[B]`` the class whose softmax probability is tracked, per image.
        percentiles: threshold percentiles, each in [0, 100]; MoRF and LeRF at each remove about
            ``100 - p`` % of the pixels.
        seed: seed for torch's global CPU generator (the imputer's noise) during the call, restored after;
            ``None`` uses and advances the global stream.

    Returns:
        ``[B]`` float32 on ``x``'s device: ``mean_p (LeRF_p - MoRF_p) / 2``, higher is better.
    """
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    if x.dim() != 4 or maps.dim() != 4 or maps.shape[1] != 1:
        raise ValueError(f"expected x [B, C, H, W] and maps [B, 1, H, W], got {tuple(x.shape)}, {tuple(maps.shape)}")
    if maps.shape[0] != x.shape[0] or maps.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"maps {tuple(maps.shape)} do not match images {tuple(x.shape)}")
    class_list = [int(c) for c in (classes.tolist() if isinstance(classes, torch.Tensor) else classes)]
    if len(class_list) != x.shape[0]:
        raise ValueError(f"need one class per image: {len(class_list)} classes for {x.shape[0]} images")
    percentile_list = [float(p) for p in percentiles]
    if not percentile_list or not all(0 <= p <= 100 for p in percentile_list):
        raise ValueError(f"percentiles must be a non-empty sequence of numbers in [0, 100], got {percentiles!r}")
    if not torch.isfinite(maps).all():
        raise ValueError("maps contain NaN or infinite values")

    # ROAD wants [B, H, W] float32 numpy maps; the imputer reads x on the CPU with .numpy(), so no grad.
    cams = np.ascontiguousarray(maps.detach()[:, 0].to("cpu", torch.float32).numpy())
    images = x.detach()
    targets = [ClassifierOutputSoftmaxTarget(c) for c in class_list]
    state = torch.get_rng_state() if seed is not None else None
    try:
        if seed is not None:
            torch.default_generator.manual_seed(seed)
        with torch.no_grad(), warnings.catch_warnings():
            # `np.float32(mask < threshold)` on a torch tensor: numpy 2 warns about Tensor.__array_wrap__.
            warnings.filterwarnings("ignore", message=r"__array_wrap__", category=DeprecationWarning)
            scores = ROADCombined(percentiles=percentile_list)(images, cams, targets, model)
    finally:
        if state is not None:
            torch.set_rng_state(state)
    return torch.as_tensor(np.asarray(scores, dtype=np.float32)).to(x.device)


def _score(batch: MetricInput) -> list[dict[str, Any]]:
    scores = road_combined(
        batch.model, batch.x, batch.maps, batch.classes, tuple(batch.options["percentiles"]), seed=batch.options["seed"]
    )
    return [{"road": float(v)} for v in scores]


METRIC = Metric(
    name="road",
    description="ROAD (remove and debias, Rong et al. 2022): pytorch-grad-cam's ROADCombined, softmax target",
    columns=(Column("road", "REAL", "ROADCombined over the percentiles, in [-0.5, 0.5] (higher is better)"),),
    score=_score,
    aggregate=lambda rows: {"road": mean([r["road"] for r in rows])},
    table=(TableColumn("road", "ROAD", "higher", digits=3),),
    options=(
        Option(
            "percentiles",
            "floats",
            PERCENTILES,
            "percent of the pixels removed (most relevant first) and kept (least relevant first), averaged",
            low=0,
            high=100,
        ),
        Option("seed", "int", 0, "seed of ROAD's noisy linear imputation, reset for each chunk", low=0),
    ),
    note="ROAD: pytorch-grad-cam's ROADCombined (remove and debias), in [-0.5, 0.5], higher is better.",
)
"""ROAD as stored and summarized: the mean of the per-image scores (not percent, as pytorch-grad-cam gives
it); each chunk of a run is scored with ``seed`` 0, so a stored number is reproducible."""
