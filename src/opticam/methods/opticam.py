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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import NumericalError, TargetError
from ..models.layers import ReshapeTransform
from ..models.pixel_space import warn_if_not_pixel_space
from .base import (
    Diagnostics,
    Maps,
    ProgressCallback,
    SaliencyMethod,
    TargetsLike,
    check_images,
    frozen,
    resolve_targets,
)
from .opticam_config import SCHEDULES, OptiCAMConfig, Schedule, opticam_options, preset_options
from .opticam_maths import objective, saliency_mask
from .presets import PRESETS
from .registry import MethodEntry, register


@dataclass
class _Loop:
    """The state of one optimization, per image of the batch: what :meth:`OptiCAM._optimize` updates.

    ``active`` lists the images still optimized (an image whose objective stopped changing leaves);
    ``best_u`` / ``best`` the best weights and objective seen at full size; ``initial`` the objective at
    the first evaluation; ``previous`` the last full-size one (for early stopping); ``steps`` the optimizer
    steps taken. ``passes`` / ``coarse_passes`` count forward passes over single images at full size and at
    ``coarse_size``.
    """

    u: torch.Tensor
    best_u: torch.Tensor
    best: torch.Tensor
    initial: torch.Tensor
    previous: torch.Tensor
    steps: torch.Tensor
    active: torch.Tensor
    passes: int = 0
    coarse_passes: int = 0

    @classmethod
    def start(cls, u0: torch.Tensor) -> _Loop:
        batch, dtype, device = u0.shape[0], u0.dtype, u0.device
        return cls(
            u=u0.detach().clone().requires_grad_(True),
            best_u=u0.detach().clone(),
            best=torch.full((batch,), float("-inf"), device=device, dtype=dtype),
            initial=torch.zeros(batch, device=device, dtype=dtype),
            previous=torch.full((batch,), float("nan"), device=device, dtype=dtype),
            steps=torch.zeros(batch, dtype=torch.long, device=device),
            active=torch.arange(batch, device=device),
        )

    @property
    def full(self) -> bool:
        """Every image still active (the loop then skips the indexing)."""
        return self.active.numel() == self.u.shape[0]

    def of_active(self, t: torch.Tensor) -> torch.Tensor:
        """``t``'s rows of the active images."""
        return t if self.full else t[self.active]


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

    ``cam.config`` is the whole configuration (``cam.config.iterations``). ``init="gradcam"`` starts from
    the positive part of Grad-CAM's channel weights (mean gradient of the class logit over each feature
    map), normalized to sum to one and mixed with uniform weights (``init_mix``); the gradient comes from
    the capture pass (a backward from the logits to the target layer only), not from an extra model pass.
    ``batch_invariant=True`` optimizes the images of a batch one at a time, so that each map is bit for bit
    the map the image gets alone: in float32 some CPU kernels sum in a batch-size-dependent order, and 100
    Adam steps amplify a difference that small (docs/models.md, "Batches and precision").
    """

    name = "opticam"
    options = opticam_options()
    counts_passes: ClassVar[bool] = True

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
        self.config: OptiCAMConfig = (config or OptiCAMConfig()).replace(**options)
        self.callback = callback
        self.progress = progress
        self._compiled: nn.Module | None = None

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

    def settings(self) -> dict[str, Any]:
        """Every Opti-CAM setting in force (:class:`OptiCAMConfig` as a dict)."""
        return self.config.as_dict()

    # -- the capture pass ---------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, A)``: the original logits and the (ReLU'd) feature maps, computed once."""
        logits, feats = self.capture(x)
        feats = feats.to(work_dtype(x))
        return logits, torch.relu(feats) if self.config.relu else feats

    def gradcam_weights(self, x: torch.Tensor, targets: TargetsLike = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, alpha [B, K])``: Grad-CAM's channel weights, the mean over each feature map of the
        gradient of the target logit (predicted class for ``None``), from one forward pass and a backward
        pass that stops at the target layer."""
        check_images(x)
        with frozen(self.model):
            logits, _, _, alpha = self.features_and_gradcam(x.detach(), targets)
        return logits, alpha

    def features_and_gradcam(
        self, x: torch.Tensor, targets: TargetsLike
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, classes, A, alpha)``: the capture pass with gradients; ``A`` as :meth:`features`
        gives it, ``alpha`` the Grad-CAM weights."""
        logits, classes, feats, grads = self.capture_with_gradients(x, targets)
        feats = feats.to(work_dtype(x))
        feats = torch.relu(feats) if self.config.relu else feats
        return logits, classes, feats, grads.to(feats.dtype).mean(dim=(2, 3))

    def _capture(
        self, x: torch.Tensor, targets: TargetsLike
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(logits, classes, A, alpha)`` of the one capture pass; ``alpha`` only for the Grad-CAM start."""
        if self.config.init == "gradcam":
            return self.features_and_gradcam(x, targets)
        logits, feats = self.features(x)
        return logits, resolve_targets(targets, logits), feats, None

    def initial_weights(self, feats: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
        """The starting ``u`` ``[B, K]``: zeros (uniform), or the log of the mixed Grad-CAM weights.

        ``softmax(u0) = (1 - init_mix) * relu(alpha) / sum(relu(alpha)) + init_mix / K``; an image whose
        Grad-CAM weights are all <= 0 starts uniform.
        """
        batch, channels = feats.shape[:2]
        if self.config.init == "uniform" or alpha is None:
            return torch.zeros(batch, channels, device=feats.device, dtype=feats.dtype)
        mix = self.config.init_mix
        positive = torch.relu(alpha.to(feats.dtype))
        total = positive.sum(dim=1, keepdim=True)
        share = torch.where(total > 0, positive / total.clamp(min=torch.finfo(total.dtype).tiny), 1.0 / channels)
        return torch.log((1 - mix) * share + mix / channels)

    # -- the method -------------------------------------------------------------------------------
    def compute(self, x: torch.Tensor, targets: TargetsLike) -> Maps:
        """Optimize one saliency map per image and target (one image at a time when ``batch_invariant``)."""
        if self.config.batch_invariant and x.shape[0] > 1:
            per_image = split_targets(targets, x.shape[0])
            return Maps.concat([self._compute_batch(x[i : i + 1], t) for i, t in enumerate(per_image)])
        return self._compute_batch(x, targets)

    def _compute_batch(self, x: torch.Tensor, targets: TargetsLike) -> Maps:
        """Capture once, optimize the channel weights, and return the best map seen per image."""
        logits, classes, feats, alpha = self._capture(x, targets)
        rows = torch.arange(x.shape[0], device=x.device)
        original = logits[rows, classes].to(feats.dtype)
        loop = self._optimize(x, feats, classes, original, self.initial_weights(feats, alpha))
        with torch.no_grad():
            maps = saliency_mask(feats, loop.best_u, tuple(x.shape[-2:]), self.config.normalization)
        diagnostics = Diagnostics(
            iterations=loop.steps,
            objective_initial=loop.initial,
            objective_final=loop.best,
            passes=loop.passes + x.shape[0],  # the loop's passes and the capture pass
            counts={"coarse_passes": loop.coarse_passes},
            arrays={"weights": torch.softmax(loop.best_u, dim=1)},
        )
        return Maps(maps, classes, logits, diagnostics)

    def loop_model(self) -> nn.Module:
        """The model as the loop runs it: ``torch.compile``'d when ``compile=True`` (compiled lazily, once)."""
        if not self.config.compile:
            return self.model
        if self._compiled is None:
            self._compiled = torch.compile(self.model, dynamic=False)
        return self._compiled

    @contextlib.contextmanager
    def _precision(self, device: torch.device) -> Iterator[None]:
        """Autocast for the loop's model passes when ``precision`` is not float32."""
        if self.config.precision == "float32":
            yield
            return
        dtype = torch.bfloat16 if self.config.precision == "bfloat16" else torch.float16
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield

    # -- the optimization, step by step -------------------------------------------------------------
    def _optimize(
        self,
        x: torch.Tensor,
        feats: torch.Tensor,
        classes: torch.Tensor,
        original: torch.Tensor,
        u0: torch.Tensor,
    ) -> _Loop:
        """Adam on ``u`` with a shrinking batch; the returned state holds the best ``u`` seen per image.

        Each step evaluates the objective at the current ``u`` (:meth:`_evaluate`), records the best
        (:meth:`_record`), lets converged images leave (:meth:`_drop_converged`), then takes one Adam step
        (:meth:`_step`); the last evaluation takes no step. The first ``coarse_iterations`` evaluations run
        on the images resized to ``coarse_size`` (bilinear, antialiased) with the mask upsampled to that
        size: the same ``u`` and feature maps, a cheaper pass. Their objective values are not comparable
        with full-size ones, so the best ``u`` is chosen among the full-size evaluations only (the last
        evaluation always is one), and no image stops early during the coarse steps.
        """
        config = self.config
        coarse_steps = config.coarse_iterations if config.coarse_size else 0
        loop = _Loop.start(u0.to(feats.dtype))
        optimizer = torch.optim.Adam([loop.u], lr=config.lr)
        scheduler = _scheduler(optimizer, config.schedule, config.iterations)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x_coarse = coarse_images(x, config.coarse_size) if coarse_steps else x
        bar = _progress_bar(config.iterations, x.shape[0]) if self.progress else None
        try:
            for step in range(config.iterations + 1):
                last, coarse = step == config.iterations, step < coarse_steps
                value = self._evaluate(loop, x_coarse if coarse else x, feats, classes, original, grad=not last)
                self._count(loop, coarse)
                if not torch.isfinite(value).all():
                    raise NumericalError(f"the objective became NaN or infinite at step {step}")
                if step == 0:
                    loop.initial[loop.active] = value.detach()
                if not coarse:
                    self._record(loop, value.detach())
                    if config.early_stop:
                        value = self._drop_converged(loop, value)
                if last or loop.active.numel() == 0:
                    break
                self._step(loop, value, optimizer, scheduler)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(active=int(loop.active.numel()))
                self.step_done(step + 1, config.iterations, int(loop.active.numel()))
        finally:
            if bar is not None:
                bar.close()
        return loop

    def _evaluate(
        self,
        loop: _Loop,
        images: torch.Tensor,
        feats: torch.Tensor,
        classes: torch.Tensor,
        original: torch.Tensor,
        *,
        grad: bool,
    ) -> torch.Tensor:
        """The objective ``[active]`` of the active images at the current ``u`` (one model pass)."""
        with torch.set_grad_enabled(grad):
            u = loop.of_active(loop.u)
            masks = saliency_mask(loop.of_active(feats), u, tuple(images.shape[-2:]), self.config.normalization)
            with self._precision(images.device):
                value = objective(
                    self.loop_model(),
                    loop.of_active(images),
                    masks,
                    loop.of_active(classes),
                    self.config.objective,
                    loop.of_active(original),
                )
        return value.to(feats.dtype)

    def _count(self, loop: _Loop, coarse: bool) -> None:
        """Add the evaluation's model passes (two per image for ``io-mask``: the mask and its inverse)."""
        passes = (2 if self.config.objective == "io-mask" else 1) * int(loop.active.numel())
        if coarse:
            loop.coarse_passes += passes
        else:
            loop.passes += passes

    @staticmethod
    def _record(loop: _Loop, value: torch.Tensor) -> None:
        """Keep, per active image, the best full-size objective and the ``u`` that gave it."""
        better = value > loop.best[loop.active]
        improved = loop.active[better]
        loop.best[improved] = value[better]
        loop.best_u[improved] = loop.of_active(loop.u).detach()[better]

    def _drop_converged(self, loop: _Loop, value: torch.Tensor) -> torch.Tensor:
        """Images whose objective changed by less than ``tol`` leave now, before the backward pass, so they
        cost no further step (their best ``u`` is already recorded); returns the remaining images' values."""
        detached = value.detach()
        converged = (detached - loop.previous[loop.active]).abs() < self.config.tol
        loop.previous[loop.active] = detached
        if converged.any():
            loop.active = loop.active[~converged]
            return value[~converged]
        return value

    @staticmethod
    def _step(loop: _Loop, value: torch.Tensor, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        """One Adam step that maximizes the sum of the active images' objectives (each image independent)."""
        optimizer.zero_grad(set_to_none=True)
        (-value.sum()).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loop.steps[loop.active] += 1


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


def _register_preset(name: str, preset: str, summary: str) -> None:
    """Register Opti-CAM at a preset's settings: its options are :class:`OptiCAMConfig`'s fields with the
    preset's values as defaults; plain ``opticam`` (the paper's) also takes the Opti-CAM command-line flags."""
    config = PRESETS[preset]
    options = opticam_options() if preset == "paper" else preset_options(config)

    def build(loaded: Any, layer: Any, **chosen: Any) -> OptiCAM:
        return OptiCAM(loaded.model, layer, loaded.reshape_transform, config=config, **chosen)

    register(MethodEntry(name, build, options, summary))


_register_preset("opticam", "paper", "Opti-CAM, the paper's algorithm (Adam, lr 0.1, 100 steps)")
_register_preset(
    "opticam-fast", "fast", "Opti-CAM, 'fast' preset: 32 steps, cosine rate from 1.0, log-probability objective"
)
_register_preset("opticam-tenth", "tenth", "Opti-CAM, 'tenth' preset: 9 steps (a quick look; less class keeping)")
