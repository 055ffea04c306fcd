"""What a loaded classifier is: :class:`LoadedModel` (the pixel-space model, its preprocessing, class names,
default layer and reshape) and :class:`Preprocessing`; class-name tables and reading a checkpoint.

Kept apart from :mod:`.loading` (models by name) so that every way of getting a model, by name or from a
factory of the user's (:mod:`.factory`), builds the same thing without importing the other.
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
from torchvision import transforms

from ..errors import InputError, ModelLoadError
from .pixel_space import PixelSpaceModel
from .specs import IMAGENET_MEAN, IMAGENET_STD

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


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
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
