"""What every saliency method in opticam shares.

:class:`SaliencyMethod` holds the model and the target layer, captures the layer's feature maps with a
forward hook that lives only for that one forward pass (removed in ``finally``, so an exception never
leaves a hook behind), freezes the model while it works (eval mode, no parameter gradients) and restores
its state afterwards, and turns targets into class indices. Subclasses implement :meth:`_explain`; the
public :meth:`SaliencyMethod.explain` adds what every method shares: several targets per image (each image
is repeated once per target, in one batched run) and ``method.outputs``, the logits of the last call (as
pytorch-grad-cam's ``cam.outputs``). A Hugging Face ``transformers`` model is wrapped in
:class:`~opticam.models.outputs.LogitsModel` so that its output object reads as logits.

Two ways to call a method:

* tensor-first: ``method.explain(x, targets) -> SaliencyResult`` with maps ``[B, 1, H, W]`` in [0, 1];
* pytorch-grad-cam style: ``method(input_tensor=x, targets=[ClassifierOutputTarget(c), ...])`` returns
  a ``[B, H, W]`` float32 numpy array, like ``pytorch_grad_cam.GradCAM`` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import NumericalError, TargetError
from ..models.hooks import capture_layer
from ..models.layers import (
    ReshapeTransform,
    auto_layer,
    auto_reshape_transform,
    default_layer,
    find_layer,
    layer_name,
)
from ..models.outputs import LogitsModel, is_huggingface_model

TargetsLike = None | int | Sequence[Any] | torch.Tensor


@dataclass
class SaliencyResult:
    """Maps and what they explain.

    Attributes:
        maps: ``[B, 1, H, W]`` in [0, 1], at the input's resolution.
        class_indices: ``[B]`` the class each map explains.
        logits: ``[B, C]`` the model's logits on the unmasked images.
        seconds: wall time of the whole call.
        image_indices: ``[N]`` the input image each map explains, when several targets per image were
            given (maps come image by image, in the order of each image's targets); ``None`` when map
            ``i`` explains image ``i``.
    """

    maps: torch.Tensor
    class_indices: torch.Tensor
    logits: torch.Tensor
    seconds: float
    image_indices: torch.Tensor | None = field(default=None, kw_only=True)


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients for the duration; the previous state comes back after.

    Eval mode keeps batch-norm statistics fixed (and images independent of each other within a batch);
    switching parameter gradients off means the backward pass stops at the input, and the user's model
    never accumulates ``.grad``.
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in grads:
            p.requires_grad_(flag)


def check_images(x: torch.Tensor) -> None:
    """Reject what no method can explain, with a message that says why."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a tensor [B, C, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"expected images [B, C, H, W], got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"empty input: shape {tuple(x.shape)} (zero images or zero-size images)")
    if not x.is_floating_point():
        raise TypeError(f"expected float images in [0, 1], got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise NumericalError("the input images contain NaN or infinite values")


def check_logits(logits: torch.Tensor) -> None:
    """Raise :class:`NumericalError` when the model's logits hold NaN or infinity (nothing to explain)."""
    if not torch.isfinite(logits).all():
        raise NumericalError("the model returned NaN or infinite logits for these images")


def resolve_targets(targets: TargetsLike, logits: torch.Tensor) -> torch.Tensor:
    """Class indices ``[B]`` from targets; ``None`` means the predicted (top-1) class of each image.

    Accepts an int (same class for all), a sequence of ints, a tensor, or pytorch-grad-cam targets that
    carry a ``category`` (``ClassifierOutputTarget``).
    """
    batch, num_classes = logits.shape
    if targets is None:
        return logits.argmax(dim=1)
    if isinstance(targets, int):
        targets = [targets] * batch
    if isinstance(targets, torch.Tensor):
        values = targets.flatten().tolist()
    else:
        values = []
        for t in targets:
            if hasattr(t, "category"):
                t = t.category
            if isinstance(t, torch.Tensor) and t.numel() == 1:
                t = t.item()
            if isinstance(t, bool) or not isinstance(t, int | np.integer):
                raise TargetError(f"a target must be a class index or a ClassifierOutputTarget, got {type(t).__name__}")
            values.append(int(t))
    if len(values) != batch:
        raise TargetError(f"got {len(values)} targets for {batch} images")
    bad = [v for v in values if not 0 <= v < num_classes]
    if bad:
        raise TargetError(
            f"class index {bad[0]} is out of range: the model has {num_classes} classes (0..{num_classes - 1})"
        )
    return torch.tensor(values, dtype=torch.long, device=logits.device)


def _is_target_list(t: Any) -> bool:
    if isinstance(t, torch.Tensor):
        return t.dim() == 1
    return isinstance(t, list | tuple | np.ndarray)


def expand_targets(x: torch.Tensor, targets: TargetsLike) -> tuple[torch.Tensor, list[Any], torch.Tensor] | None:
    """Several targets per image -> ``(repeated images, one target per row, image index per row)``.

    ``targets`` is nested when it is a 2-d tensor ``[B, K]`` or a sequence with one entry per image in
    which at least one entry is itself a list (``[[281, 285], 3]``: two maps for image 0, one for image
    1). Returns ``None`` for the usual one-target-per-image forms.

    Raises:
        TargetError: the number of entries does not match the batch, or an image has no target.
    """
    if isinstance(targets, torch.Tensor):
        if targets.dim() != 2:
            return None
        per_image: list[list[Any]] = [row.tolist() for row in targets]
    elif isinstance(targets, list | tuple) and any(_is_target_list(t) for t in targets):
        per_image = [
            list(t.tolist() if isinstance(t, torch.Tensor | np.ndarray) else t) if _is_target_list(t) else [t]
            for t in targets
        ]
    else:
        return None
    if len(per_image) != x.shape[0]:
        raise TargetError(f"got target lists for {len(per_image)} images but the batch has {x.shape[0]}")
    if any(len(t) == 0 for t in per_image):
        raise TargetError("every image needs at least one target")
    index = torch.tensor([i for i, t in enumerate(per_image) for _ in t], dtype=torch.long, device=x.device)
    return x[index], [c for t in per_image for c in t], index


class SaliencyMethod:
    """Base class: the model, the target layer and the feature capture.

    Args:
        model: a classifier taking ``[B, C, H, W]`` images; for paper-faithful masking, one that takes
            [0, 1] pixels with the normalization inside (:class:`~opticam.models.PixelSpaceModel`).
        target_layers: the layer to explain: a module, a dotted name, a one-element list of either
            (pytorch-grad-cam style), or ``None`` for the last layer with spatial feature maps.
        reshape_transform: maps a layer's output to ``[B, D, h, w]`` (applied whenever given: token
            outputs ``[B, N, D]``, channels-last ``[B, H, W, C]``); automatic for timm ViT/DeiT/Swin and
            Hugging Face transformers.

    ``target_layers=None`` means the architecture's usual layer (:func:`opticam.models.default_layer`:
    the paper's for ViT/DeiT, per-family defaults for Swin, ConvNeXt, EfficientNet, ... and Hugging Face
    models), else the last layer with spatial feature maps, found at the first call.
    """

    name = "method"
    needs_layer = True
    """False for methods that ignore the model's insides (Fake-CAM): no layer is looked up or captured."""

    def __init__(
        self,
        model: nn.Module,
        target_layers: nn.Module | str | Sequence[nn.Module | str] | None = None,
        reshape_transform: ReshapeTransform | None = None,
    ) -> None:
        if is_huggingface_model(model):
            model = LogitsModel(model)
        self.model = model
        self.outputs: torch.Tensor | None = None
        """The logits ``[N, C]`` of the last :meth:`explain` call on the unmasked images (one row per map)."""
        self._layer: nn.Module | None = None
        self.reshape_transform: ReshapeTransform | None = None
        if not self.needs_layer:
            return
        if isinstance(target_layers, list | tuple):
            if len(target_layers) != 1:
                raise ValueError(f"{type(self).__name__} explains one layer; got {len(target_layers)}")
            target_layers = target_layers[0]
        self.reshape_transform = reshape_transform or auto_reshape_transform(model)
        if target_layers is None:
            target_layers = default_layer(model)
        if isinstance(target_layers, nn.Module):
            self._layer = target_layers
        elif isinstance(target_layers, str):
            self._layer = find_layer(model, target_layers)
        elif target_layers is not None:
            raise TypeError(f"target_layers must be a module, a name or None, got {type(target_layers).__name__}")

    # -- the layer ---------------------------------------------------------------------------------
    def target_layer(self, example: torch.Tensor | None = None) -> nn.Module:
        """The module explained; found automatically on first use when none was given."""
        if self._layer is None:
            if example is None:
                raise ValueError("the target layer is found automatically from an example input; pass one")
            self._layer = auto_layer(self.model, example[:1], self.reshape_transform)
        return self._layer

    @property
    def target_layer_name(self) -> str:
        if not self.needs_layer:
            return "none"
        if self._layer is None:
            return "auto"
        return layer_name(self.model, self._layer)

    # -- capture -----------------------------------------------------------------------------------
    def capture(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass without gradients: ``(logits [B, C], features [B, K, h, w])``.

        The hook that reads the layer's output is removed before this returns, even on an exception.
        """
        captured = capture_layer(self.model, self.target_layer(x), x, name=self.target_layer_name)
        features = self.to_feature_maps(captured.output)
        self._check_finite(captured.logits, features)
        return captured.logits, features

    def capture_with_gradients(
        self, x: torch.Tensor, targets: TargetsLike
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The capture pass plus the gradient of the target logits with respect to the layer's output.

        Returns ``(logits, classes, features, gradients)``, the last two as maps ``[B, K, h, w]``. The
        backward pass runs from the target logits down to the layer and no further.
        """

        def score(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            check_logits(logits)
            classes = resolve_targets(targets, logits.detach())
            rows = torch.arange(x.shape[0], device=x.device)
            return logits[rows, classes].sum(), classes

        captured = capture_layer(self.model, self.target_layer(x), x, score=score, name=self.target_layer_name)
        features = self.to_feature_maps(captured.output)
        gradients = self.to_feature_maps(captured.gradient)
        self._check_finite(captured.logits, features)
        return captured.logits, captured.score_info, features, gradients

    def classify(self, x: torch.Tensor, targets: TargetsLike) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [B, C], classes [B])``: one forward pass without gradients, checked finite, and the
        classes to explain (``targets``, or the predicted ones); for methods that need no capture pass."""
        with torch.no_grad():
            logits = self.model(x).detach()
        check_logits(logits)
        return logits, resolve_targets(targets, logits)

    def _check_finite(self, logits: torch.Tensor, features: torch.Tensor) -> None:
        check_logits(logits)
        if not torch.isfinite(features).all():
            raise NumericalError(f"layer {self.target_layer_name} produced NaN or infinite activations")

    def to_feature_maps(self, output: torch.Tensor) -> torch.Tensor:
        """The layer's output as maps ``[B, K, h, w]``: token outputs go through the reshape transform.

        Raises a ValueError that says what to do when the output is tokens without a reshape transform,
        or not maps at all.
        """
        if output.dim() == 3 and self.reshape_transform is None:
            raise ValueError(
                f"layer {self.target_layer_name} outputs tokens {tuple(output.shape)}; pass "
                "reshape_transform= (e.g. opticam.TokensToMaps(prefix_tokens=1))"
            )
        if self.reshape_transform is not None:
            output = self.reshape_transform(output)
        if output.dim() != 4:
            raise ValueError(
                f"layer {self.target_layer_name} outputs shape {tuple(output.shape)}, not feature maps "
                "[B, K, h, w]; choose a convolutional layer"
            )
        return output

    # -- the two calls ----------------------------------------------------------------------------
    def explain(self, x: torch.Tensor, targets: TargetsLike = None) -> SaliencyResult:
        """Maps ``[N, 1, H, W]`` in [0, 1] for images ``x`` ``[B, C, H, W]``.

        Args:
            x: the images, on the model's device.
            targets: ``None`` (each image's predicted class), a class for all, one class per image (ints,
                a 1-d tensor, ``ClassifierOutputTarget``s), or several per image (a 2-d tensor
                ``[B, K]``, or a list whose entries may be lists): then each image is repeated once per
                target in one batched run, ``N`` is the number of targets and ``result.image_indices``
                says which image each map explains.
        """
        check_images(x)
        expanded = expand_targets(x, targets)
        index = None
        if expanded is not None:
            x, targets, index = expanded
        result = self._explain(x, targets)
        if index is not None:
            result.image_indices = index
        self.outputs = result.logits
        return result

    def _explain(self, x: torch.Tensor, targets: TargetsLike = None) -> SaliencyResult:
        """One map per image of ``x`` for one target per image: what each method implements."""
        raise NotImplementedError

    def __call__(self, input_tensor: torch.Tensor, targets: TargetsLike = None, **_: Any) -> np.ndarray:
        """pytorch-grad-cam style: ``[B, H, W]`` float32 numpy maps in [0, 1]."""
        return self.explain(input_tensor, targets).maps[:, 0].detach().float().cpu().numpy()

    def __enter__(self) -> SaliencyMethod:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to release: hooks never outlive a call. Kept for pytorch-grad-cam's ``with`` idiom."""
