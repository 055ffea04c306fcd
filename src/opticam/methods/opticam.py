"""Opti-CAM: a saliency map whose channel weights are optimized per image.

For each image x and class c, Opti-CAM looks for the weights ``u`` (one per feature map) that maximize
the class logit of the image masked by its own saliency map (method doc, section 1):

    M(x; u) = n(up(sum_k softmax(u)_k A_k)),     u* = argmax_u  g_c(f(x * M(x; u)))

The feature maps ``A`` are captured once, without gradients; every iteration runs the whole model on
the masked batch and back-propagates to ``u`` only (parameters frozen, no hooks in the loop, no
``retain_graph``). Images are independent: Adam is elementwise and the loss is a sum of per-image
objectives, so a batch gives the same maps as one image at a time. An image whose objective stops
changing leaves the batch (per-image early stopping), so it stops costing model passes.

Beyond the paper (all off by default, so the defaults are the paper's algorithm): a warm start of ``u``
from Grad-CAM's channel weights (``init="gradcam"``, read off the capture pass at almost no cost), a
cosine learning-rate decay (``schedule="cosine"``), and engineering switches (``channels_last``,
``compile``, ``precision``). Every option and its paper value is a field of
:class:`~opticam.methods.opticam_config.OptiCAMConfig`; named combinations live in
:mod:`opticam.methods.presets` (see ``from_preset``); ``docs/speed.md`` has what each one buys.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import NumericalError, TargetError
from ..models.layers import ReshapeTransform
from ..models.pixel_space import warn_if_not_pixel_space
from .base import SaliencyMethod, SaliencyResult, TargetsLike, check_images, frozen, resolve_targets
from .opticam_config import SCHEDULES, OptiCAMConfig, Schedule
from .opticam_maths import objective, saliency_mask

ProgressCallback = Callable[[int, int, int], None]
"""``callback(step, total_steps, active_images)``, called after every optimization step."""


@dataclass
class OptiCAMResult(SaliencyResult):
    """Opti-CAM's maps and, per image, how the optimization went.

    Attributes (besides :class:`~opticam.methods.base.SaliencyResult`'s):
        objective_initial: ``[B]`` the objective at the starting weights (uniform, ``u = 0``, by default);
            at ``coarse_size`` when coarse steps are on.
        objective_final: ``[B]`` the objective of the returned map (the best one seen).
        iterations: ``[B]`` optimizer steps taken (fewer than asked when the image stopped early).
        weights: ``[B, K]`` the channel weights ``softmax(u*)`` of the returned map.
        passes: forward passes of the model over single images at full size, the capture pass included.
        coarse_passes: forward passes over single images at ``coarse_size`` (0 unless coarse steps are on).
    """

    objective_initial: torch.Tensor
    objective_final: torch.Tensor
    iterations: torch.Tensor
    weights: torch.Tensor
    passes: int
    coarse_passes: int = 0


class OptiCAM(SaliencyMethod):
    """Opti-CAM (Zhang et al., CVIU 2024).

    Args:
        model: classifier taking [0, 1] images (normalization inside, see ``opticam.load_model``).
        target_layers: module, dotted name, ``[module]``, or ``None`` for the last spatial layer.
        reshape_transform: token -> map reshaping for transformer layers (automatic for timm ViT/DeiT/Swin
            and Hugging Face transformers).
        config: the optimization settings (default: the paper's, :class:`OptiCAMConfig`).
        callback: called as ``callback(step, iterations, active_images)`` after every step.
        progress: show a tqdm progress bar.
        warn_pixel_space: warn (once per model) when ``model`` is not a
            :class:`~opticam.models.PixelSpaceModel`: if it takes normalized input, the mask blacks out
            normalized values, not pixels. ``False`` silences it (for models that take [0, 1] pixels).
        **options: any :class:`OptiCAMConfig` field (``iterations=50``, ``lr=0.3``, ``objective="diff"``,
            ...), applied over ``config``. See that class for each option's meaning.

    Each option can be read as an attribute (``cam.iterations``, ``cam.objective``); ``cam.config`` is the
    whole configuration. ``init="gradcam"`` starts from the positive part of Grad-CAM's channel weights
    (mean gradient of the class logit over each feature map), normalized to sum to one and mixed with
    uniform weights (``init_mix``); the gradient comes from the capture pass (a backward from the logits to
    the target layer only), not from an extra model pass. ``batch_invariant=True`` optimizes the images of
    a batch one at a time, so that each map is bit for bit the map the image gets alone: in float32 some
    CPU kernels sum in a batch-size-dependent order, and 100 Adam steps amplify a difference that small
    (README, "Batches and precision").
    """

    name = "opticam"

    def __init__(
        self,
        model: nn.Module,
        target_layers: nn.Module | str | Sequence[nn.Module | str] | None = None,
        reshape_transform: ReshapeTransform | None = None,
        *,
        config: OptiCAMConfig | None = None,
        callback: ProgressCallback | None = None,
        progress: bool = False,
        warn_pixel_space: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform)
        if warn_pixel_space:
            warn_if_not_pixel_space(model)
        self.config = (config or OptiCAMConfig()).replace(**options)
        self.callback = callback
        self.progress = progress
        self._compiled: nn.Module | None = None

    def __getattr__(self, name: str) -> Any:
        """The configuration's fields read as attributes: ``cam.iterations`` is ``cam.config.iterations``."""
        config = self.__dict__.get("config")
        if config is not None and name in OptiCAMConfig.__dataclass_fields__:
            return getattr(config, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def from_preset(
        cls,
        preset: str,
        model: nn.Module,
        target_layers: nn.Module | str | Sequence[nn.Module | str] | None = None,
        reshape_transform: ReshapeTransform | None = None,
        **overrides: Any,
    ) -> OptiCAM:
        """An Opti-CAM configured by a named preset (``paper``, ``fast``; see :mod:`opticam.methods.presets`).

        Keyword ``overrides`` (options, ``callback``, ``progress``) win over the preset's values.
        """
        from .presets import preset_config

        return cls(model, target_layers, reshape_transform, config=preset_config(preset), **overrides)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, A)``: the original logits and the (ReLU'd) feature maps, computed once."""
        logits, feats = self.capture(x)
        feats = feats.to(work_dtype(x))
        return logits, torch.relu(feats) if self.relu else feats

    def gradcam_weights(self, x: torch.Tensor, targets: TargetsLike = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, alpha [B, K])``: Grad-CAM's channel weights, the mean over each feature map of the
        gradient of the target logit (predicted class for ``None``), from one forward pass and a backward
        pass that stops at the target layer."""
        check_images(x)
        with frozen(self.model):
            logits, _, _, alpha = self._features_and_gradcam(x.detach(), targets)
        return logits, alpha

    def _features_and_gradcam(
        self, x: torch.Tensor, targets: TargetsLike
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, classes, A, alpha)``: the capture pass with gradients; ``A`` as :meth:`features`
        gives it, ``alpha`` the Grad-CAM weights."""
        logits, classes, feats, grads = self.capture_with_gradients(x, targets)
        feats = feats.to(work_dtype(x))
        feats = torch.relu(feats) if self.relu else feats
        return logits, classes, feats, grads.to(feats.dtype).mean(dim=(2, 3))

    def initial_weights(self, feats: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
        """The starting ``u`` ``[B, K]``: zeros (uniform), or the log of the mixed Grad-CAM weights.

        ``softmax(u0) = (1 - init_mix) * relu(alpha) / sum(relu(alpha)) + init_mix / K``; an image whose
        Grad-CAM weights are all <= 0 starts uniform.
        """
        batch, channels = feats.shape[:2]
        if self.init == "uniform" or alpha is None:
            return torch.zeros(batch, channels, device=feats.device, dtype=feats.dtype)
        positive = torch.relu(alpha.to(feats.dtype))
        total = positive.sum(dim=1, keepdim=True)
        share = torch.where(total > 0, positive / total.clamp(min=torch.finfo(total.dtype).tiny), 1.0 / channels)
        return torch.log((1 - self.init_mix) * share + self.init_mix / channels)

    def explain(self, x: torch.Tensor, targets: TargetsLike = None) -> OptiCAMResult:
        """Optimize one saliency map per image and target.

        Args:
            x: ``[B, C, H, W]`` images (in [0, 1] for a pixel-space model), on the model's device.
            targets: class per image (int, ints, tensor, ``ClassifierOutputTarget``s); ``None`` = predicted;
                several per image (``[[281, 285], [3]]`` or a ``[B, K]`` tensor) give one map per target,
                optimized in one batch (:meth:`SaliencyMethod.explain`).
        """
        result = super().explain(x, targets)
        assert isinstance(result, OptiCAMResult)
        return result

    def _explain(self, x: torch.Tensor, targets: TargetsLike = None) -> OptiCAMResult:
        check_images(x)
        if self.batch_invariant and x.shape[0] > 1:
            return _concat([self.explain(x[i : i + 1], t) for i, t in enumerate(split_targets(targets, x.shape[0]))])
        start = time.perf_counter()
        x = x.detach()
        with frozen(self.model):
            alpha = None
            if self.init == "gradcam":
                logits, classes, feats, alpha = self._features_and_gradcam(x, targets)
            else:
                logits, feats = self.features(x)
                classes = resolve_targets(targets, logits)
            rows = torch.arange(x.shape[0], device=x.device)
            original = logits[rows, classes].to(feats.dtype)
            u0 = self.initial_weights(feats, alpha)
            u, best, init, steps, passes, coarse_passes = self._optimize(x, feats, classes, original, u0)
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
            coarse_passes=coarse_passes,
        )

    def loop_model(self) -> nn.Module:
        """The model as the loop runs it: ``torch.compile``'d when ``compile=True`` (compiled lazily, once)."""
        if not self.compile:
            return self.model
        if self._compiled is None:
            self._compiled = torch.compile(self.model, dynamic=False)
        return self._compiled

    @contextlib.contextmanager
    def _precision(self, device: torch.device) -> Iterator[None]:
        """Autocast for the loop's model passes when ``precision`` is not float32."""
        if self.precision == "float32":
            yield
            return
        dtype = torch.bfloat16 if self.precision == "bfloat16" else torch.float16
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield

    def _optimize(
        self,
        x: torch.Tensor,
        feats: torch.Tensor,
        classes: torch.Tensor,
        original: torch.Tensor,
        u0: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
        """Adam on ``u`` with a shrinking batch; returns the best ``u`` seen per image, its record, and the
        full-size and coarse-size passes.

        The first ``coarse_iterations`` steps evaluate the objective on the images resized to
        ``coarse_size`` (bilinear, antialiased) with the mask upsampled to that size: the same ``u`` and
        feature maps, a cheaper pass. Their objective values are not comparable with full-size ones, so
        the best ``u`` is chosen among the full-size evaluations only (the last evaluation always is one),
        and no image stops early during the coarse steps.
        """
        batch, channels = feats.shape[:2]
        coarse_steps = self.coarse_iterations if self.coarse_size else 0
        dtype = feats.dtype  # float32, or float64 for float64 images (see work_dtype)
        if u0 is None:
            u0 = torch.zeros(batch, channels, device=x.device, dtype=dtype)
        u = u0.detach().clone().to(dtype).requires_grad_(True)
        optimizer = torch.optim.Adam([u], lr=self.lr)
        scheduler = _scheduler(optimizer, self.schedule, self.iterations)
        model = self.loop_model()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x_coarse = coarse_images(x, self.coarse_size) if coarse_steps else x
        best_u = u0.detach().clone().to(dtype)
        best = torch.full((batch,), float("-inf"), device=x.device, dtype=dtype)
        init = torch.zeros(batch, device=x.device, dtype=dtype)
        previous = torch.full((batch,), float("nan"), device=x.device, dtype=dtype)
        steps = torch.zeros(batch, dtype=torch.long, device=x.device)
        active = torch.arange(batch, device=x.device)
        passes = coarse_passes = 0
        bar = _progress_bar(self.iterations, batch) if self.progress else None
        per_pass = 2 if self.objective == "io-mask" else 1
        try:
            for step in range(self.iterations + 1):
                last = step == self.iterations
                coarse = step < coarse_steps
                images = x_coarse if coarse else x
                size = tuple(images.shape[-2:])
                # u_step is evaluated; unless it is the last, one Adam step follows.
                with torch.set_grad_enabled(not last):
                    full = active.numel() == batch
                    u_active = u if full else u[active]
                    masks = saliency_mask(feats if full else feats[active], u_active, size, self.normalization)
                    with self._precision(x.device):
                        value = objective(
                            model,
                            images if full else images[active],
                            masks,
                            classes if full else classes[active],
                            self.objective,
                            original if full else original[active],
                        ).to(dtype)
                if coarse:
                    coarse_passes += per_pass * int(active.numel())
                else:
                    passes += per_pass * int(active.numel())
                if not torch.isfinite(value).all():
                    raise NumericalError(f"the objective became NaN or infinite at step {step}")
                detached = value.detach()
                if step == 0:
                    init[active] = detached
                if not coarse:
                    better = detached > best[active]
                    improved = active[better]
                    best[improved] = detached[better]
                    best_u[improved] = u_active.detach()[better]
                if self.early_stop and not coarse:
                    # An image whose objective no longer changes leaves now, before the backward pass,
                    # so it costs no further step (its best u is already recorded above).
                    converged = (detached - previous[active]).abs() < self.tol
                    previous[active] = detached
                    if converged.any():
                        value = value[~converged]
                        active = active[~converged]
                if last or active.numel() == 0:
                    break
                optimizer.zero_grad(set_to_none=True)
                (-value.sum()).backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                steps[active] += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(active=int(active.numel()))
                if self.callback is not None:
                    self.callback(step + 1, self.iterations, int(active.numel()))
        finally:
            if bar is not None:
                bar.close()
        return best_u, best, init, steps, passes, coarse_passes


def coarse_images(x: torch.Tensor, side: int) -> torch.Tensor:
    """``x`` resized to ``side`` pixels on its shorter side (bilinear, antialiased), aspect kept."""
    height, width = x.shape[-2:]
    scale = side / min(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if size == (height, width):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def split_targets(targets: TargetsLike, batch: int) -> list[TargetsLike]:
    """One target per image, in the forms ``resolve_targets`` accepts (``None`` stays ``None``)."""
    if targets is None or isinstance(targets, int):
        return [targets] * batch
    if isinstance(targets, torch.Tensor):
        targets = targets.flatten()
    if len(targets) != batch:
        raise TargetError(f"got {len(targets)} targets for {batch} images")
    return [[t] for t in targets]


def _concat(results: list[OptiCAMResult]) -> OptiCAMResult:
    """One result from per-image results, in order."""
    return OptiCAMResult(
        maps=torch.cat([r.maps for r in results]),
        class_indices=torch.cat([r.class_indices for r in results]),
        logits=torch.cat([r.logits for r in results]),
        seconds=sum(r.seconds for r in results),
        objective_initial=torch.cat([r.objective_initial for r in results]),
        objective_final=torch.cat([r.objective_final for r in results]),
        iterations=torch.cat([r.iterations for r in results]),
        weights=torch.cat([r.weights for r in results]),
        passes=sum(r.passes for r in results),
        coarse_passes=sum(r.coarse_passes for r in results),
    )


def work_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of the weights ``u``, the maps and the objective: float64 for float64 images (with a
    float64 model this makes the whole computation double precision), float32 otherwise (also for
    half-precision images: ``u`` and the map stay float32, as with ``precision="bfloat16"``)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def lr_factor(schedule: Schedule, step: int, iterations: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based) as a multiple of ``lr``.

    * ``constant``: 1.
    * ``cosine``: ``(1 + cos(pi * step / iterations)) / 2``, from 1 down towards 0.
    * ``warmup-cosine``: a linear ramp ``(step + 1) / w`` over the first ``w = max(1, iterations // 8)``
      steps, then the cosine decay over the remaining ones.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * step / max(iterations, 1)))
    if schedule == "warmup-cosine":
        warmup = max(1, iterations // 8)
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(iterations - warmup, 1)))
    raise ValueError(f"unknown schedule {schedule!r}; use one of {SCHEDULES}")


def _scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule, iterations: int):
    """A ``LambdaLR`` following :func:`lr_factor`, or ``None`` for a constant rate."""
    if schedule == "constant":
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(schedule, step, iterations))


def _progress_bar(total: int, batch: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"Opti-CAM ({batch} image{'s' if batch != 1 else ''})", unit="step", leave=False)
