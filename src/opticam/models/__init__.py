"""Models: the pixel-space wrapper, the model table and loading, finding layers, capturing them.

* :mod:`.pixel_space`: :class:`PixelSpaceModel`, a classifier that takes [0, 1] images.
* :mod:`.specs`: the model table (:class:`ModelSpec`): offline weights, default layer, preprocessing.
* :mod:`.loading`: :func:`load_model` -> :class:`LoadedModel`; checkpoints; ImageNet class names.
* :mod:`.layers`: finding the target layer by name or automatically; token -> map reshapes.
* :mod:`.hooks`: :func:`capture_layer`, the one forward hook the methods use.
* :mod:`.outputs`: output objects (Hugging Face) -> logits; :class:`LogitsModel` for bare HF models.
* :mod:`.huggingface`: ``hf:<repo>`` loading, processor settings, default layers and reshapes.
"""

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
    load_model,
    map_state_dict_by_order,
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
    "load_model",
    "map_state_dict_by_order",
    "offline_model_names",
    "spec_for",
]
