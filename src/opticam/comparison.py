"""Run several saliency methods on the same images and score each image: what grids and the web page show.

:func:`explain_with` builds each named method (through the registry in :mod:`opticam.methods` when it is
there; Opti-CAM alone otherwise), explains a batch, and scores every image with the paper's per-image
AD / AG / AI terms (:func:`opticam.metrics.drop_gain_terms`, in percent). Opti-CAM's step count and a
progress callback are the only options passed on; the other methods take none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .base import SaliencyMethod, TargetsLike
from .core import OptiCAM
from .metrics import class_probabilities, drop_gain_terms
from .models import LoadedModel

# step, total steps, method index, method count
MethodProgress = Callable[[int, int, int, int], None]


def method_names() -> list[str]:
    """The method names that :func:`build_method` accepts."""
    try:
        from .methods import METHODS
    except ImportError:  # the registry is optional: Opti-CAM alone works without it
        return ["opticam"]
    return list(METHODS)


def build_method(
    name: str,
    loaded: LoadedModel,
    *,
    iterations: int = 100,
    callback: Callable[[int, int, int], None] | None = None,
    layer: Any = None,
) -> SaliencyMethod:
    """One method by name, on ``loaded``'s usual layer; ``iterations``/``callback`` apply to Opti-CAM only."""
    options: dict[str, Any] = {}
    if name == "opticam":
        options = {"iterations": iterations, "callback": callback}
    try:
        from .methods import create_method
    except ImportError:
        if name != "opticam":
            raise ValueError(f"unknown method {name!r}; known methods: opticam") from None
        return OptiCAM(loaded.model, layer or loaded.target_layer, loaded.reshape_transform, **options)
    return create_method(name, loaded, layer=layer, **options)


@dataclass
class MethodResult:
    """One method's maps for a batch, with each image's scores.

    Attributes:
        name: the method.
        maps: ``[B, 1, H, W]`` in [0, 1].
        classes: ``[B]`` explained class per image.
        p, o: ``[B]`` class probability on the original and on the masked image.
        scores: per image, ``{"AD": ..., "AG": ..., "AI": ...}`` in percent (this image's term of each average).
        seconds: wall time of the method's ``explain`` call for the batch.
        iterations: ``[B]`` Opti-CAM steps taken, or ``None`` for other methods.
    """

    name: str
    maps: torch.Tensor
    classes: torch.Tensor
    logits: torch.Tensor
    p: torch.Tensor
    o: torch.Tensor
    scores: list[dict[str, float]]
    seconds: float
    iterations: torch.Tensor | None = None


def explain_with(
    loaded: LoadedModel,
    x: torch.Tensor,
    methods: Sequence[str],
    targets: TargetsLike = None,
    *,
    iterations: int = 100,
    progress: MethodProgress | None = None,
) -> dict[str, MethodResult]:
    """Explain ``x`` (``[B, 3, H, W]`` in [0, 1]) with each method in turn and score every image.

    ``targets`` as in :meth:`~opticam.base.SaliencyMethod.explain` (``None`` = the predicted class).
    ``progress(step, total, method_index, method_count)`` is called as Opti-CAM steps, and once when each
    method finishes (``step == total``).
    """
    if not methods:
        raise ValueError("name at least one method")
    unknown = [m for m in methods if m not in method_names()]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; known methods: {', '.join(method_names())}")
    results: dict[str, MethodResult] = {}
    for index, name in enumerate(methods):

        def step_callback(step: int, total: int, _active: int, index: int = index) -> None:
            if progress is not None:
                progress(step, total, index, len(methods))

        method = build_method(name, loaded, iterations=iterations, callback=step_callback)
        result = method.explain(x, targets)
        p, o = class_probabilities(loaded.model, x, result.maps, result.class_indices)
        terms = drop_gain_terms(p, o)
        scores = [
            {"AD": 100 * float(d), "AG": 100 * float(g), "AI": 100 * float(i)}
            for d, g, i in zip(terms.drop, terms.gain, terms.increase, strict=True)
        ]
        results[name] = MethodResult(
            name=name,
            maps=result.maps.detach(),
            classes=result.class_indices,
            logits=result.logits,
            p=p,
            o=o,
            scores=scores,
            seconds=result.seconds,
            iterations=getattr(result, "iterations", None),
        )
        if progress is not None:
            progress(1, 1, index, len(methods))
    return results


def top_k(loaded: LoadedModel, logits: torch.Tensor, k: int = 5) -> list[dict[str, Any]]:
    """The ``k`` most probable classes of one image's logits ``[C]``: index, name, probability."""
    probs = torch.softmax(logits.detach().float().flatten(), dim=0)
    top = probs.topk(min(k, probs.numel()))
    return [
        {"class_index": int(i), "name": loaded.class_name(int(i)), "prob": float(v)}
        for v, i in zip(top.values, top.indices, strict=True)
    ]
