"""Capturing one layer's output during a forward pass: the only forward hook opticam's methods use.

The hook lives for that one pass and is removed in ``finally``, so an exception never leaves a hook on
the user's model (pytorch-grad-cam keeps its hooks for an object's lifetime; torchcam removes them on
exit; we never keep them at all).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class LayerCapture:
    """What one forward pass gave: the logits, the layer's output and, if asked, its gradient.

    Attributes:
        logits: the model's output, detached.
        output: the layer's output (its first element when the layer returns a tuple), detached.
        gradient: ``d score / d output`` for the ``score`` function given, else ``None``.
        score_info: whatever the ``score`` function returned besides the scalar (e.g. the classes).
    """

    logits: torch.Tensor
    output: torch.Tensor
    gradient: torch.Tensor | None = None
    score_info: Any = None


ScoreFn = Callable[[torch.Tensor], tuple[torch.Tensor, Any]]
"""``score(logits) -> (scalar to differentiate, info)``: what the gradient is taken of."""


def capture_layer(
    model: nn.Module, layer: nn.Module, x: torch.Tensor, *, score: ScoreFn | None = None, name: str = "target"
) -> LayerCapture:
    """Run ``model(x)`` once and capture ``layer``'s output; with ``score``, also its gradient.

    Without ``score`` the pass runs under ``no_grad``. With it, the hook swaps the layer's output for a
    detached copy that requires a gradient, so the backward pass runs from ``score(logits)`` down to the
    layer and no further (nothing below the layer is differentiated, whatever the parameters' flags).

    Raises:
        RuntimeError: the layer did not run during the pass (it is not part of the model's forward).
    """
    store: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        first = output[0] if isinstance(output, tuple | list) else output
        if score is None:
            store.append(first)
            return None
        leaf = first.detach().requires_grad_(True)
        store.append(leaf)
        if isinstance(output, tuple | list):
            return type(output)([leaf, *output[1:]])
        return leaf

    handle = layer.register_forward_hook(hook)
    try:
        with torch.set_grad_enabled(score is not None):
            logits = model(x)
    finally:
        handle.remove()
    if not store:
        raise RuntimeError(f"layer {name} did not run during the forward pass")
    if score is None:
        return LayerCapture(logits.detach(), store[-1].detach())
    value, info = score(logits)
    (gradient,) = torch.autograd.grad(value, store[-1])
    return LayerCapture(logits.detach(), store[-1].detach(), gradient, info)
