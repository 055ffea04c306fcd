"""opticam: Opti-CAM saliency maps (Zhang et al., CVIU 2024) and the paper's evaluation protocol.

Quick start::

    import opticam
    loaded = opticam.load_model()                       # EfficientNet-Lite0, offline
    x = loaded.preprocess(opticam.load_image("cat.jpg"))[None]
    result = opticam.OptiCAM(loaded.model, loaded.target_layer).explain(x)
    result.maps          # [1, 1, 224, 224] in [0, 1]

The package is organized in rooms that follow the data flow (docs/architecture.md): ``models`` (the
classifier in pixel space) -> ``methods`` (saliency maps) -> ``metrics`` (numbers from maps) ->
``evaluation`` (runs, the result store, reports) -> ``viz`` (pictures); ``cli`` and ``web`` are the doors,
``perf`` the speed tools.
"""

from . import metrics
from .errors import (
    ConfigValueError,
    ImageLoadError,
    InputError,
    InputTypeError,
    InputWarning,
    LayerNotFoundError,
    ModelLoadError,
    NumericalError,
    OpticamError,
    ResourceError,
    TargetError,
    UsageError,
)
from .images import load_image
from .methods import OptiCAM, OptiCAMConfig, SaliencyMethod, SaliencyResult
from .models import DEFAULT_MODEL, LoadedModel, PixelSpaceModel, TokensToMaps, find_layer, load_model
from .models.pixel_space import PixelSpaceWarning
from .perf.allocator import tune_cpu_allocator
from .viz.overlay import overlay

__version__ = "0.1.0"

__all__ = [
    "ConfigValueError",
    "DEFAULT_MODEL",
    "ImageLoadError",
    "InputError",
    "InputTypeError",
    "InputWarning",
    "LayerNotFoundError",
    "LoadedModel",
    "ModelLoadError",
    "NumericalError",
    "OptiCAM",
    "OptiCAMConfig",
    "OpticamError",
    "PixelSpaceModel",
    "PixelSpaceWarning",
    "ResourceError",
    "SaliencyMethod",
    "SaliencyResult",
    "TargetError",
    "TokensToMaps",
    "UsageError",
    "find_layer",
    "load_image",
    "load_model",
    "metrics",
    "overlay",
    "tune_cpu_allocator",
]
