"""Methods: what turns a model and an image into a saliency map.

* :mod:`.base`: :class:`SaliencyMethod` (model, layer, capture, targets) and :class:`SaliencyResult`.
* :mod:`.opticam`: :class:`OptiCAM`; its settings in :mod:`.opticam_config`, its maths in
  :mod:`.opticam_maths`, named settings in :mod:`.presets`.
* :mod:`.amortized`: :class:`AmortizedOptiCAM`, Opti-CAM started from a trained head's prediction
  (:mod:`.explainer_head`: the head, its descriptors, its file and the shipped heads).
* :mod:`.fakecam`: :class:`FakeCAM`, the paper's sanity row.
* :mod:`.gradcam`: the pytorch-grad-cam baselines (Grad-CAM, Grad-CAM++, Score-CAM, ...).
* :mod:`.registry`: names -> :class:`MethodEntry` (each method registers itself next to its class, with the
  options it declares), specs with options (``opticam(objective=diff)``: :func:`parse_method_specs`,
  :class:`MethodSpec`), :func:`create_method`.

The method modules are imported here in the order the registry lists them (Opti-CAM and its presets,
Fake-CAM, the pytorch-grad-cam baselines, Extremal Perturbation).
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

from .opticam import OptiCAM  # isort: skip  (registration order: Opti-CAM first)
from .amortized import AmortizedOptiCAM  # isort: skip
from .fakecam import FakeCAM  # isort: skip
from .gradcam import GRAD_CAM_METHODS, GradCamAdapter  # isort: skip
from .extremal import ExtremalPerturbation  # isort: skip
from .opticam_config import OptiCAMConfig
from .presets import PRESETS, preset_config
from .registry import (
    METHODS,
    MethodEntry,
    MethodSpec,
    create_method,
    method_entry,
    method_names,
    parse_method_list,
    parse_method_specs,
)

__all__ = [
    "AmortizedOptiCAM",
    "GRAD_CAM_METHODS",
    "METHODS",
    "PRESETS",
    "Diagnostics",
    "Maps",
    "MethodEntry",
    "ExtremalPerturbation",
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
