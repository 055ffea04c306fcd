"""The registry of saliency methods by name: what ``--methods`` accepts on the command line and the page.

:data:`METHODS` is a plain dict ``name -> factory``; a factory takes ``(loaded, layer, **options)`` and
returns a :class:`~opticam.methods.base.SaliencyMethod`. Anyone can add an entry, e.g.
``METHODS["opticam-50"] = lambda loaded, layer, **o: OptiCAM(loaded.model, layer, iterations=50, **o)``.

:func:`create_method` builds one for a :class:`~opticam.models.LoadedModel`, on the model's usual target
layer unless another is given; :func:`parse_method_list` is the one check of a user's method list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import UsageError
from ..models.loading import LoadedModel
from .base import SaliencyMethod
from .extremal import ExtremalPerturbation
from .fakecam import FakeCAM
from .gradcam import GRAD_CAM_METHODS
from .opticam import OptiCAM

MethodFactory = Callable[..., SaliencyMethod]


def _opticam(loaded: LoadedModel, layer: Any, **options: Any) -> SaliencyMethod:
    return OptiCAM(loaded.model, layer, loaded.reshape_transform, **options)


def _opticam_preset(preset: str) -> MethodFactory:
    def factory(loaded: LoadedModel, layer: Any, **options: Any) -> SaliencyMethod:
        return OptiCAM.from_preset(preset, loaded.model, layer, loaded.reshape_transform, **options)

    factory.__doc__ = f"Opti-CAM with the {preset!r} preset."
    return factory


def _fakecam(loaded: LoadedModel, layer: Any, **options: Any) -> SaliencyMethod:
    if options:
        raise ValueError(f"fakecam takes no options, got {sorted(options)}")
    return FakeCAM(loaded.model)


def _extremal(loaded: LoadedModel, layer: Any, **options: Any) -> SaliencyMethod:
    return ExtremalPerturbation(loaded.model, **options)


def _grad_cam_factory(cls: type) -> MethodFactory:
    def factory(loaded: LoadedModel, layer: Any, **options: Any) -> SaliencyMethod:
        return cls(loaded.model, layer, loaded.reshape_transform, **options)

    factory.__doc__ = cls.__doc__
    return factory


METHODS: dict[str, MethodFactory] = {
    "opticam": _opticam,
    "opticam-fast": _opticam_preset("fast"),
    "opticam-tenth": _opticam_preset("tenth"),
    "fakecam": _fakecam,
    **{name: _grad_cam_factory(cls) for name, cls in GRAD_CAM_METHODS.items()},
    "extremal": _extremal,
}
"""Method name -> ``factory(loaded, layer, **options)``; extend it freely."""


def method_names() -> list[str]:
    """The names :func:`create_method` accepts, in registry order."""
    return list(METHODS)


def parse_method_list(text: str | list[str], allowed: list[str] | None = None) -> list[str]:
    """``"opticam,gradcam"`` (or a list) -> ``["opticam", "gradcam"]``, duplicates dropped, order kept.

    Raises:
        UsageError: an empty list, or a name not in ``allowed`` (default: the registry), naming the known ones.
    """
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if not names:
        raise UsageError("the method list is empty; name at least one method")
    known = method_names() if allowed is None else list(allowed)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown method {unknown[0]!r}; choose methods among the known methods: {', '.join(known)}")
    return list(dict.fromkeys(names))


def create_method(name: str, loaded: LoadedModel, *, layer: Any = None, **options: Any) -> SaliencyMethod:
    """Build the method ``name`` for ``loaded``'s model, on ``layer`` or the model's usual target layer.

    Raises:
        ValueError: for an unknown name (the message lists the known ones) or options the method rejects.
    """
    parse_method_list([name])
    try:
        return METHODS[name](loaded, layer if layer is not None else loaded.target_layer, **options)
    except TypeError as exc:
        raise ValueError(f"bad options for method {name!r}: {exc}") from exc
