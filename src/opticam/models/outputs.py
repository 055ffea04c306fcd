"""Model outputs that are not a tensor: Hugging Face output objects, tuples, dicts -> the logits tensor.

Every method and metric in opticam reads ``model(x)`` as logits ``[B, C]``. Hugging Face ``transformers``
classifiers return an output object (``ImageClassifierOutput``) whose logits are ``.logits``; some models
return a tuple or a dict. :func:`logits_of` unwraps them in one place: :class:`PixelSpaceModel` applies it
to its classifier's output, and :class:`LogitsModel` wraps a model that is handed to a method bare, so
that every method, metric and hook sees a tensor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def logits_of(output: Any) -> torch.Tensor:
    """The logits tensor inside a model's output.

    A tensor is returned as is; an object with a ``.logits`` tensor (Hugging Face outputs), a mapping
    with a ``"logits"`` key, or a tuple/list (its first element) are unwrapped.

    Raises:
        TypeError: nothing in ``output`` looks like logits.
    """
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(
        f"the model returned {type(output).__name__}, not logits: expected a tensor [B, C], an object with "
        "a .logits tensor, a dict with 'logits', or a tuple whose first element is the logits"
    )


def is_huggingface_model(model: nn.Module) -> bool:
    """True for a ``transformers`` model (a subclass of one counts), without importing ``transformers``."""
    return any(cls.__module__.startswith("transformers.") for cls in type(model).__mro__)


class LogitsModel(nn.Module):
    """``model`` whose output is unwrapped to the logits tensor (:func:`logits_of`).

    Methods wrap a bare Hugging Face classifier in it so that the mask objective, the hooks and the
    metrics all see ``[B, C]`` logits. Layer names are looked up inside ``model``
    (:func:`opticam.models.inner_model` sees through the wrapper).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.model(x))
