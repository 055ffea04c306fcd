"""The registry of saliency methods by name: what ``opticam evaluate --methods`` accepts.

:data:`METHODS` is a plain dict ``name -> factory``; a factory takes ``(loaded, layer, **options)`` and
returns a :class:`~opticam.base.SaliencyMethod`. Anyone can add an entry (say an ``opticam-fast``
preset) with ``METHODS["opticam-fast"] = lambda loaded, layer, **o: OptiCAM(..., iterations=50, **o)``.

:func:`create_method` builds one for a :class:`~opticam.models.LoadedModel`, on the model's usual
target layer unless another is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import SaliencyMethod
from .baselines import GRAD_CAM_METHODS, FakeCAM
from .core import OptiCAM
from .models import LoadedModel

MethodFactory = Callable[..., SaliencyMethod]


def _opticam(loaded: LoadedModel, layer: Any, **options: Any) -> SaliencyMethod:
    return OptiCAM(loaded.model, layer, loaded.reshape_transform, **options)


def _fakecam(loaded: LoadedModel, layer: Any, **options: Any) -> SaliencyMethod:
    if options:
        raise ValueError(f"fakecam takes no options, got {sorted(options)}")
    return FakeCAM(loaded.model)


def _grad_cam_factory(cls: type) -> MethodFactory:
    def factory(loaded: LoadedModel, layer: Any, **options: Any) -> SaliencyMethod:
        return cls(loaded.model, layer, loaded.reshape_transform, **options)

    factory.__doc__ = cls.__doc__
    return factory


METHODS: dict[str, MethodFactory] = {
    "opticam": _opticam,
    "opticam-fast": lambda loaded, layer, **o: OptiCAM.from_preset(
        "fast", loaded.model, layer, loaded.reshape_transform, **o
    ),
    "fakecam": _fakecam,
    **{name: _grad_cam_factory(cls) for name, cls in GRAD_CAM_METHODS.items()},
}
"""Method name -> ``factory(loaded, layer, **options)``; extend it freely."""


# Opti-CAM options beyond the command line's, at the paper's values (appendix A). A run's configuration
# records any that differ, so that a changed default in the code can never mix into an earlier run.
OPTICAM_PAPER_DEFAULTS: dict[str, Any] = {
    "tol": 1e-10,
    "early_stop": True,
    "relu": True,
    "init": "uniform",
    "schedule": "constant",
    "precision": "float32",
}
OPTICAM_RESULT_OPTIONS = ("iterations", "lr", "objective", "normalization")


def opticam_options(method: OptiCAM) -> dict[str, Any]:
    """What changes an Opti-CAM map: the command-line options, plus any other option off its paper value."""
    options = {k: getattr(method, k) for k in OPTICAM_RESULT_OPTIONS}
    for key, paper in OPTICAM_PAPER_DEFAULTS.items():
        value = getattr(method, key, paper)
        if value != paper:
            options[key] = value
    if getattr(method, "init", "uniform") != "uniform":
        options["init_mix"] = getattr(method, "init_mix", None)
    return options


def create_method(name: str, loaded: LoadedModel, *, layer: Any = None, **options: Any) -> SaliencyMethod:
    """Build the method ``name`` for ``loaded``'s model, on ``layer`` or the model's usual target layer.

    Raises:
        ValueError: for an unknown name (the message lists the known ones) or options the method rejects.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}")
    try:
        return METHODS[name](loaded, layer if layer is not None else loaded.target_layer, **options)
    except TypeError as exc:
        raise ValueError(f"bad options for method {name!r}: {exc}") from exc
