"""The Opti-CAM flags, built from :class:`~opticam.methods.opticam_config.OptiCAMConfig`'s declared options,
``--preset`` and ``--batch-size``: their defaults and checks are the library's."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigValueError, UsageError
from ..methods.opticam_config import OptiCAMConfig, flag_options
from ..methods.presets import PRESETS, preset_config

PAPER = OptiCAMConfig()


def add_opticam_arguments(parser: argparse.ArgumentParser, *, defaults: OptiCAMConfig | None = PAPER) -> None:
    """``--layer``, ``--batch-size`` and one flag per :class:`OptiCAMConfig` field marked ``flag``.

    ``defaults=None`` leaves the config flags unset (``None``) so that a preset can fill them
    (:func:`opticam_config_from_args`).
    """
    parser.add_argument("--layer", help="target layer, dotted name (default: the model's usual layer)")
    parser.add_argument("--batch-size", type=int, default=8, help="images processed together (default 8)")
    for option in flag_options():
        default = getattr(defaults, option.name) if defaults is not None else None
        paper = option.default
        shown = f" (default {paper})" if defaults is not None else f" (default: the preset's; paper {paper})"
        extra: dict[str, Any] = {"choices": list(option.choices)} if option.choices else {}
        parser.add_argument(
            "--" + option.name.replace("_", "-"),
            dest=option.flag,
            type={"int": int, "float": float}.get(option.kind, str),
            default=default,
            help=option.help + shown,
            **extra,
        )


def opticam_config_from_args(
    args: argparse.Namespace, base: OptiCAMConfig | None = None, **extra: Any
) -> OptiCAMConfig:
    """``base`` (default: the paper's) with every config flag the user gave, and ``extra``; a bad value is
    a usage error naming its flag.

    The flag is found from the error's option names (:attr:`ConfigValueError.fields`, the offending option
    first): the first of them that the user gave, so ``--iterations 2`` against a preset's coarse steps names
    ``--iterations``. A value that came from ``base`` alone gets no flag prefix.
    """
    changes = {o.name: getattr(args, o.flag) for o in flag_options() if getattr(args, o.flag, None) is not None}
    changes.update(extra)
    try:
        return (base or OptiCAMConfig()).replace(**changes)
    except ConfigValueError as exc:
        name = next((n for n in exc.fields if n in changes), None)
        flag = f"--{name.replace('_', '-')}: " if name else ""
        raise UsageError(f"{flag}{exc}") from None


def add_preset_argument(parser: argparse.ArgumentParser) -> None:
    """``--preset``: named Opti-CAM settings under the explicit Opti-CAM flags (see :mod:`opticam.methods.presets`)."""
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="paper",
        help="named Opti-CAM settings (default paper; fast: a third of the passes, see docs/speed.md); "
        "Opti-CAM flags given explicitly override the preset",
    )


def preset_from_args(args: argparse.Namespace) -> OptiCAMConfig | None:
    """The ``--preset`` configuration, or ``None`` when the command has no ``--preset``."""
    name = getattr(args, "preset", None)
    return preset_config(name) if name is not None else None


def check_batch_size(value: int, flag: str = "--batch-size") -> int:
    if value < 1:
        raise UsageError(f"{flag} must be at least 1, got {value}")
    return value
