"""What every saliency method in opticam shares.

:class:`SaliencyMethod` holds the model and the target layer, captures the layer's feature maps with a
forward hook that lives only for that one forward pass (removed in ``finally``, so an exception never
leaves a hook behind), freezes the model while it works (eval mode, no parameter gradients) and restores
its state afterwards, and turns targets into class indices.

**The contract.** A subclass writes only how it computes its maps: :meth:`SaliencyMethod.compute` takes
checked images and targets and returns :class:`Maps` (maps, explained classes, logits and the method's
:class:`Diagnostics`). The public :meth:`SaliencyMethod.explain` owns everything else, for every method
alike: the input checks, several targets per image (each image is repeated once per target, in one
batched run), the frozen model state, the timing, the count of model passes, the check of the maps (shape,
finite, [0, 1]) and the :class:`SaliencyResult`; ``method.outputs`` holds the logits of the last call (as
pytorch-grad-cam's ``cam.outputs``). A Hugging Face ``transformers`` model is wrapped in
:class:`~opticam.models.outputs.LogitsModel` so that its output object reads as logits.

Two ways to call a method:

* tensor-first: ``method.explain(x, targets) -> SaliencyResult`` with maps ``[B, 1, H, W]`` in [0, 1];
* pytorch-grad-cam style: ``method(input_tensor=x, targets=[ClassifierOutputTarget(c), ...])`` returns
  a ``[B, H, W]`` float32 numpy array, like ``pytorch_grad_cam.GradCAM`` does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import InputError, InputTypeError, InputWarning, NumericalError, TargetError
from ..models.hooks import capture_layer
from ..models.inputs import check_images, check_images_for_model  # check_images: importable here too
from ..models.layers import (
    ReshapeTransform,
    auto_layer,
    auto_reshape_transform,
    default_layer,
    find_layer,
    layer_name,
)
from ..models.outputs import LogitsModel, is_huggingface_model
from ..options import Option, with_defaults

TargetsLike = None | int | Sequence[Any] | torch.Tensor


ProgressCallback = Callable[[int, int, int], None]
"""``callback(step, total_steps, active_images)``: called by iterative methods after every step."""

PER_IMAGE_DIAGNOSTICS = ("iterations", "objective_initial", "objective_final")


@dataclass
class Diagnostics:
    """What a method measured while it computed its maps: the same fields for every method.

    A field a method does not measure stays ``None`` (Grad-CAM has no iterations). The evaluation store,
    the summary, the web page, the grid and the report read these fields, never a method's own attributes.

    Attributes:
        iterations: ``[B]`` optimizer steps per map (iterative methods: Opti-CAM, Extremal Perturbation).
        objective_initial: ``[B]`` the optimized objective at the start.
        objective_final: ``[B]`` the objective of the returned map.
        passes: forward passes of the model over single images during the whole call (a batch of 8 is 8
            passes), the method's own count when it keeps one, else counted at the model's ``forward``.
        values: other per-image numbers ``[B]`` a method measures, by name (stored with the row).
        counts: other call-level counts (Opti-CAM's ``coarse_passes``: passes at its coarse size).
        arrays: per-image tensors ``[B, ...]`` (Opti-CAM's channel weights): returned, not stored.
        notes: call-level text (amortized Opti-CAM's ``head``: which head made the start): in ``explain``'s
            JSON record, not stored per row (the run records the method's settings).
    """

    iterations: torch.Tensor | None = None
    objective_initial: torch.Tensor | None = None
    objective_final: torch.Tensor | None = None
    passes: int | None = None
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    arrays: dict[str, torch.Tensor] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def record(self, i: int, maps: int) -> dict[str, float | int]:
        """Map ``i``'s diagnostics as JSON-ready numbers (fields that are ``None`` are left out).

        ``passes`` becomes ``passes_per_map``: the call's passes divided by the ``maps`` it made.
        """
        out: dict[str, float | int] = {}
        for name in PER_IMAGE_DIAGNOSTICS:
            value = getattr(self, name)
            if value is not None:
                out[name] = int(value[i]) if name == "iterations" else float(value[i])
        if self.passes is not None and maps:
            out["passes_per_map"] = self.passes / maps
        out.update({name: float(v[i]) for name, v in self.values.items()})
        return out

    @staticmethod
    def concat(parts: Sequence[Diagnostics]) -> Diagnostics:
        """The diagnostics of consecutive calls as one (per-image fields concatenated, passes summed)."""
        if not parts:
            return Diagnostics()

        def cat(name: str) -> torch.Tensor | None:
            values = [getattr(p, name) for p in parts]
            return None if any(v is None for v in values) else torch.cat(values)

        passes = [p.passes for p in parts]
        return Diagnostics(
            **{name: cat(name) for name in PER_IMAGE_DIAGNOSTICS},
            passes=None if any(v is None for v in passes) else sum(passes),
            values={k: torch.cat([p.values[k] for p in parts]) for k in parts[0].values},
            counts={k: sum(p.counts[k] for p in parts) for k in parts[0].counts},
            arrays={k: torch.cat([p.arrays[k] for p in parts]) for k in parts[0].arrays},
            notes={k: v for p in parts for k, v in p.notes.items()},
        )


@dataclass
class Maps:
    """What :meth:`SaliencyMethod.compute` returns: one map per image and what it explains.

    Attributes:
        maps: ``[B, 1, H, W]`` at the input's resolution (checked and clipped to [0, 1] by ``explain``).
        class_indices: ``[B]`` the class each map explains.
        logits: ``[B, C]`` the model's logits on the unmasked images.
        diagnostics: what the method measured.
    """

    maps: torch.Tensor
    class_indices: torch.Tensor
    logits: torch.Tensor
    diagnostics: Diagnostics = field(default_factory=Diagnostics)

    @staticmethod
    def concat(parts: Sequence[Maps]) -> Maps:
        """Consecutive calls' maps as one, in order."""
        return Maps(
            maps=torch.cat([p.maps for p in parts]),
            class_indices=torch.cat([p.class_indices for p in parts]),
            logits=torch.cat([p.logits for p in parts]),
            diagnostics=Diagnostics.concat([p.diagnostics for p in parts]),
        )


@dataclass
class SaliencyResult:
    """Maps and what they explain, as :meth:`SaliencyMethod.explain` returns them for every method.

    Attributes:
        maps: ``[B, 1, H, W]`` in [0, 1], at the input's resolution.
        class_indices: ``[B]`` the class each map explains.
        logits: ``[B, C]`` the model's logits on the unmasked images.
        seconds: wall time of the whole call.
        image_indices: ``[N]`` the input image each map explains, when several targets per image were
            given (maps come image by image, in the order of each image's targets); ``None`` when map
            ``i`` explains image ``i``.
        diagnostics: what the method measured (:class:`Diagnostics`); ``result.iterations``,
            ``result.objective_initial``, ``result.objective_final``, ``result.passes`` and
            ``result.weights`` read it (``None`` for a method that does not measure it).
    """

    maps: torch.Tensor
    class_indices: torch.Tensor
    logits: torch.Tensor
    seconds: float
    image_indices: torch.Tensor | None = field(default=None, kw_only=True)
    diagnostics: Diagnostics = field(default_factory=Diagnostics, kw_only=True)

    @property
    def iterations(self) -> torch.Tensor | None:
        return self.diagnostics.iterations

    @property
    def objective_initial(self) -> torch.Tensor | None:
        return self.diagnostics.objective_initial

    @property
    def objective_final(self) -> torch.Tensor | None:
        return self.diagnostics.objective_final

    @property
    def passes(self) -> int | None:
        return self.diagnostics.passes

    @property
    def weights(self) -> torch.Tensor | None:
        """Opti-CAM's channel weights ``softmax(u*)`` ``[B, K]``; ``None`` for other methods."""
        return self.diagnostics.arrays.get("weights")

    def record(self, i: int) -> dict[str, float | int]:
        """Map ``i``'s diagnostics as JSON-ready numbers (:meth:`Diagnostics.record`)."""
        return self.diagnostics.record(i, int(self.maps.shape[0]))


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


def check_maps(maps: torch.Tensor, x: torch.Tensor, method: str) -> torch.Tensor:
    """A method's maps as ``explain`` returns them: ``[B, 1, H, W]`` like ``x``, finite, clipped to [0, 1]."""
    want = (x.shape[0], 1, *x.shape[-2:])
    if tuple(maps.shape) != want:
        raise InputError(f"{method} returned maps of shape {tuple(maps.shape)}; expected {want}")
    if not torch.isfinite(maps).all():
        raise NumericalError(f"{method} produced NaN or infinite maps")
    return maps.detach().clamp(0, 1)


@contextlib.contextmanager
def counting_passes(model: nn.Module) -> Iterator[list[int]]:
    """Count the images that go through ``model``'s forward while the block runs (``counter[0]``).

    The hook is a forward pre-hook on the model's top module, removed on exit even on an exception.
    """
    counter = [0]

    def count(_module: nn.Module, args: tuple[Any, ...]) -> None:
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() > 0:
            counter[0] += int(args[0].shape[0])

    handle = model.register_forward_pre_hook(count)
    try:
        yield counter
    finally:
        handle.remove()


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

    name: ClassVar[str] = "method"
    needs_layer: ClassVar[bool] = True
    """False for methods that ignore the model's insides (Fake-CAM): no layer is looked up or captured."""
    options: ClassVar[tuple[Option, ...]] = ()
    """The options the method takes besides its layer, declared once (:mod:`opticam.options`): the registry,
    ``--methods`` specs, ``opticam methods``, the docs' tables and :meth:`check_options` all read them."""
    counts_passes: ClassVar[bool] = False
    """True for methods that count their own model passes (``Diagnostics.passes``); the others are counted
    at the model's forward by :meth:`explain`."""

    def __init__(
        self,
        model: nn.Module,
        target_layers: nn.Module | str | Sequence[nn.Module | str] | None = None,
        reshape_transform: ReshapeTransform | None = None,
    ) -> None:
        if is_huggingface_model(model):
            model = LogitsModel(model)
        self.model = model
        self.callback: ProgressCallback | None = None
        """``callback(step, total, active)`` after each step of an iterative method; ``None``: no calls."""
        self.outputs: torch.Tensor | None = None
        """The logits ``[N, C]`` of the last :meth:`explain` call on the unmasked images (one row per map)."""
        self._layer: nn.Module | None = None
        self.reshape_transform: ReshapeTransform | None = None
        if not self.needs_layer:
            return
        if isinstance(target_layers, list | tuple):
            if len(target_layers) != 1:
                raise InputError(f"{type(self).__name__} explains one layer; got {len(target_layers)}")
            target_layers = target_layers[0]
        self.reshape_transform = reshape_transform or auto_reshape_transform(model)
        if target_layers is None:
            target_layers = default_layer(model)
        if isinstance(target_layers, nn.Module):
            self._layer = target_layers
        elif isinstance(target_layers, str):
            self._layer = find_layer(model, target_layers)
        elif target_layers is not None:
            raise InputTypeError(f"target_layers must be a module, a name or None, got {type(target_layers).__name__}")

    @classmethod
    def check_options(cls, **given: Any) -> dict[str, Any]:
        """Every declared option's value in force: its default, or the checked value in ``given`` (an unknown
        name is a :class:`~opticam.errors.UsageError` listing the options; a bad value a
        :class:`~opticam.errors.ConfigValueError` naming it and what it accepts). Subclasses call it once in
        ``__init__``, so Python users and ``--methods`` get the same checks and messages."""
        return with_defaults(cls.options, given, f"method {cls.name}")

    # -- the layer ---------------------------------------------------------------------------------
    def target_layer(self, example: torch.Tensor | None = None) -> nn.Module:
        """The module explained; found automatically on first use when none was given."""
        if self._layer is None:
            if example is None:
                raise InputError("the target layer is found automatically from an example input; pass one")
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
            raise InputError(
                f"layer {self.target_layer_name} outputs tokens {tuple(output.shape)}; pass "
                "reshape_transform= (e.g. opticam.TokensToMaps(prefix_tokens=1))"
            )
        if self.reshape_transform is not None:
            output = self.reshape_transform(output)
        if output.dim() != 4:
            raise InputError(
                f"layer {self.target_layer_name} outputs shape {tuple(output.shape)}, not feature maps "
                "[B, K, h, w]; choose a convolutional layer"
            )
        if output.shape[-2] * output.shape[-1] == 1:
            warnings.warn(
                f"layer {self.target_layer_name} gives a 1 x 1 feature grid for these images: every map is "
                "constant. Use images of the model's input size (e.g. 224 x 224 via loaded.preprocess).",
                InputWarning,
                stacklevel=4,
            )
        return output

    def settings(self) -> dict[str, Any]:
        """The settings that made the maps, as JSON-ready values (``explain``'s record); none by default."""
        return {}

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

        The same steps for every method: check the images, expand the targets, freeze the model, time and
        count the model passes around :meth:`compute`, check its maps, and build the result.
        """
        check_images(x)
        check_images_for_model(x, self.model)
        expanded = expand_targets(x, targets)
        index = None
        if expanded is not None:
            x, targets, index = expanded
        x = x.detach()
        start = time.perf_counter()
        with frozen(self.model):
            counting = contextlib.nullcontext([None]) if self.counts_passes else counting_passes(self.model)
            with counting as counter:
                out = self.compute(x, targets)
        seconds = time.perf_counter() - start
        diagnostics = out.diagnostics
        if diagnostics.passes is None and counter[0] is not None:
            diagnostics = dataclasses.replace(diagnostics, passes=counter[0])
        result = SaliencyResult(
            maps=check_maps(out.maps, x, self.name),
            class_indices=out.class_indices,
            logits=out.logits.detach(),
            seconds=seconds,
            image_indices=index,
            diagnostics=diagnostics,
        )
        self.outputs = result.logits
        return result

    def compute(self, x: torch.Tensor, targets: TargetsLike) -> Maps:
        """One map per image of ``x`` for one target per image: the one thing each method implements.

        Called by :meth:`explain` with checked, detached images, one target per image (``None``: the
        predicted class), the model frozen. Return the maps at the input's resolution.
        """
        raise NotImplementedError

    def step_done(self, step: int, total: int, active: int) -> None:
        """Iterative methods call this after each step; it forwards to :attr:`callback` when one is set."""
        if self.callback is not None:
            self.callback(step, total, active)

    def __call__(self, input_tensor: torch.Tensor, targets: TargetsLike = None, **_: Any) -> np.ndarray:
        """pytorch-grad-cam style: ``[B, H, W]`` float32 numpy maps in [0, 1]."""
        return self.explain(input_tensor, targets).maps[:, 0].detach().float().cpu().numpy()

    def __enter__(self) -> SaliencyMethod:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to release: hooks never outlive a call. Kept for pytorch-grad-cam's ``with`` idiom."""
