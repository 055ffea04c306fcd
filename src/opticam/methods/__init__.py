"""Methods: what turns a model and an image into a saliency map.

* :mod:`.base`: :class:`SaliencyMethod` (model, layer, capture, targets) and :class:`SaliencyResult`.
* :mod:`.opticam`: :class:`OptiCAM`; its settings in :mod:`.opticam_config`, its maths in
  :mod:`.opticam_maths`, named settings in :mod:`.presets`.
* :mod:`.fakecam`: :class:`FakeCAM`, the paper's sanity row.
* :mod:`.gradcam`: the pytorch-grad-cam baselines (Grad-CAM, Grad-CAM++, Score-CAM, ...).
* :mod:`.registry`: names -> :class:`MethodEntry` (options declared per method), specs with options
  (``opticam(objective=diff)``: :func:`parse_method_specs`, :class:`MethodSpec`), :func:`create_method`.
"""

from .base import (
    Diagnostics,
    Maps,
    SaliencyMethod,
    SaliencyResult,
    TargetsLike,
    check_images,
    frozen,
    resolve_targets,
)
from .fakecam import FakeCAM
from .gradcam import GRAD_CAM_METHODS, GradCamAdapter
from .opticam import OptiCAM
from .opticam_config import OptiCAMConfig
from .presets import PRESETS, preset_config
from .registry import (
    METHODS,
    MethodEntry,
    MethodOption,
    MethodSpec,
    create_method,
    method_entry,
    method_names,
    parse_method_list,
    parse_method_specs,
)

__all__ = [
    "GRAD_CAM_METHODS",
    "METHODS",
    "PRESETS",
    "Diagnostics",
    "Maps",
    "MethodEntry",
    "MethodOption",
    "MethodSpec",
    "FakeCAM",
    "GradCamAdapter",
    "OptiCAM",
    "OptiCAMConfig",
    "SaliencyMethod",
    "SaliencyResult",
    "TargetsLike",
    "check_images",
    "create_method",
    "frozen",
    "method_entry",
    "method_names",
    "parse_method_list",
    "parse_method_specs",
    "preset_config",
    "resolve_targets",
]
