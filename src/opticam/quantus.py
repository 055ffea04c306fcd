"""Quantus integration: ``explain_func`` in the shape Quantus expects, so Quantus metrics evaluate opticam.

Quantus (Hedström et al., JMLR 2023) calls ``explain_func(model=..., inputs=..., targets=...,
**explain_func_kwargs)`` with numpy images and class indices and wants numpy attributions back. This
module's :func:`explain_func` runs any opticam method that way::

    import quantus, opticam, opticam.quantus
    loaded = opticam.load_model()                      # a PixelSpaceModel: x_batch in [0, 1]
    metric = quantus.FaithfulnessCorrelation(nr_runs=20, subset_size=224, perturb_baseline="black")
    scores = metric(model=loaded.model, x_batch=x, y_batch=y, device="cpu",
                    explain_func=opticam.quantus.explain_func,
                    explain_func_kwargs={"method": "opticam", "layer": loaded.target_layer, "iterations": 100})

Give Quantus the pixel-space model and [0, 1] images (as opticam does): Quantus' "black" baseline is then
a black pixel, like Opti-CAM's mask. This module does not import Quantus; opticam does not depend on it.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from .methods.base import SaliencyMethod

__all__ = ["explain_func"]


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _method(model: nn.Module, method: str | SaliencyMethod, layer: Any, reshape: Any, options: dict) -> SaliencyMethod:
    if isinstance(method, SaliencyMethod):
        if options or layer is not None:
            raise ValueError("give options and layer when the method is named, not with a ready method object")
        return method
    from .methods.registry import create_method
    from .models.layers import auto_reshape_transform, default_layer

    # The registry's factories read only these three attributes of a LoadedModel.
    loaded = SimpleNamespace(
        model=model,
        target_layer=layer if layer is not None else default_layer(model),
        reshape_transform=reshape or auto_reshape_transform(model),
    )
    return create_method(method, loaded, **options)  # type: ignore[arg-type]


def explain_func(
    model: nn.Module,
    inputs: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor | int | list[int] | None,
    *,
    method: str | SaliencyMethod = "opticam",
    layer: nn.Module | str | None = None,
    reshape_transform: Any = None,
    device: str | torch.device | None = None,
    **options: Any,
) -> np.ndarray:
    """Attributions ``[B, 1, H, W]`` (float32 numpy, in [0, 1]) for ``inputs`` ``[B, C, H, W]``.

    Args:
        model: the classifier Quantus evaluates (a :class:`~opticam.PixelSpaceModel` for [0, 1] inputs).
        inputs: the images, channels first, numpy or tensor.
        targets: one class index per image (``None``: each image's predicted class).
        method: an opticam method name (``opticam``, ``opticam-fast``, ``gradcam``, ... see
            :func:`opticam.methods.method_names`) or a ready :class:`~opticam.SaliencyMethod`.
        layer: the target layer (module or dotted name); default: the architecture's usual layer.
        reshape_transform: token -> map reshape; automatic for timm and Hugging Face transformers.
        device: where to run; default: the model's device. Quantus passes its own ``device`` here.
        **options: the method's options (``iterations=50``, ``objective="diff"``, ...). Quantus' other
            keyword arguments that opticam does not know (e.g. ``channel_first``) are ignored.
    """
    options = {k: v for k, v in options.items() if k not in _QUANTUS_EXTRAS}
    x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor) else inputs)
    x = x.to(device=torch.device(device) if device is not None else _device_of(model), dtype=torch.float32)
    if targets is not None and not isinstance(targets, int):
        targets = torch.as_tensor(np.asarray(targets) if not isinstance(targets, torch.Tensor) else targets)
        targets = targets.to(torch.long).flatten().tolist()
    cam = _method(model, method, layer, reshape_transform, options)
    result = cam.explain(x, targets)
    return result.maps.detach().float().cpu().numpy()


_QUANTUS_EXTRAS = frozenset({"channel_first", "softmax", "model_predict_kwargs", "xai_lib", "abs", "normalise"})
"""Keyword arguments Quantus may forward to an explain function; they mean nothing to opticam."""
