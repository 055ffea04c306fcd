"""Opti-CAM: a saliency map whose channel weights are optimized per image.

For each image x and class c, Opti-CAM looks for the weights ``u`` (one per feature map) that maximize
the class logit of the image masked by its own saliency map (method doc, section 1):

    M(x; u) = n(up(sum_k softmax(u)_k A_k)),     u* = argmax_u  g_c(f(x * M(x; u)))

The feature maps ``A`` are captured once, without gradients; every iteration runs the whole model on
the masked batch and back-propagates to ``u`` only (parameters frozen, no hooks in the loop, no
``retain_graph``). Images are independent: Adam is elementwise and the loss is a sum of per-image
objectives, so a batch gives the same maps as one image at a time. An image whose objective stops
changing leaves the batch (per-image early stopping), so it stops costing model passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .base import SaliencyMethod, SaliencyResult, TargetsLike, check_images, frozen, resolve_targets
from .errors import NumericalError
from .layers import ReshapeTransform
from .saliency import NORMALIZATIONS, OBJECTIVES, Normalization, Objective, objective, saliency_mask

ProgressCallback = Callable[[int, int, int], None]
"""``callback(step, total_steps, active_images)``, called after every optimization step."""


@dataclass
class OptiCAMResult(SaliencyResult):
    """Opti-CAM's maps and, per image, how the optimization went.

    Attributes (besides :class:`~opticam.base.SaliencyResult`'s):
        objective_initial: ``[B]`` the objective at uniform weights (``u = 0``).
        objective_final: ``[B]`` the objective of the returned map (the best one seen).
        iterations: ``[B]`` optimizer steps taken (fewer than asked when the image stopped early).
        weights: ``[B, K]`` the channel weights ``softmax(u*)`` of the returned map.
        passes: forward passes of the model over single images, the capture pass included.
    """

    objective_initial: torch.Tensor
    objective_final: torch.Tensor
    iterations: torch.Tensor
    weights: torch.Tensor
    passes: int


class OptiCAM(SaliencyMethod):
    """Opti-CAM (Zhang et al., CVIU 2024).

    Args:
        model: classifier taking [0, 1] images (normalization inside, see ``opticam.load_model``).
        target_layers: module, dotted name, ``[module]``, or ``None`` for the last spatial layer.
        reshape_transform: token -> map reshaping for transformer layers (automatic for timm ViT/DeiT).
        objective: ``mask`` (default, the masked logit), ``diff`` or ``io-mask``.
        normalization: ``range`` (default), ``max`` or ``sigmoid``.
        iterations: the most Adam steps per image (paper: 100).
        lr: Adam's learning rate (paper: 0.1).
        tol: an image stops once its objective changes by less than ``tol`` between two steps
            (paper: 1e-10). ``early_stop=False`` always runs all iterations.
        relu: apply a ReLU to the captured activations, as the official code does.
        callback: called as ``callback(step, iterations, active_images)`` after every step.
        progress: show a tqdm progress bar.
    """

    name = "opticam"

    def __init__(
        self,
        model: nn.Module,
        target_layers: nn.Module | str | Sequence[nn.Module | str] | None = None,
        reshape_transform: ReshapeTransform | None = None,
        *,
        objective: Objective = "mask",
        normalization: Normalization = "range",
        iterations: int = 100,
        lr: float = 0.1,
        tol: float = 1e-10,
        early_stop: bool = True,
        relu: bool = True,
        callback: ProgressCallback | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform)
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; use one of {OBJECTIVES}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {normalization!r}; use one of {NORMALIZATIONS}")
        if iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {iterations}")
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.objective = objective
        self.normalization = normalization
        self.iterations = int(iterations)
        self.lr = float(lr)
        self.tol = float(tol)
        self.early_stop = early_stop
        self.relu = relu
        self.callback = callback
        self.progress = progress

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, A)``: the original logits and the (ReLU'd) feature maps, computed once."""
        logits, feats = self.capture(x)
        feats = feats.float()
        return logits, torch.relu(feats) if self.relu else feats

    def explain(self, x: torch.Tensor, targets: TargetsLike = None) -> OptiCAMResult:
        """Optimize one saliency map per image.

        Args:
            x: ``[B, C, H, W]`` images (in [0, 1] for a pixel-space model), on the model's device.
            targets: class per image (int, ints, tensor, ``ClassifierOutputTarget``s); ``None`` = predicted.
        """
        check_images(x)
        start = time.perf_counter()
        x = x.detach()
        with frozen(self.model):
            logits, feats = self.features(x)
            classes = resolve_targets(targets, logits)
            rows = torch.arange(x.shape[0], device=x.device)
            original = logits[rows, classes].float()
            u, best, init, steps, passes = self._optimize(x, feats, classes, original)
            with torch.no_grad():
                maps = saliency_mask(feats, u, tuple(x.shape[-2:]), self.normalization)
        return OptiCAMResult(
            maps=maps,
            class_indices=classes,
            logits=logits,
            seconds=time.perf_counter() - start,
            objective_initial=init,
            objective_final=best,
            iterations=steps,
            weights=torch.softmax(u, dim=1),
            passes=passes + x.shape[0],
        )

    def _optimize(
        self, x: torch.Tensor, feats: torch.Tensor, classes: torch.Tensor, original: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Adam on ``u`` with a shrinking batch; returns the best ``u`` seen per image and its record."""
        batch, channels = feats.shape[:2]
        size = tuple(x.shape[-2:])
        u = torch.zeros(batch, channels, device=x.device, requires_grad=True)
        optimizer = torch.optim.Adam([u], lr=self.lr)
        best_u = torch.zeros(batch, channels, device=x.device)
        best = torch.full((batch,), float("-inf"), device=x.device)
        init = torch.zeros(batch, device=x.device)
        previous = torch.full((batch,), float("nan"), device=x.device)
        steps = torch.zeros(batch, dtype=torch.long, device=x.device)
        active = torch.arange(batch, device=x.device)
        passes = 0
        bar = _progress_bar(self.iterations, batch) if self.progress else None
        per_pass = 2 if self.objective == "io-mask" else 1
        try:
            for step in range(self.iterations + 1):
                last = step == self.iterations
                # u_step is evaluated; unless it is the last, one Adam step follows.
                with torch.set_grad_enabled(not last):
                    u_active = u[active] if active.numel() < batch else u
                    masks = saliency_mask(feats[active], u_active, size, self.normalization)
                    value = objective(
                        self.model, x[active], masks, classes[active], self.objective, original[active]
                    ).float()
                passes += per_pass * int(active.numel())
                if not torch.isfinite(value).all():
                    raise NumericalError(f"the objective became NaN or infinite at step {step}")
                detached = value.detach()
                if step == 0:
                    init[active] = detached
                better = detached > best[active]
                improved = active[better]
                best[improved] = detached[better]
                best_u[improved] = u_active.detach()[better]
                if last:
                    break
                optimizer.zero_grad(set_to_none=True)
                (-value.sum()).backward()
                optimizer.step()
                steps[active] += 1
                if self.early_stop:
                    converged = (detached - previous[active]).abs() < self.tol
                    previous[active] = detached
                    active = active[~converged]
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(active=int(active.numel()))
                if self.callback is not None:
                    self.callback(step + 1, self.iterations, int(active.numel()))
                if active.numel() == 0:
                    break
        finally:
            if bar is not None:
                bar.close()
        return best_u, best, init, steps, passes


def _progress_bar(total: int, batch: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"Opti-CAM ({batch} image{'s' if batch != 1 else ''})", unit="step", leave=False)
