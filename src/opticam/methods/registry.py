"""The registry of saliency methods by name, each with the options it declares.

:data:`METHODS` maps a name to a :class:`MethodEntry`: how to build the method for a
:class:`~opticam.models.LoadedModel`, and the :class:`~opticam.options.Option` s it takes (kind, default,
range or choices, the paper's value, help, speed-only or not, the command-line flag that fills it).
Everything that names methods reads it: ``--methods`` on the command line, the web page, ``compare``,
``evaluate``, ``opticam methods`` and the reports.

A method is written as a **spec**: a name, optionally with options in parentheses,
``opticam(objective=diff,normalization=max)``, ``gradcam(layer=blocks.4)`` or
``finercam(comparison_categories=1;2)`` (a list is written ``a;b;c``). :func:`parse_method_specs` checks a
comma-separated list of specs against each method's declared options; :class:`MethodSpec` gives the
canonical spelling (:attr:`MethodSpec.key`: the name, plus only the options that differ from the method's
defaults, in declaration order, speed-only ones left out), which is what a stored row calls its method.

Registration sits next to each method, like timm's ``register_model``: a
:class:`~opticam.methods.base.SaliencyMethod` subclass declares ``options`` and is decorated with
:func:`register_method`; anything else (a preset) calls :func:`register` with a :class:`MethodEntry`.
The package :mod:`opticam.methods` imports the method modules in the order the registry lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import ConfigValueError, UsageError
from ..models.loading import LoadedModel
from ..options import (
    Option,
    canonical,
    describe,
    format_value,
    option_named,
    parse_options,
    parse_spec,
    plain,
    spec_key,
    split_specs,
    with_defaults,
)
from .base import SaliencyMethod

MethodFactory = Callable[..., SaliencyMethod]
"""``build(loaded, layer, **options) -> SaliencyMethod``, with every declared option given (defaults filled)."""

LAYER = Option(
    "layer",
    "layer",
    None,
    "the layer to explain, a dotted name (default: --layer, else the model's usual layer)",
    optional=True,
)
"""The option every method that explains a layer takes (:attr:`MethodEntry.needs_layer`)."""


@dataclass(frozen=True)
class MethodEntry:
    """A method in the registry: how to build it and the options it declares.

    Attributes:
        name: the registry name.
        build: ``build(loaded, layer, **options) -> SaliencyMethod`` (:data:`MethodFactory`).
        options: the options it takes, besides ``layer`` (declared once; see :mod:`opticam.options`).
        summary: one line for help texts and ``opticam methods``.
        needs_layer: the method explains one layer, so it takes the ``layer`` option (the class attribute
            :attr:`~opticam.methods.base.SaliencyMethod.needs_layer`); ``False`` for Fake-CAM and perturbation
            methods.
        requires: called before any work to check that the method can run here (an optional extra is
            installed); raises a ``UsageError`` that says how to get it.
        recorded: ``recorded(options) -> dict``: what a run records of the method beyond its options' values
            (amortized Opti-CAM: the digest of its head file, so that an edited file never returns old rows).
    """

    name: str
    build: MethodFactory
    options: tuple[Option, ...] = ()
    summary: str = ""
    needs_layer: bool = True
    requires: Callable[[], Any] | None = field(default=None, compare=False)
    recorded: Callable[[Mapping[str, Any]], dict[str, Any]] | None = field(default=None, compare=False)

    def check_available(self) -> None:
        """Raise a ``UsageError`` now, before a long run or a worker pool starts, if the method cannot run."""
        if self.requires is not None:
            self.requires()

    def all_options(self) -> tuple[Option, ...]:
        """The declared options, ``layer`` first when the method explains a layer."""
        return ((LAYER,) if self.needs_layer else ()) + self.options

    def option(self, name: str) -> Option:
        """The option ``name``; a ``UsageError`` listing the method's options when it has none of that name."""
        return option_named(self.all_options(), name, f"method {self.name}")

    def settings(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Every option that changes the maps, with its value under ``options`` (defaults filled in): what a
        run records for this method."""
        values = {o.name: plain(options.get(o.name, o.default)) for o in self.all_options() if not o.speed_only}
        return {**values, **(self.recorded(options) if self.recorded is not None else {})}

    def describe(self) -> list[dict[str, str]]:
        """The options as table rows (``opticam methods``, docs/evaluation.md)."""
        return describe(self.all_options())


METHODS: dict[str, MethodEntry] = {}
"""Method name -> :class:`MethodEntry`, in registration order; add to it with :func:`register`."""


def register(entry: MethodEntry) -> MethodEntry:
    """Add ``entry`` to :data:`METHODS` (a name registered twice is a bug: ``ValueError``)."""
    if entry.name in METHODS:
        raise ValueError(f"method {entry.name!r} is registered twice")
    METHODS[entry.name] = entry
    return entry


M = TypeVar("M", bound=type[SaliencyMethod])


def register_method(
    cls: M | None = None, *, summary: str | None = None, requires: Callable[[], Any] | None = None
) -> Any:
    """Register a :class:`~opticam.methods.base.SaliencyMethod` subclass under its ``name``, with the options it
    declares (its ``options`` class attribute) and its ``needs_layer``: as a decorator, bare or with
    arguments. The registry builds it as ``cls(loaded.model, layer, loaded.reshape_transform, **options)``."""

    def decorate(method_cls: M) -> M:
        def build(loaded: LoadedModel, layer: Any, **options: Any) -> SaliencyMethod:
            return method_cls(loaded.model, layer, loaded.reshape_transform, **options)

        register(
            MethodEntry(
                method_cls.name,
                build,
                tuple(method_cls.options),
                summary if summary is not None else _first_line(method_cls.__doc__),
                needs_layer=method_cls.needs_layer,
                requires=requires,
            )
        )
        return method_cls

    return decorate(cls) if cls is not None else decorate


def _first_line(doc: str | None) -> str:
    """A docstring's first sentence, joined over its wrapped lines (its first paragraph when no sentence ends)."""
    paragraph = " ".join((doc or "").strip().split("\n\n", 1)[0].split())
    head, dot, _rest = paragraph.partition(". ")
    return head + "." if dot else paragraph


def method_names() -> list[str]:
    """The names :func:`create_method` accepts, in registry order."""
    return list(METHODS)


def method_entry(name: str) -> MethodEntry:
    """The registry entry of ``name``; a ``UsageError`` naming the known methods otherwise."""
    if name not in METHODS:
        known = ", ".join(method_names())
        raise UsageError(f"unknown method {name!r}; choose methods among the known methods: {known}")
    return METHODS[name]


@dataclass(frozen=True)
class MethodSpec:
    """A method with options, as ``--methods`` writes it: ``opticam(objective=diff)``.

    ``options`` holds only checked values that differ from the method's defaults (speed-only ones
    included), in declaration order, so two spellings of the same settings have the same :attr:`key`.
    Make one with :func:`make_spec` or :func:`parse_method_spec`.
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def entry(self) -> MethodEntry:
        return method_entry(self.name)

    @property
    def key(self) -> str:
        """The canonical spelling, and the name a stored row gives the method: speed-only options left out."""
        return spec_key(self.name, self.entry.all_options(), self.options)

    def settings(self) -> dict[str, Any]:
        """Everything that makes this method's maps what they are (what a run records for the method)."""
        return {"method": self.name, **self.entry.settings(self.options)}

    def speed_options(self) -> dict[str, Any]:
        """The options given that only change the speed (a batch size): they travel beside the key."""
        speed = {o.name for o in self.entry.all_options() if o.speed_only}
        return {k: v for k, v in self.options.items() if k in speed}

    def with_options(self, **options: Any) -> MethodSpec:
        """The spec with more options (checked, defaults dropped); the spec's own options win."""
        return make_spec(self.name, {**options, **self.options})


def make_spec(name: str, options: Mapping[str, Any] | None = None) -> MethodSpec:
    """A checked :class:`MethodSpec`: an unknown option is a ``UsageError``, a bad value a
    :class:`~opticam.errors.ConfigValueError` naming it; values equal to their default are dropped."""
    entry = method_entry(name)
    return MethodSpec(name, canonical(entry.all_options(), dict(options or {}), f"method {name}"))


def parse_method_spec(text: str) -> MethodSpec:
    """One spec, ``name`` or ``name(option=value,...)``, checked against the method's declared options."""
    raw = parse_spec(text, "method")
    entry = method_entry(raw.name)
    return make_spec(raw.name, parse_options(entry.all_options(), raw.options, f"method {raw.name}"))


def parse_method_specs(text: str | Sequence[str], allowed: Sequence[str] | None = None) -> list[MethodSpec]:
    """A comma-separated list of specs (or a list of them) -> checked specs, duplicates dropped, order kept.

    Raises:
        UsageError: an empty list, a name not in ``allowed`` (default: the registry), or a bad option.
    """
    items = split_specs(text) if isinstance(text, str) else [t for item in text for t in split_specs(item)]
    if not items:
        raise UsageError("the method list is empty; name at least one method")
    known = method_names() if allowed is None else list(allowed)
    specs = []
    for item in items:
        name = item.split("(", 1)[0].strip()
        if name not in known:
            raise UsageError(f"unknown method {name!r}; choose methods among the known methods: {', '.join(known)}")
        specs.append(parse_method_spec(item))
    return list({spec.key: spec for spec in specs}.values())


def parse_method_list(text: str | Sequence[str], allowed: Sequence[str] | None = None) -> list[str]:
    """``"opticam,gradcam(layer=blocks.4)"`` (or a list) -> the specs' keys, duplicates dropped, order kept."""
    return [spec.key for spec in parse_method_specs(text, allowed)]


def specs_with_flags(specs: Sequence[MethodSpec], flags: Mapping[str, Any]) -> list[MethodSpec]:
    """The specs with what command-line flags set: each declared option whose ``flag`` (an argparse dest) is
    in ``flags`` with a value that is not ``None`` (``--cam-batch-size`` fills Score-CAM's ``batch_size``,
    ``--iterations`` plain Opti-CAM's); a spec's own options win.

    Every flag value is checked by its option's declaration first, whether or not a listed method takes it
    (``--cam-batch-size 0`` is refused without Score-CAM too): a ``UsageError`` naming the flag.
    """
    check_flags(flags)
    out = []
    for spec in specs:
        options = {o.name: flags[o.flag] for o in spec.entry.all_options() if o.flag and flags.get(o.flag) is not None}
        out.append(spec.with_options(**options) if options else spec)
    return out


def check_flags(flags: Mapping[str, Any]) -> None:
    """Check each value in ``flags`` that fills a declared option of a registered method (``UsageError``
    naming the flag and what it accepts)."""
    for entry in METHODS.values():
        for option in entry.options:
            value = flags.get(option.flag) if option.flag else None
            if value is None:
                continue
            try:
                option.check(value, f"method {entry.name}")
            except ConfigValueError as exc:
                raise UsageError(f"--{option.flag.replace('_', '-')} {format_value(value)}: {exc}") from None


def create_method(name: str | MethodSpec, loaded: LoadedModel, *, layer: Any = None, **options: Any) -> SaliencyMethod:
    """Build a method for ``loaded``'s model, on ``layer`` or the model's usual target layer.

    ``name`` is a registry name, a spec (``"opticam(iterations=50)"``) or a :class:`MethodSpec`; keyword
    ``options`` are added (the spec's own win). A ``layer`` option in the spec wins over ``layer``. A layer
    given either way is checked against the model before the method is built (the same check as ``--layer``:
    :func:`opticam.models.layers.check_feature_layer`).

    Raises:
        UsageError (a ``ValueError``): an unknown name (the message lists the known ones), options the method
            does not take, a bad value, or a layer without feature maps.
    """
    spec = name if isinstance(name, MethodSpec) else parse_method_spec(name)
    if options:
        spec = spec.with_options(**options)
    entry = spec.entry
    chosen = with_defaults(entry.all_options(), spec.options, f"method {spec.name}")
    spec_layer = chosen.pop("layer", None)
    target = spec_layer or layer or loaded.target_layer
    check_layer(spec, loaded, target, f"{spec.name}(layer=...)" if spec_layer else "--layer")
    try:
        return entry.build(loaded, target, **chosen)
    except TypeError as exc:
        raise UsageError(f"bad options for method {spec.name!r}: {exc}") from exc


def check_layer(spec: MethodSpec, loaded: LoadedModel, target: Any, flag: str) -> None:
    """Refuse a named ``target`` layer of ``loaded`` that gives no feature maps, for a method that works on one
    (``UsageError`` naming ``flag``, the way ``--layer`` is refused); the model's own layer is not re-checked."""
    if spec.entry.needs_layer and isinstance(target, str) and target != loaded.target_layer:
        from ..models.layers import check_feature_layer

        check_feature_layer(loaded, target, flag)


def check_spec_layers(specs: Sequence[MethodSpec], loaded: LoadedModel) -> None:
    """Check every ``layer=`` option in ``specs`` against ``loaded`` before any work starts (the web API
    answers 400 at once instead of failing inside the job)."""
    for spec in specs:
        layer = spec.options.get("layer")
        if layer is not None:
            check_layer(spec, loaded, layer, f"{spec.name}(layer=...)")


def describe_methods() -> list[dict[str, Any]]:
    """Every method with its summary and its options as table rows (``opticam methods``)."""
    return [{"name": e.name, "summary": e.summary, "options": e.describe()} for e in METHODS.values()]


__all__ = [
    "LAYER",
    "METHODS",
    "MethodEntry",
    "MethodSpec",
    "check_spec_layers",
    "create_method",
    "describe_methods",
    "format_value",
    "make_spec",
    "method_entry",
    "method_names",
    "parse_method_list",
    "parse_method_spec",
    "parse_method_specs",
    "register",
    "register_method",
    "specs_with_flags",
]
