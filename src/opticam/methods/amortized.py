"""Amortized Opti-CAM: channel weights predicted in one pass by a trained head, then ``refine`` Opti-CAM steps.

Paper Opti-CAM starts every image from uniform weights (``u = 0``) and takes up to 100 Adam steps, one forward
and one backward pass of the whole model each. :class:`AmortizedOptiCAM` starts instead from the ``u`` that an
:class:`~opticam.methods.explainer_head.ExplainerHead` predicts from the capture pass (the layer's feature maps
and Grad-CAM's weights for the target class), and continues from there with exactly Opti-CAM's loop: the same
objective, normalization, best-``u`` bookkeeping and early stopping (:class:`~opticam.OptiCAM`), for ``refine``
steps. ``refine=0`` is the head's map alone: one capture pass (forward, and backward to the layer) plus one
forward pass that scores it.

The refinement's defaults are the schedule of the few-step presets (cosine decay over the ``refine`` steps,
the log-probability objective, as ``fast``), at the ``tenth`` preset's starting rate 2.0, which docs/speed.md
found to reach far more in few steps than the paper's Adam at lr 0.1 (from the shipped head, 3 steps at 2.0
gave AG 47 against 42 at 1.0 on 32 of its training images: docs/speed.md, section 7); every one can be changed
like ``opticam``'s options.

Heads are trained by ``opticam train-explainer`` (:mod:`opticam.training`); one ships for EfficientNet-Lite0 at
its default layer and is used when ``head`` is not given. A head trained for other weights or another layer is
refused in one line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from ..models.fingerprint import weights_fingerprint
from ..models.layers import ReshapeTransform
from ..options import Option
from .base import Maps, ProgressCallback, TargetsLike
from .explainer_head import (
    SHIPPED,
    ExplainerHead,
    HeadInfo,
    check_head,
    file_digest,
    load_head,
    shipped_digest,
    shipped_head,
)
from .opticam import OptiCAM
from .opticam_config import OptiCAMConfig, preset_options
from .registry import MethodEntry, register

REFINE_CONFIG = OptiCAMConfig(iterations=0, lr=2.0, schedule="cosine", objective="log-prob")
"""The refinement's settings by default: cosine decay from lr 2.0 on the log-probability objective
(``iterations`` is ``refine``)."""

REFINE = Option("refine", "int", 0, "Opti-CAM steps from the head's prediction (0: the head's map alone)", low=0)
HEAD = Option(
    "head",
    "file",
    None,
    "path of a trained explainer head, or a shipped head's file name (default: the head shipped for this model "
    "and layer)",
    optional=True,
    search=(str(SHIPPED),),
)


MATCH_WEIGHTS = Option(
    "match_weights",
    "bool",
    True,
    "refuse a head trained for other weights (false: use it anyway, as the sanity check's randomized models do)",
)


def amortized_options() -> tuple[Option, ...]:
    """``refine``, ``head``, then Opti-CAM's options except ``iterations`` (``refine`` is that) and the start
    (``init``, ``init_mix``: the head is the start), with the refinement's defaults (:data:`REFINE_CONFIG`)."""
    skipped = {"iterations", "init", "init_mix"}  # refine is the iterations; the head is the start
    return (REFINE, HEAD, MATCH_WEIGHTS) + tuple(o for o in preset_options(REFINE_CONFIG) if o.name not in skipped)


class AmortizedOptiCAM(OptiCAM):
    """Opti-CAM started from a trained head's prediction (issue 28; see the module docstring).

    Args:
        model, target_layers, reshape_transform: as :class:`~opticam.OptiCAM`.
        head: the head file (``None``: the one shipped for this model's weights and layer).
        refine: Opti-CAM steps after the prediction (``iterations``).
        match_weights: refuse a head whose weights fingerprint is not the model's (``False``: the cascading
            randomization check applies the original model's head to randomized copies; the layer must still
            match, and ``head`` must then be given, since a shipped head is found by the fingerprint).
        config: the refinement's settings (default :data:`REFINE_CONFIG`); ``options`` override its fields.

    Raises:
        UsageError: no head file there, no shipped head for this model, or a head trained for another
            model or layer. InputError: a file that is not a head.
    """

    name = "opticam-amortized"
    options = amortized_options()

    def __init__(
        self,
        model: nn.Module,
        target_layers: nn.Module | str | Sequence[nn.Module | str] | None = None,
        reshape_transform: ReshapeTransform | None = None,
        *,
        head: str | Path | None = None,
        refine: int = 0,
        match_weights: bool = True,
        config: OptiCAMConfig | None = None,
        callback: ProgressCallback | None = None,
        progress: bool = False,
        warn_pixel_space: bool = True,
        **options: Any,
    ) -> None:
        refine = REFINE.check(refine, f"method {self.name}")
        base = (config or REFINE_CONFIG).replace(iterations=refine)
        super().__init__(
            model,
            target_layers,
            reshape_transform,
            config=base,
            callback=callback,
            progress=progress,
            warn_pixel_space=warn_pixel_space,
            **options,
        )
        self.match_weights = MATCH_WEIGHTS.check(match_weights, f"method {self.name}")
        self.fingerprint = weights_fingerprint(self.model)
        self.head_source = None if head is None else str(head)
        self._head: tuple[ExplainerHead, HeadInfo, str] | None = None
        if head is not None:
            head = resolve_head(head)
            explainer, info = load_head(head)
            self._head = (explainer, info, str(head))
        if self._layer is not None:
            self.head()  # the mismatch is refused now, not at the first image

    def head(self) -> tuple[ExplainerHead, HeadInfo, str]:
        """``(head, info, source)``: the head in use, checked against the model's weights and the layer."""
        layer = self.target_layer_name
        if self._head is None:
            found = shipped_head(self.fingerprint, layer)
            if found is None:
                raise UsageError(
                    f"no explainer head ships for this model (weights {self.fingerprint}) at layer {layer}; train "
                    "one with `opticam train-explainer` and pass opticam-amortized(head=PATH)"
                )
            explainer, info = load_head(found)
            self._head = (explainer, info, f"shipped:{found.name}")
        explainer, info, source = self._head
        check_head(info, source, self.fingerprint if self.match_weights else info.weights_fingerprint, layer)
        return self._head

    def _capture(
        self, x: torch.Tensor, targets: TargetsLike
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The capture pass with Grad-CAM's weights, which the head reads."""
        return self.features_and_gradcam(x, targets)

    def initial_weights(self, feats: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
        """The head's prediction of ``u`` ``[B, K]``, the refinement's start."""
        explainer, _, _ = self.head()
        assert alpha is not None  # _capture always computes it
        explainer = explainer.to(feats.device)
        with torch.no_grad():
            return explainer(feats, alpha).to(feats.dtype)

    def _compute_batch(self, x: torch.Tensor, targets: TargetsLike) -> Maps:
        maps = super()._compute_batch(x, targets)
        _, info, source = self.head()
        maps.diagnostics.notes["head"] = f"{source} ({info.model} at {info.layer})"
        return maps


def resolve_head(head: str | Path) -> Path:
    """A head's path: ``head`` itself, or the shipped head of that file name (``efficientnet_lite0-bn2.pt``) when
    there is no such file."""
    path = Path(head)
    if not path.exists() and path.name == str(head) and (SHIPPED / path.name).is_file():
        return SHIPPED / path.name
    return path


def _recorded(options: Mapping[str, Any]) -> dict[str, Any]:
    """What a run records of the head besides its path: the digest of its bytes (of every shipped head when
    none is given), so that an edited head file never returns an old row."""
    head = options.get("head")
    if head is None:
        return {"head_digest": f"shipped:{shipped_digest()}"}
    path = resolve_head(head)
    return {"head_digest": file_digest(path) if path.is_file() else "missing"}


def _build(loaded: Any, layer: Any, **chosen: Any) -> AmortizedOptiCAM:
    config = dataclasses.replace(REFINE_CONFIG)
    return AmortizedOptiCAM(loaded.model, layer, loaded.reshape_transform, config=config, **chosen)


register(
    MethodEntry(
        AmortizedOptiCAM.name,
        _build,
        AmortizedOptiCAM.options,
        "Opti-CAM started from a trained head's prediction, plus `refine` steps (cosine from lr 2.0, log-prob)",
        recorded=_recorded,
    )
)
