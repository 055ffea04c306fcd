"""Model families: one declaration per way of getting a classifier, in one registry.

A :class:`ModelFamily` holds everything opticam knows about one family of names: which names it takes (a
prefix such as ``torchvision:`` or ``hf:``, or a test), its specs (the offline weights, default layers and
preprocessing of known names), how the bare classifier is built, its preprocessing, the default layer of
a model it built, and how a checkpoint is fitted to it. Each family is declared once, next to its loader,
with :func:`register_family`:

* ``timm`` (every other name; the offline EfficientNet-Lite default) and ``torchvision:``
  (:mod:`opticam.models.libraries`);
* ``hf:`` (:mod:`opticam.models.huggingface`);
* a model of your own, ``FILE.py:factory`` / ``package.module:factory`` (:mod:`opticam.models.factory`).

:func:`family_for` (a name) and :func:`family_of_model` (a built classifier) look a family up; nothing
else branches on names or model types. The built-in families' modules are imported on the first lookup,
so the registry is complete whichever module is imported first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

ModelSpec = Any
"""A :class:`opticam.models.ModelSpec` (not imported: :mod:`.specs` looks its names up here)."""

BUILTIN_FAMILY_MODULES = ("opticam.models.libraries", "opticam.models.huggingface", "opticam.models.factory")


@dataclass(frozen=True)
class ModelFamily:
    """One family of model names and what opticam knows about it.

    Attributes:
        name: ``timm``, ``torchvision``, ``huggingface``, ``factory``: the ``library`` of its specs.
        prefix: the names it takes start with this (``torchvision:``, ``hf:``); ``None`` with ``matches``
            or as the fallback.
        matches: a test for names without a prefix (``FILE.py:factory``); ``None``: the prefix decides.
        fallback: takes every name no other family takes (timm).
        specs: the known names (:class:`~opticam.models.ModelSpec`): offline weights, default layer,
            preprocessing.
        make_spec: the spec of a name outside ``specs`` (a plain one for any timm / torchvision name).
        create: ``(spec, pretrained) -> nn.Module``, the bare classifier (with its pretrained weights).
        check: ``(spec) -> None``, refuses an unknown architecture without building anything.
        preprocessing: ``(spec, model) -> (Preprocessing, mean, std)`` when the spec does not state it.
        owns_model: whether a built classifier is of this family (for :func:`family_of_model`).
        default_layer: ``(classifier) -> name or None``, the layer explained when the spec names none.
        class_names: ``(classifier) -> names or None``, the family's own class names.
        load: replaces the whole of :func:`opticam.models.load_model` (a model of your own):
            ``(name, checkpoint=, device=) -> LoadedModel``.
        checkpoint_prefixes: key prefixes stripped from a checkpoint whose every key has one
            (a state dict saved from a ``PixelSpaceModel`` or ``DataParallel``).
    """

    name: str
    prefix: str | None = None
    matches: Callable[[str], bool] | None = None
    fallback: bool = False
    specs: tuple[ModelSpec, ...] = ()
    make_spec: Callable[[str], ModelSpec] | None = None
    create: Callable[[ModelSpec, bool], nn.Module] | None = None
    check: Callable[[ModelSpec], None] | None = None
    preprocessing: Callable[[ModelSpec, nn.Module], Any] | None = None
    owns_model: Callable[[nn.Module], bool] | None = None
    default_layer: Callable[[nn.Module], str | None] | None = None
    class_names: Callable[[nn.Module], list[str] | None] | None = None
    load: Callable[..., Any] | None = None
    checkpoint_prefixes: tuple[str, ...] = field(default=("model.", "module."))

    def spec(self, name: str) -> ModelSpec:
        """The declared spec of ``name`` (or an alias), else the family's spec for any such name."""
        for spec in self.specs:
            if name in (spec.name, *spec.aliases):
                return spec
        if self.make_spec is None:
            raise LookupError(f"the {self.name} family has no spec for {name!r}")
        return self.make_spec(name)


_FAMILIES: list[ModelFamily] = []
_builtins_loaded = False


def register_family(family: ModelFamily) -> ModelFamily:
    """Add ``family`` to the registry (replacing one of the same name) and return it."""
    _FAMILIES[:] = [f for f in _FAMILIES if f.name != family.name]
    _FAMILIES.append(family)
    return family


def families() -> tuple[ModelFamily, ...]:
    """Every registered family, the built-in ones first imported."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in BUILTIN_FAMILY_MODULES:
            importlib.import_module(module)
    return tuple(_FAMILIES)


def family_for(name: str) -> ModelFamily:
    """The family that loads ``name``: a declared spec's, a prefix's, a test's, else the fallback (timm)."""
    registered = families()
    for family in registered:
        if any(name in (spec.name, *spec.aliases) for spec in family.specs):
            return family
    for family in registered:
        if family.prefix is not None and name.startswith(family.prefix):
            return family
    for family in registered:
        if family.matches is not None and family.matches(name):
            return family
    return next(family for family in registered if family.fallback)


def family_of_model(model: nn.Module) -> ModelFamily | None:
    """The family a bare classifier (out of its ``PixelSpaceModel``: :func:`opticam.models.inner_model`)
    belongs to, or ``None`` (a model of nobody's family)."""
    return next((f for f in families() if f.owns_model is not None and f.owns_model(model)), None)


def all_specs() -> tuple[ModelSpec, ...]:
    """Every declared spec, family by family (the model table)."""
    return tuple(spec for family in families() for spec in family.specs)


__all__ = ["ModelFamily", "all_specs", "families", "family_for", "family_of_model", "register_family"]
