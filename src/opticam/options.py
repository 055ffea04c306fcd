"""Options declared once, as data: what a method or a metric takes, and everything that follows from it.

Every method (:mod:`opticam.methods`) and every metric (:mod:`opticam.metrics`) declares its options as a
tuple of :class:`Option`: name, kind (int, float, bool, choice, a list of ints or of numbers, text, a
layer), default, range or choices, the paper's value where there is one, whether it only changes the
speed, and one line of help. From that one declaration come:

* parsing of a spec, ``name(k=v,...)``, with lists written ``a;b;c`` (:func:`parse_spec`, :meth:`Option.parse`);
* validation of a value given in Python or parsed from text (:meth:`Option.check`), with a one-line
  :class:`~opticam.errors.ConfigValueError` that names the option and what it accepts;
* the canonical spelling of a spec, which is what a result store calls it (:func:`spec_key`: the name, plus
  only the options off their default, in declaration order; speed-only options left out);
* what a run records (:func:`settings`: every option that changes the numbers, defaults filled in);
* ``opticam methods`` / ``opticam metrics`` and the options tables of docs/evaluation.md (:func:`describe`);
* the command line's aliases (``--cam-batch-size`` fills Score-CAM's ``batch_size``: :attr:`Option.flag`);
* the bad-value matrix of the tests (:meth:`Option.bad_values`).

This module knows no method and no metric: it is the grammar they share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal

from .errors import ConfigValueError, UsageError

Kind = Literal["int", "float", "bool", "choice", "ints", "floats", "text", "layer", "file"]
KINDS: tuple[str, ...] = ("int", "float", "bool", "choice", "ints", "floats", "text", "layer", "file")

_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


class _Unset:
    """The marker of "no paper value" (``None`` is a value some options have)."""

    def __repr__(self) -> str:
        return "unset"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class Option:
    """One option of a method or a metric.

    Attributes:
        name: the keyword (``lr``, ``step``, ``comparison_categories``).
        kind: ``int``, ``float``, ``bool``, ``choice`` (one of ``choices``), ``ints`` / ``floats`` (a list,
            written ``a;b;c``), ``text``, or ``layer`` (a dotted layer name, checked against the model when
            the method is built).
        default: the value when the option is not given (``None`` only with ``optional``).
        help: one line: what it does.
        low, high: the range of a number (or of each number of a list), inclusive; ``None``: unbounded.
        low_open: ``low`` itself is excluded (``lr > 0``).
        high_open: ``high`` itself is excluded (an area share ``< 1``).
        choices: the allowed values of a ``choice``.
        paper: the paper's value, where the paper has one (shown in the docs; ``UNSET`` otherwise).
        speed_only: the option changes how fast the numbers come, never the numbers (a batch size): it is
            left out of a spec's key and of what a run records.
        optional: ``None`` is accepted ("the method decides", e.g. KPCA-CAM's ``gamma``).
        min_items: the fewest values of a list.
        flag: a command-line flag that fills this option (``--cam-batch-size``); ``None``: none.
        search: for a ``file``: folders where a bare file name is also looked for (the shipped heads).
    """

    name: str
    kind: Kind
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] = ()
    paper: Any = UNSET
    speed_only: bool = False
    optional: bool = False
    min_items: int = 1
    flag: str | None = None
    search: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: unknown kind {self.kind!r}; use one of {KINDS}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"option {self.name}: a choice needs its choices")
        if self.default is not None or not self.optional:
            self.check(self.default)  # a declaration whose default it refuses is a bug, found at import

    # -- what it accepts ---------------------------------------------------------------------------
    def accepts(self) -> str:
        """What a value must be, in words: ``a whole number >= 1``, ``one of linear, poly, rbf``."""
        if self.kind == "bool":
            text = "true or false"
        elif self.kind == "choice":
            text = "one of " + ", ".join(map(str, self.choices))
        elif self.kind == "file":
            text = "the path of an existing file" + (" or the name of one it ships" if self.search else "")
        elif self.kind in ("text", "layer"):
            text = "a layer name (dotted, e.g. blocks.5)" if self.kind == "layer" else "a non-empty text"
        else:
            single = "a whole number" if self.kind in ("int", "ints") else "a finite number"
            bounds = self._bounds()
            if self.kind in ("ints", "floats"):
                each = single.replace("a ", "", 1) + "s"
                least = f"at least {self.min_items} " if self.min_items > 1 else ""
                text = f"{least}{each}{' ' + bounds if bounds else ''} joined by ;"
            else:
                text = single + (" " + bounds if bounds else "")
        return text + (" (or none)" if self.optional else "")

    def _bounds(self) -> str:
        low = None if self.low is None else f"{'>' if self.low_open else '>='} {_number(self.low)}"
        high = None if self.high is None else f"{'<' if self.high_open else '<='} {_number(self.high)}"
        if low and high:
            opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {opening}{_number(self.low)}, {_number(self.high)}{closing}"
        return low or high or ""

    # -- text and values ---------------------------------------------------------------------------
    def parse(self, text: str, owner: str = "") -> Any:
        """The value written ``text`` in a spec (``0.3``, ``true``, ``1;2;3``, ``none``), checked.

        Raises:
            ConfigValueError: naming the option (and ``owner``, the method or metric) and what it accepts.
        """
        raw = text.strip()
        try:
            if raw == "":
                raise ValueError("empty")
            if self.optional and raw.lower() == "none":
                return self.check(None, owner)
            if self.kind == "int":
                value: Any = _int(raw)
            elif self.kind == "float":
                value = float(raw)
            elif self.kind == "bool":
                if raw.lower() not in _TRUE + _FALSE:
                    raise ValueError(raw)
                value = raw.lower() in _TRUE
            elif self.kind in ("ints", "floats"):
                parts = raw.split(";")
                if any(not p.strip() for p in parts):
                    raise ValueError(raw)
                value = tuple(_int(p.strip()) if self.kind == "ints" else _number_text(p.strip()) for p in parts)
            else:
                value = raw
        except ValueError:
            raise self.error(text, owner) from None
        return self.check(value, owner)

    def check(self, value: Any, owner: str = "") -> Any:
        """``value`` in the option's type (a list becomes a tuple, an int a float for ``float``), or a
        :class:`ConfigValueError` that names the option and what it accepts."""
        if value is None:
            if self.optional:
                return None
            raise self.error(value, owner)
        kind = self.kind
        if kind == "bool":
            if not isinstance(value, bool):
                raise self.error(value, owner)
            return value
        if kind == "int":
            return self._number(value, owner, whole=True)
        if kind == "float":
            return float(self._number(value, owner, whole=False))
        if kind in ("ints", "floats"):
            if isinstance(value, str | bytes) or not isinstance(value, Sequence):
                raise self.error(value, owner)
            items = tuple(self._number(v, owner, whole=kind == "ints", shown=value) for v in value)
            if len(items) < self.min_items:
                raise self.error(value, owner)
            return items
        if kind == "choice":
            if value not in self.choices or isinstance(value, bool) != isinstance(self.choices[0], bool):
                raise self.error(value, owner)
            return value
        if isinstance(value, PurePath) and kind == "file":
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise self.error(value, owner)
        if kind == "file" and not self._finds(value):
            raise self.error(value, owner)
        return value

    def _finds(self, value: str) -> bool:
        """A ``file`` value names an existing file: as a path, or as a bare name inside one of ``search``."""
        if Path(value).is_file():
            return True
        return Path(value).name == value and any((Path(folder) / value).is_file() for folder in self.search)

    def _number(self, value: Any, owner: str, *, whole: bool, shown: Any = None) -> Any:
        bad = isinstance(value, bool) or not isinstance(value, int | float)
        if not bad and whole and not isinstance(value, int):
            bad = not (math.isfinite(value) and float(value).is_integer())
            value = int(value) if not bad else value
        if not bad and not math.isfinite(value):
            bad = True
        if not bad and self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            bad = True
        if not bad and self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            bad = True
        if bad:
            raise self.error(value if shown is None else shown, owner)
        return value

    def error(self, value: Any, owner: str = "") -> ConfigValueError:
        """The one-line error for a value this option does not take: ``method kpcacam: option kernel=bad:
        expected one of linear, poly, rbf, sigmoid, cosine`` (the value as written; ``''`` when empty)."""
        where = f"{owner}: " if owner else ""
        shown = (value if isinstance(value, str) else format_value(value)) or "''"
        return ConfigValueError(f"{where}option {self.name}={shown}: expected {self.accepts()}", self.name)

    def format(self, value: Any) -> str:
        """``value`` as a spec writes it (``1;2;3``, ``true``, ``0.5``)."""
        return format_value(value)

    # -- for the docs and the tests ----------------------------------------------------------------
    def bad_values(self) -> list[str]:
        """Texts this option must refuse, as a user might type them: the wrong type, out of range, a
        malformed list, an empty value (the bad-value matrix is built from these)."""
        bad = [""]
        if self.kind in ("int", "float"):
            bad += ["abc", "nan" if self.kind == "float" else "1.5"]
            if self.low is not None:
                bad.append(_number(self.low - 1 if not self.low_open else self.low))
            if self.high is not None:
                bad.append(_number(self.high if self.high_open else self.high + 1))
        elif self.kind == "bool":
            bad += ["maybe", "2"]
        elif self.kind == "choice":
            bad += ["nope"]
        elif self.kind in ("ints", "floats"):
            bad += ["1;;2", "a;b", "1,2" if self.kind == "ints" else "nan"]
            if self.kind == "ints":
                bad.append("1.5")
            if self.low is not None:
                bad.append(_number(self.low - 1 if not self.low_open else self.low))
            if self.high is not None:
                bad.append(_number(self.high if self.high_open else self.high + 1))
        elif self.kind == "layer":
            bad += ["nope", "classifier"]
        elif self.kind == "file":
            bad += ["no/such/file.pt"]
        return bad

    def describe(self) -> dict[str, str]:
        """The option as one row of a table: name, type, default, paper, what it accepts, help."""
        return {
            "option": self.name,
            "type": self.kind,
            "default": "none" if self.default is None else format_value(self.default),
            "paper": "" if self.paper is UNSET else format_value(self.paper),
            "accepts": self.accepts() + (" (speed only)" if self.speed_only else ""),
            "help": self.help,
        }


def _int(text: str) -> int:
    value = int(text)  # "1.5" and "abc" raise ValueError
    return value


def _number_text(text: str) -> float | int:
    """A number as written: ``10`` stays the int 10 (so a recorded ``[10, 20]`` is the same JSON), ``0.5`` a float."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def format_value(value: Any) -> str:
    """How a spec and a docs table write a value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ";".join(format_value(v) for v in value)
    if value is None:
        return "none"
    return str(value)


def plain(value: Any) -> Any:
    """JSON-friendly: tuples become lists (what a run records and a store keeps)."""
    return [plain(v) for v in value] if isinstance(value, tuple | list) else value


def same(a: Any, b: Any) -> bool:
    """Equal as option values: ``1 == 1.0`` for numbers, lists by their numbers, never ``True == 1``."""
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


# -- a set of options ---------------------------------------------------------------------------------
def option_named(options: Sequence[Option], name: str, owner: str) -> Option:
    """The option called ``name``, or a :class:`UsageError` that lists what ``owner`` takes."""
    for option in options:
        if option.name == name:
            return option
    if not options:
        raise UsageError(f"{owner} takes no options, got {name!r}")
    raise UsageError(f"{owner}: unknown option {name!r}; it takes {', '.join(o.name for o in options)}")


def check_options(options: Sequence[Option], given: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """``given`` checked against the declared ``options`` (each value in its option's type): an unknown name
    is a :class:`UsageError` listing the known ones, a bad value a :class:`ConfigValueError` naming it."""
    return {name: option_named(options, name, owner).check(value, owner) for name, value in given.items()}


def with_defaults(options: Sequence[Option], given: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Every declared option's value in force: its default, or the checked value in ``given``."""
    checked = check_options(options, given, owner)
    return {o.name: checked.get(o.name, o.default) for o in options}


def canonical(options: Sequence[Option], given: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """``given`` checked, in declaration order, without the values equal to their default: two spellings of
    the same settings give the same dict (and so the same key)."""
    checked = check_options(options, given, owner)
    return {o.name: checked[o.name] for o in options if o.name in checked and not same(checked[o.name], o.default)}


def spec_key(name: str, options: Sequence[Option], given: Mapping[str, Any]) -> str:
    """The canonical spelling ``name(k=v,...)`` of ``given`` (already :func:`canonical`): speed-only
    options left out, so that the same numbers always have the same key."""
    speed = {o.name for o in options if o.speed_only}
    shown = [(k, v) for k, v in given.items() if k not in speed]
    if not shown:
        return name
    return f"{name}({','.join(f'{k}={format_value(v)}' for k, v in shown)})"


def settings(options: Sequence[Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """What a run records: every option that changes the numbers, with its value in force (JSON-friendly)."""
    return {o.name: plain(given.get(o.name, o.default)) for o in options if not o.speed_only}


def describe(options: Sequence[Option]) -> list[dict[str, str]]:
    """The options as table rows (:meth:`Option.describe`)."""
    return [o.describe() for o in options]


# -- specs: name(k=v,...) ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RawSpec:
    """A spec as written, split but not yet checked: the name and each option's text."""

    text: str
    name: str
    options: dict[str, str] = field(default_factory=dict)


def split_specs(text: str, what: str = "method") -> list[str]:
    """``"opticam(objective=diff,lr=0.3),gradcam"`` -> the specs, split at the commas outside parentheses.

    Raises:
        UsageError: unbalanced parentheses.
    """
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise UsageError(f"unbalanced ')' in the {what} list {text!r}")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise UsageError(f"unbalanced '(' in the {what} list {text!r}")
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def parse_spec(text: str, what: str = "method") -> RawSpec:
    """One spec, ``name`` or ``name(option=value,...)``, split into its name and options' texts.

    Raises:
        UsageError: options not in parentheses at the end, an item without ``=``, an option given twice.
    """
    text = text.strip()
    if "(" not in text:
        return RawSpec(text, text)
    if not text.endswith(")"):
        raise UsageError(f"{what} spec {text!r}: options go in parentheses at the end, e.g. name(option=value)")
    name, inner = text[: text.index("(")].strip(), text[text.index("(") + 1 : -1]
    if "(" in inner or ")" in inner:
        raise UsageError(f"{what} spec {text!r}: parentheses cannot nest; write lists as a;b;c")
    options: dict[str, str] = {}
    for item in (i.strip() for i in inner.split(",")):
        if not item:
            continue
        if "=" not in item:
            raise UsageError(f"{what} spec {text!r}: write each option as name=value, got {item!r}")
        key, value = (s.strip() for s in item.split("=", 1))
        if key in options:
            raise UsageError(f"{what} spec {text!r}: option {key!r} given twice")
        options[key] = value
    return RawSpec(text, name, options)


def parse_options(options: Sequence[Option], raw: Mapping[str, str], owner: str) -> dict[str, Any]:
    """Each option's text parsed and checked by its declaration (:meth:`Option.parse`)."""
    return {key: option_named(options, key, owner).parse(value, owner) for key, value in raw.items()}
