"""Hugging Face ``transformers`` image classifiers: loading, preprocessing, default layers, reshapes.

``load_model("hf:google/vit-base-patch16-224")`` builds any ``AutoModelForImageClassification`` (a hub
name or a local folder written by ``save_pretrained``); its preprocessing (mean, std, input size, crop,
resampling) comes from the repository's ``preprocessor_config.json``, its class names from
``config.id2label``. The output object is unwrapped to logits by :class:`~opticam.models.PixelSpaceModel`.

The layer explained by default, per architecture (also for a user's own HF model passed to a method):

* ViT, DeiT (plain and distilled), BEiT and other ViT-like encoders: the paper's choice, the LayerNorm
  of the last block (``layernorm_before`` of the last layer); its tokens ``[B, N, D]`` are laid out on
  the patch grid after dropping the class/distillation tokens (:class:`TokensToMaps` with
  ``prefix_tokens=None``: whatever the grid does not fill).
* Swin / Swin V2: the final LayerNorm (``swin.layernorm``), the features the head pools; tokens on a
  square grid, no prefix token.
* ConvNeXt / ConvNeXt V2: the last stage's feature maps.
* anything else: ``None``, the last layer with spatial feature maps.

``transformers`` is an optional dependency (``pip install "opticam[huggingface]"``); it is imported only
when a Hugging Face model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import ModelLoadError
from .families import ModelFamily, register_family
from .outputs import is_huggingface_model
from .reshapes import TokensToMaps
from .specs import HF_PREFIX, ModelSpec

_SWIN_TYPES = ("swin", "swinv2", "donut-swin", "maskformer-swin")
_CONVNEXT_TYPES = ("convnext", "convnextv2")
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL.Image.Resampling values


@dataclass(frozen=True)
class ProcessorSettings:
    """The preprocessing a Hugging Face image processor applies, in opticam's terms.

    ``input_size`` is what the model sees; the image's short side is resized to ``input_size / crop_pct``
    and centre-cropped (``crop_pct=1``: resized straight to the input size's short side).
    """

    input_size: tuple[int, int]
    crop_pct: float
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _transformers():
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelLoadError(
            "Hugging Face models need the transformers package: pip install 'opticam[huggingface]' "
            f"(import failed: {exc})"
        ) from exc
    return transformers


def create(repo: str, pretrained: bool) -> nn.Module:
    """``AutoModelForImageClassification`` for ``repo`` (hub name or local folder), in eval mode.

    ``pretrained=False`` builds the architecture from its configuration with random weights (the
    configuration itself still comes from the hub or the folder).

    Raises:
        ModelLoadError: transformers is missing, or the model or its configuration cannot be had.
    """
    transformers = _transformers()
    try:
        if pretrained:
            model = transformers.AutoModelForImageClassification.from_pretrained(repo)
        else:
            config = transformers.AutoConfig.from_pretrained(repo)
            model = transformers.AutoModelForImageClassification.from_config(config)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"could not load the Hugging Face model {repo!r} ({type(exc).__name__}: {exc}). A hub name needs "
            "a network the first time (then the cache serves it); a local folder needs config.json "
            "(and the weights, unless pretrained=False)."
        ) from exc
    return model.eval()


def processor_settings(repo: str, model: nn.Module) -> ProcessorSettings:
    """The preprocessing of ``repo``'s image processor (``preprocessor_config.json``).

    Without a processor configuration: the model config's ``image_size``, crop 0.875, bicubic, and the
    ImageNet mean/std.
    """
    transformers = _transformers()
    try:
        settings, _ = transformers.image_processing_utils.ImageProcessingMixin.get_image_processor_dict(repo)
    except (OSError, ValueError):
        settings = {}
    return settings_from_processor(settings, getattr(model, "config", None))


def settings_from_processor(settings: dict[str, Any], config: Any = None) -> ProcessorSettings:
    """Turn an image processor's settings (the JSON dict) into :class:`ProcessorSettings`.

    Handles the three layouts transformers uses: ``size={"height", "width"}`` (ViT: resize to that size,
    no crop), ``size`` + ``crop_size`` with ``do_center_crop`` (DeiT, BEiT: resize then crop), and
    ``size={"shortest_edge"}`` with ``crop_pct`` (ConvNeXt).
    """
    from .specs import IMAGENET_MEAN, IMAGENET_STD

    image_size = getattr(config, "image_size", 224) if config is not None else 224
    if isinstance(image_size, list | tuple):
        image_size = image_size[0]
    size = settings.get("size") or {}
    if isinstance(size, int):
        size = {"shortest_edge": size}
    crop = settings.get("crop_size") or {}
    if isinstance(crop, int):
        crop = {"height": crop, "width": crop}
    if settings.get("do_center_crop") and "height" in crop:
        input_size = (int(crop["height"]), int(crop["width"]))
        resized = size.get("height") or size.get("shortest_edge") or input_size[0]
        crop_pct = min(1.0, input_size[0] / float(resized))
    elif "height" in size:
        input_size = (int(size["height"]), int(size["width"]))
        crop_pct = 1.0
    elif "shortest_edge" in size:
        edge = int(size["shortest_edge"])
        input_size = (edge, edge)
        crop_pct = float(settings.get("crop_pct") or 0.875) if edge < 384 else 1.0
    else:
        input_size = (int(image_size), int(image_size))
        crop_pct = 0.875
    resample = settings.get("resample", 3)
    interpolation = _RESAMPLE.get(int(resample), "bicubic") if isinstance(resample, int) else "bicubic"
    normalize = settings.get("do_normalize", True)
    mean = tuple(settings.get("image_mean") or IMAGENET_MEAN) if normalize else (0.0, 0.0, 0.0)
    std = tuple(settings.get("image_std") or IMAGENET_STD) if normalize else (1.0, 1.0, 1.0)
    return ProcessorSettings(input_size, crop_pct, interpolation, tuple(map(float, mean)), tuple(map(float, std)))


def class_names(model: nn.Module) -> list[str] | None:
    """``config.id2label`` in index order, or ``None`` when the model has no such labels."""
    config = getattr(model, "config", None)
    labels = getattr(config, "id2label", None)
    if not labels:
        return None
    return [str(labels.get(i, labels.get(str(i), f"class {i}"))) for i in range(len(labels))]


def _model_type(model: nn.Module) -> str:
    return str(getattr(getattr(model, "config", None), "model_type", ""))


def _is_vit_like(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    if config is None or _model_type(model) in _SWIN_TYPES or not hasattr(config, "patch_size"):
        return False
    return any(name.endswith("layernorm_before") for name, _ in model.named_modules())


def default_layer(model: nn.Module) -> str | None:
    """The layer opticam explains by default in a Hugging Face classifier (see the module's docstring)."""
    if not is_huggingface_model(model):
        return None
    names = [name for name, _ in model.named_modules()]
    kind = _model_type(model)
    if kind in _SWIN_TYPES:
        norms = [n for n in names if n.count(".") == 1 and n.endswith(".layernorm")]
        return norms[-1] if norms else None
    if kind in _CONVNEXT_TYPES:
        stages = [n for n in names if n.rsplit(".", 1)[0].endswith("encoder.stages")]
        return stages[-1] if stages else None
    if _is_vit_like(model):
        return [n for n in names if n.endswith("layernorm_before")][-1]
    return None


def reshape_transform(model: nn.Module):
    """Token -> map reshape for Hugging Face transformers (ViT-like, Swin); ``None`` for CNNs."""
    if not is_huggingface_model(model):
        return None
    if _model_type(model) in _SWIN_TYPES:
        return TokensToMaps(prefix_tokens=0)
    if _is_vit_like(model):
        config = model.config
        image = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        patch = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
        grid = image // patch
        return TokensToMaps(prefix_tokens=None, grid=(grid, grid))
    return None


def _preprocessing(spec: ModelSpec, model: nn.Module) -> tuple:
    hf = processor_settings(spec.arch, model)
    return hf.input_size, hf.crop_pct, hf.interpolation, hf.mean, hf.std


HUGGINGFACE = register_family(
    ModelFamily(
        name="huggingface",
        prefix=HF_PREFIX,
        make_spec=lambda name: ModelSpec(name, "huggingface", name[len(HF_PREFIX) :]),
        create=lambda spec, pretrained: create(spec.arch, pretrained),
        preprocessing=_preprocessing,
        owns_model=is_huggingface_model,  # a bare classifier (families.family_of_model)
        default_layer=default_layer,
        class_names=class_names,
    )
)
