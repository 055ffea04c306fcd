"""Explain, then score: the one path from a method and images to maps with their AD / AG / AI terms.

:func:`explain_and_score` runs one method on a batch and scores every image with the paper's per-image
terms (``p``, ``o`` and the AD / AG / AI terms, :mod:`opticam.metrics.drop_gain`). The evaluation runner,
``opticam compare``, the web page and ``benchmarks/quality.py`` all call it. :func:`explain_with` does it
for several methods by name (the grid and the page).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..methods.base import SaliencyMethod, SaliencyResult, TargetsLike
from ..methods.registry import create_method, parse_method_list
from ..metrics.drop_gain import DropGainTerms, class_probabilities, drop_gain_terms
from ..models.loading import LoadedModel

# step, total steps, method index, method count
MethodProgress = Callable[[int, int, int, int], None]


@dataclass
class MethodResult:
    """One method's maps for a batch, with each image's scores.

    Attributes:
        name: the method.
        maps: ``[B, 1, H, W]`` in [0, 1].
        classes: ``[B]`` explained class per image.
        logits: ``[B, C]`` the model's logits on the unmasked images.
        p, o: ``[B]`` class probability on the original and on the masked image.
        terms: the per-image AD / AG / AI terms (fractions, not percent).
        scores: per image, ``{"AD": ..., "AG": ..., "AI": ...}`` in percent (this image's term of each average).
        seconds: wall time of the method's ``explain`` call for the batch.
        iterations: ``[B]`` Opti-CAM steps taken, or ``None`` for other methods.
        result: the method's own result (Opti-CAM's has the objective values).
    """

    name: str
    maps: torch.Tensor
    classes: torch.Tensor
    logits: torch.Tensor
    p: torch.Tensor
    o: torch.Tensor
    terms: DropGainTerms
    scores: list[dict[str, float]]
    seconds: float
    iterations: torch.Tensor | None
    result: SaliencyResult


def explain_and_score(
    method: SaliencyMethod, model: nn.Module, x: torch.Tensor, targets: TargetsLike = None, *, name: str | None = None
) -> MethodResult:
    """Explain ``x`` (``[B, 3, H, W]`` in [0, 1]) with ``method`` and score each image's map with ``model``.

    ``targets`` as in :meth:`~opticam.methods.base.SaliencyMethod.explain` (``None`` = the predicted class);
    the scores are for the explained class.
    """
    result = method.explain(x, targets)
    p, o = class_probabilities(model, x, result.maps, result.class_indices)
    terms = drop_gain_terms(p, o)
    scores = [
        {"AD": 100 * float(d), "AG": 100 * float(g), "AI": 100 * float(i)}
        for d, g, i in zip(terms.drop, terms.gain, terms.increase, strict=True)
    ]
    return MethodResult(
        name=name or method.name,
        maps=result.maps.detach(),
        classes=result.class_indices,
        logits=result.logits,
        p=p,
        o=o,
        terms=terms,
        scores=scores,
        seconds=result.seconds,
        iterations=getattr(result, "iterations", None),
        result=result,
    )


def explain_with(
    loaded: LoadedModel,
    x: torch.Tensor,
    methods: Sequence[str],
    targets: TargetsLike = None,
    *,
    iterations: int = 100,
    progress: MethodProgress | None = None,
) -> dict[str, MethodResult]:
    """:func:`explain_and_score` for each named method in turn, on ``loaded``'s usual layer.

    ``iterations`` is Opti-CAM's step count (the other methods take no options).
    ``progress(step, total, method_index, method_count)`` is called as Opti-CAM steps, and once when each
    method finishes (``step == total``).
    """
    names = parse_method_list(list(methods))
    results: dict[str, MethodResult] = {}
    for index, name in enumerate(names):

        def step_callback(step: int, total: int, _active: int, index: int = index) -> None:
            if progress is not None:
                progress(step, total, index, len(names))

        options = {"iterations": iterations, "callback": step_callback} if name == "opticam" else {}
        method = create_method(name, loaded, **options)
        results[name] = explain_and_score(method, loaded.model, x, targets, name=name)
        if progress is not None:
            progress(1, 1, index, len(names))
    return results
