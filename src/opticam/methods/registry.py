"""The registry of saliency methods by name, with the options each one takes.

:data:`METHODS` maps a name to a :class:`MethodEntry`: how to build the method for a
:class:`~opticam.models.LoadedModel`, and the :class:`MethodOption` s it accepts (their defaults, and
whether they change the maps or only the speed). Everything that names methods reads it: ``--methods`` on
the command line, the web page, ``compare``, ``evaluate`` and the reports.

A method is written as a **spec**: a name, optionally with options in parentheses,
``opticam(objective=diff,normalization=max)`` or ``gradcam(layer=blocks.4)``. :func:`parse_method_specs`
checks a comma-separated list of specs against each method's own options; :class:`MethodSpec` gives the
canonical spelling (:attr:`MethodSpec.key`: the name, plus only the options that differ from the method's
defaults, in the method's option order), which is what a stored row calls its method, so an ablation over
options is one ``evaluate`` command whose methods each get their own rows.

Anyone can add a method: ``METHODS["mine"] = MethodEntry("mine", build, options_from_signature(Mine))``.
A plain factory ``build(loaded, layer, **options)`` is accepted too (its options are then checked by the
factory alone).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..models.loading import LoadedModel
from .base import SaliencyMethod
from .extremal import ExtremalPerturbation, require_torchray
from .fakecam import FakeCAM
from .gradcam import GRAD_CAM_METHODS
from .opticam import OptiCAM
from .opticam_config import OptiCAMConfig
from .presets import PRESETS

MethodFactory = Callable[..., SaliencyMethod]
"""``factory(loaded, layer, **options) -> SaliencyMethod``."""

SPEED_ONLY = ("batch_size",)
"""Options that change how fast a method runs, never its maps (left out of what a run records)."""


@dataclass(frozen=True)
class MethodOption:
    """One option a method takes, as written in a spec (``opticam(lr=0.3)``) or passed in Python.

    Attributes:
        name: the keyword.
        default: the method's value when the option is not given (its type is the option's type; ``None``
            means "the method decides", and a written value is then read as a number when it is one).
        help: what it does.
        choices: the allowed values, when there is a fixed set.
        changes_maps: ``False`` for options that only change the speed (a run does not record them).
    """

    name: str
    default: Any
    help: str = ""
    choices: tuple[Any, ...] = ()
    changes_maps: bool = True

    def parse(self, text: str) -> Any:
        """The value of ``text`` as written in a spec, in the option's type; ``UsageError`` when it is not one."""
        text = text.strip()
        kind = type(self.default)
        try:
            if isinstance(self.default, bool):
                lowered = text.lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(text)
                value: Any = lowered in ("true", "1", "yes")
            elif isinstance(self.default, int):
                value = int(text)
            elif isinstance(self.default, float):
                value = float(text)
            elif isinstance(self.default, tuple | list):
                value = tuple(float(v) for v in text.split(";") if v.strip())
            elif self.default is None and self.name != "layer":
                value = _number_or_text(text)
            else:
                value = text
        except ValueError:
            want = {bool: "true or false", int: "a whole number", float: "a number"}.get(kind, "numbers joined by ;")
            raise UsageError(f"option {self.name}={text!r}: expected {want}") from None
        return self.check(value)

    def check(self, value: Any) -> Any:
        """``value`` if it is one of the choices (when there are choices); else a ``UsageError``."""
        if self.choices and value not in self.choices:
            raise UsageError(f"option {self.name}={value!r}: choose one of {', '.join(map(str, self.choices))}")
        return value


def _number_or_text(text: str) -> Any:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, int | float) and not isinstance(value, bool) else text


LAYER = MethodOption("layer", None, "the layer to explain (default: --layer, else the model's usual layer)")


@dataclass(frozen=True)
class MethodEntry:
    """A method in the registry: how to build it and the options it takes.

    Attributes:
        name: the registry name.
        build: ``build(loaded, layer, **options) -> SaliencyMethod``.
        options: the options it takes (``None``: not declared, the factory checks them itself).
        summary: one line for help texts.
        takes_opticam_flags: the command line's Opti-CAM flags (``--iterations``, ``--objective``, ...) and
            the web page's step count set this method's options (plain Opti-CAM; presets keep theirs).
        takes_layer: the method explains a layer (``layer=`` option); ``False`` for Fake-CAM and
            perturbation methods, which accept and ignore one.
        flag_options: command-line flags (argparse dest) that set one of its options when given
            (``--cam-batch-size`` sets Score-CAM's ``batch_size``); a spec's own option wins.
        requires: called before any work to check that the method can run here (an optional extra is
            installed); raises a ``UsageError`` that says how to get it.
    """

    name: str
    build: MethodFactory
    options: tuple[MethodOption, ...] | None = ()
    summary: str = ""
    takes_opticam_flags: bool = False
    takes_layer: bool = True
    flag_options: Mapping[str, str] = field(default_factory=dict)
    requires: Callable[[], Any] | None = None

    def check_available(self) -> None:
        """Raise a ``UsageError`` now, before a long run or a worker pool starts, if the method cannot run."""
        if self.requires is not None:
            self.requires()

    def all_options(self) -> tuple[MethodOption, ...]:
        """The declared options, ``layer`` first when the method explains a layer."""
        return ((LAYER,) if self.takes_layer else ()) + tuple(self.options or ())

    def option(self, name: str) -> MethodOption:
        for opt in self.all_options():
            if opt.name == name:
                return opt
        known = [o.name for o in self.all_options()]
        if not known:
            raise UsageError(f"{self.name} takes no options, got {name!r}")
        raise UsageError(f"bad options for method {self.name!r}: unknown option {name!r}; it takes {', '.join(known)}")

    def check(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` checked against the declared ones (``UsageError`` naming a bad one), unchanged."""
        if self.options is None:
            return dict(options)
        for name, value in options.items():
            self.option(name).check(value)
        return dict(options)

    def settings(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Every option that changes the maps, with its value under ``options`` (defaults filled in): what a
        run records for this method."""
        if self.options is None:
            return {k: v for k, v in options.items() if k not in SPEED_ONLY}
        return {o.name: _plain(options.get(o.name, o.default)) for o in self.all_options() if o.changes_maps}


def _plain(value: Any) -> Any:
    """JSON-friendly: tuples become lists."""
    return list(value) if isinstance(value, tuple) else value


def options_from_config(config: OptiCAMConfig) -> tuple[MethodOption, ...]:
    """Opti-CAM's options: one per :class:`OptiCAMConfig` field, with ``config``'s values as defaults."""
    return tuple(
        MethodOption(
            f.name,
            getattr(config, f.name),
            f.metadata["help"],
            tuple(f.metadata["choices"]),
            changes_maps=f.metadata["record"] != "never",
        )
        for f in dataclasses.fields(OptiCAMConfig)
    )


def options_from_signature(cls: type, skip: Sequence[str] = ("quiet",)) -> tuple[MethodOption, ...]:
    """A method class's options: the keyword-only parameters of its ``__init__`` with their defaults."""
    params = inspect.signature(cls.__init__).parameters.values()
    return tuple(
        MethodOption(p.name, p.default, changes_maps=p.name not in SPEED_ONLY)
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in skip and p.default is not inspect.Parameter.empty
    )


def _opticam(preset: str) -> MethodFactory:
    def build(loaded: LoadedModel, layer: Any, **options: Any) -> SaliencyMethod:
        return OptiCAM.from_preset(preset, loaded.model, layer, loaded.reshape_transform, **options)

    build.__doc__ = f"Opti-CAM with the {preset!r} settings."
    return build


def _fakecam(loaded: LoadedModel, layer: Any, **options: Any) -> SaliencyMethod:
    return FakeCAM(loaded.model)


def _extremal(loaded: LoadedModel, layer: Any, **options: Any) -> SaliencyMethod:
    return ExtremalPerturbation(loaded.model, **options)


def _grad_cam(cls: type) -> MethodFactory:
    def build(loaded: LoadedModel, layer: Any, **options: Any) -> SaliencyMethod:
        return cls(loaded.model, layer, loaded.reshape_transform, **options)

    build.__doc__ = cls.__doc__
    return build


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc else ""


METHODS: dict[str, MethodEntry | MethodFactory] = {
    "opticam": MethodEntry(
        "opticam",
        _opticam("paper"),
        options_from_config(PRESETS["paper"]),
        "Opti-CAM, the paper's algorithm (Adam, lr 0.1, 100 steps)",
        takes_opticam_flags=True,
    ),
    "opticam-fast": MethodEntry(
        "opticam-fast",
        _opticam("fast"),
        options_from_config(PRESETS["fast"]),
        "Opti-CAM, 'fast' preset: 32 steps, cosine rate from 1.0, log-probability objective",
    ),
    "opticam-tenth": MethodEntry(
        "opticam-tenth",
        _opticam("tenth"),
        options_from_config(PRESETS["tenth"]),
        "Opti-CAM, 'tenth' preset: 9 steps (a quick look; less class keeping)",
    ),
    "fakecam": MethodEntry("fakecam", _fakecam, (), "Fake-CAM, the paper's sanity row", takes_layer=False),
    **{
        name: MethodEntry(
            name, _grad_cam(cls), options_from_signature(cls), _first_line(cls.__doc__), flag_options=cls.flag_options
        )
        for name, cls in GRAD_CAM_METHODS.items()
    },
    "extremal": MethodEntry(
        "extremal",
        _extremal,
        options_from_signature(ExtremalPerturbation),
        _first_line(ExtremalPerturbation.__doc__),
        takes_layer=False,
        flag_options={"extremal_iterations": "iterations"},
        requires=require_torchray,
    ),
}
"""Method name -> :class:`MethodEntry` (or a plain factory); extend it freely."""


def method_names() -> list[str]:
    """The names :func:`create_method` accepts, in registry order."""
    return list(METHODS)


def method_entry(name: str) -> MethodEntry:
    """The registry entry of ``name`` (a plain factory is wrapped in an entry with undeclared options)."""
    if name not in METHODS:
        known = ", ".join(method_names())
        raise UsageError(f"unknown method {name!r}; choose methods among the known methods: {known}")
    entry = METHODS[name]
    if isinstance(entry, MethodEntry):
        return entry
    return MethodEntry(name, entry, None, _first_line(entry.__doc__))


@dataclass(frozen=True)
class MethodSpec:
    """A method with options, as ``--methods`` writes it: ``opticam(objective=diff)``.

    ``options`` holds only values that differ from the method's defaults (speed-only ones included), so two
    spellings of the same settings have the same :attr:`key`.
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def entry(self) -> MethodEntry:
        return method_entry(self.name)

    @property
    def key(self) -> str:
        """The canonical spelling, and the name a stored row gives the method: speed-only options left out."""
        shown = [(k, v) for k, v in self.options.items() if k not in SPEED_ONLY]
        if not shown:
            return self.name
        return f"{self.name}({','.join(f'{k}={_format(v)}' for k, v in shown)})"

    def settings(self) -> dict[str, Any]:
        """Everything that makes this method's maps what they are (what a run records for the method)."""
        return {"method": self.name, **self.entry.settings(self.options)}

    def with_options(self, **options: Any) -> MethodSpec:
        """The spec with more options (checked, defaults dropped); the spec's own options win."""
        return make_spec(self.name, {**options, **self.options})


def _format(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ";".join(_format(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def make_spec(name: str, options: Mapping[str, Any] | None = None) -> MethodSpec:
    """A checked :class:`MethodSpec`: unknown options are a ``UsageError``; default values are dropped."""
    entry = method_entry(name)
    options = entry.check(dict(options or {}))
    if entry.options is not None:
        order = [o.name for o in entry.all_options()]
        defaults = {o.name: o.default for o in entry.all_options()}
        options = {k: options[k] for k in order if k in options and not _same(options[k], defaults[k])}
    return MethodSpec(name, options)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return [float(v) for v in a] == [float(v) for v in b]
    return type(a) is type(b) and a == b or (isinstance(a, int | float) and isinstance(b, int | float) and a == b)


def split_specs(text: str) -> list[str]:
    """``"opticam(objective=diff,normalization=max),gradcam"`` -> the specs, split at top-level commas."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise UsageError(f"unbalanced ')' in the method list {text!r}")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise UsageError(f"unbalanced '(' in the method list {text!r}")
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def parse_method_spec(text: str) -> MethodSpec:
    """One spec, ``name`` or ``name(option=value,...)``, checked against the method's options."""
    text = text.strip()
    if "(" not in text:
        return make_spec(text)
    if not text.endswith(")"):
        raise UsageError(f"method spec {text!r}: options go in parentheses at the end, e.g. opticam(lr=0.3)")
    name, inner = text[: text.index("(")].strip(), text[text.index("(") + 1 : -1]
    entry = method_entry(name)
    options: dict[str, Any] = {}
    for item in (i.strip() for i in inner.split(",")):
        if not item:
            continue
        if "=" not in item:
            raise UsageError(f"method spec {text!r}: write each option as name=value, got {item!r}")
        key, value = (s.strip() for s in item.split("=", 1))
        if key in options:
            raise UsageError(f"method spec {text!r}: option {key!r} given twice")
        options[key] = entry.option(key).parse(value) if entry.options is not None else _number_or_text(value)
    return make_spec(name, options)


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
    """``"opticam,gradcam(layer=blocks.4)"`` (or a list) -> the specs' keys, duplicates dropped, order kept.

    Raises:
        UsageError: an empty list, a name not in ``allowed`` (default: the registry), naming the known ones.
    """
    return [spec.key for spec in parse_method_specs(text, allowed)]


def specs_with_flags(
    specs: Sequence[MethodSpec], flags: Mapping[str, Any], opticam_options: Mapping[str, Any] | None = None
) -> list[MethodSpec]:
    """The specs with what command-line flags set: each entry's ``flag_options`` whose flag is in ``flags``
    (value not ``None``), and ``opticam_options`` (the Opti-CAM flags) for entries that take them."""
    out = []
    for spec in specs:
        entry = spec.entry
        options = {opt: flags[dest] for dest, opt in entry.flag_options.items() if flags.get(dest) is not None}
        if entry.takes_opticam_flags and opticam_options:
            options.update(opticam_options)
        out.append(spec.with_options(**options) if options else spec)
    return out


def create_method(name: str | MethodSpec, loaded: LoadedModel, *, layer: Any = None, **options: Any) -> SaliencyMethod:
    """Build a method for ``loaded``'s model, on ``layer`` or the model's usual target layer.

    ``name`` is a registry name, a spec (``"opticam(iterations=50)"``) or a :class:`MethodSpec`; keyword
    ``options`` are added (the spec's own win). A ``layer`` option in the spec wins over ``layer``.

    Raises:
        UsageError (a ``ValueError``): an unknown name (the message lists the known ones) or options the
            method does not take.
    """
    spec = name if isinstance(name, MethodSpec) else parse_method_spec(name)
    if options:
        spec = spec.with_options(**options)
    entry = spec.entry
    chosen = dict(spec.options)
    spec_layer = chosen.pop("layer", None)
    target = spec_layer or layer or loaded.target_layer
    try:
        return entry.build(loaded, target, **chosen)
    except TypeError as exc:
        raise UsageError(f"bad options for method {spec.name!r}: {exc}") from exc
