"""Explain, then score, for a batch in hand: maps with their AD / AG / AI terms.

:func:`explain_and_score` runs one method on a batch and scores every image with the paper's per-image
terms (``p``, ``o`` and the AD / AG / AI terms, :mod:`opticam.metrics.drop_gain`): what Python users,
``opticam compare``, the web page and ``benchmarks/quality.py`` call. :func:`explain_with` does it for several
methods by name (the grid and the page). The evaluation runner scores through the metric declarations
instead (:func:`opticam.evaluation.runner.chunk_rows`: every selected metric, not only AD / AG / AI); the
``drop-gain`` metric's scorer calls the same two functions (:func:`~opticam.metrics.drop_gain.class_probabilities`,
:func:`~opticam.metrics.drop_gain.drop_gain_terms`), and tests/evaluation/test_evaluate.py checks that both
give the same numbers on the real model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..methods.base import SaliencyMethod, SaliencyResult, TargetsLike
from ..methods.registry import create_method, parse_method_specs, specs_with_flags
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
        iterations: ``[B]`` steps taken by an iterative method (``result.diagnostics``), else ``None``.
        result: the method's result, with its :class:`~opticam.methods.base.Diagnostics`.
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
        iterations=result.diagnostics.iterations,
        result=result,
    )


def explain_with(
    loaded: LoadedModel,
    x: torch.Tensor,
    methods: Sequence[str],
    targets: TargetsLike = None,
    *,
    iterations: int | None = 100,
    progress: MethodProgress | None = None,
) -> dict[str, MethodResult]:
    """:func:`explain_and_score` for each method spec in turn (``"opticam"``, ``"opticam(lr=0.3)"``), on
    ``loaded``'s usual layer; results by the keys of the specs as given (``results["opticam"]`` also when
    ``iterations`` changed its steps: callers look results up by what they asked for), each result's ``name``
    the key of what ran (``opticam(iterations=2)``).

    ``iterations`` sets the step count of the methods that take the Opti-CAM flags (plain Opti-CAM; a
    preset keeps its own; ``None`` leaves every method's own). ``progress(step, total, method_index,
    method_count)`` is called as each method starts (``step == total == 0``), after each step of an
    iterative method, and once when each method finishes (``step == total == 1``).
    """
    flags = {} if iterations is None else {"iterations": iterations}
    asked = parse_method_specs(list(methods))
    specs = specs_with_flags(asked, flags)
    results: dict[str, MethodResult] = {}
    for index, (key, spec) in enumerate(zip([a.key for a in asked], specs, strict=True)):
        method = create_method(spec, loaded)
        if progress is not None:
            progress(0, 0, index, len(specs))
            method.callback = lambda step, total, _active, index=index: progress(step, total, index, len(specs))
        results[key] = explain_and_score(method, loaded.model, x, targets, name=spec.key)
        if progress is not None:
            progress(1, 1, index, len(specs))
    return results
