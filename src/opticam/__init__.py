"""opticam: Opti-CAM saliency maps (Zhang et al., CVIU 2024) and the paper's evaluation protocol.

Quick start::

    import opticam
    loaded = opticam.load_model()                       # EfficientNet-Lite0, offline
    x = loaded.preprocess(opticam.load_image("cat.jpg"))[None]
    result = opticam.OptiCAM(loaded.model, loaded.target_layer).explain(x)
    result.maps          # [1, 1, 224, 224] in [0, 1]
"""

from .allocator import tune_cpu_allocator
from .base import SaliencyMethod, SaliencyResult
from .core import OptiCAM, OptiCAMResult
from .errors import (
    ImageLoadError,
    LayerNotFoundError,
    ModelLoadError,
    NumericalError,
    OpticamError,
    TargetError,
)
from .images import load_image
from .layers import TokensToMaps, find_layer
from .models import DEFAULT_MODEL, LoadedModel, PixelSpaceModel, load_model
from .viz import overlay

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "ImageLoadError",
    "LayerNotFoundError",
    "LoadedModel",
    "ModelLoadError",
    "NumericalError",
    "OptiCAM",
    "OptiCAMResult",
    "OpticamError",
    "PixelSpaceModel",
    "SaliencyMethod",
    "SaliencyResult",
    "TargetError",
    "TokensToMaps",
    "find_layer",
    "load_image",
    "load_model",
    "overlay",
    "tune_cpu_allocator",
]
