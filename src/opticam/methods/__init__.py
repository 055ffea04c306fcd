"""Methods: what turns a model and an image into a saliency map.

* :mod:`.base`: :class:`SaliencyMethod` (model, layer, capture, targets) and :class:`SaliencyResult`.
* :mod:`.opticam`: :class:`OptiCAM`; its settings in :mod:`.opticam_config`, its maths in
  :mod:`.opticam_maths`, named settings in :mod:`.presets`.
* :mod:`.fakecam`: :class:`FakeCAM`, the paper's sanity row.
* :mod:`.gradcam`: the pytorch-grad-cam baselines (Grad-CAM, Grad-CAM++, Score-CAM, ...).
* :mod:`.registry`: names -> factories (:data:`METHODS`, :func:`create_method`, :func:`parse_method_list`).
"""

from .base import SaliencyMethod, SaliencyResult, TargetsLike, check_images, frozen, resolve_targets
from .fakecam import FakeCAM
from .gradcam import GRAD_CAM_METHODS, GradCamAdapter
from .opticam import OptiCAM, OptiCAMResult
from .opticam_config import OptiCAMConfig
from .presets import PRESETS, preset_config
from .registry import METHODS, create_method, method_names, parse_method_list

__all__ = [
    "GRAD_CAM_METHODS",
    "METHODS",
    "PRESETS",
    "FakeCAM",
    "GradCamAdapter",
    "OptiCAM",
    "OptiCAMConfig",
    "OptiCAMResult",
    "SaliencyMethod",
    "SaliencyResult",
    "TargetsLike",
    "check_images",
    "create_method",
    "frozen",
    "method_names",
    "parse_method_list",
    "preset_config",
    "resolve_targets",
]
