"""``--images`` / ``--split`` / ``--methods`` for the commands that run over data, the alias flags that fill
the methods' declared options, and the checks of ``--class`` and ``--topk`` against the model."""

from __future__ import annotations

import argparse

from ..errors import UsageError
from ..methods.opticam_config import flag_options, opticam_options
from ..methods.registry import MethodSpec, parse_method_list, parse_method_specs, specs_with_flags
from ..models.loading import LoadedModel
from .opticam_args import opticam_config_from_args, preset_from_args


def add_dataset_arguments(parser: argparse.ArgumentParser, default_methods: str) -> None:
    """``--images`` (a labelled image set), ``--split`` (for ``.npz`` files) and ``--methods`` (from the registry):
    commands that run over data."""
    from ..evaluation.npz import SPLITS
    from ..methods.registry import METHODS

    parser.add_argument(
        "--images",
        "--samples",
        dest="images",
        required=True,
        help="labels.csv, a folder with labels.csv, synset folders, or a MedMNIST .npz (with --split) "
        "(--samples: the same)",
    )
    parser.add_argument(
        "--split",
        choices=SPLITS,
        help="which split of an .npz data set (<split>_images, <split>_labels); keys are <split>/<row> "
        "(default: none; needed with an .npz, refused without one)",
    )
    parser.add_argument(
        "--methods",
        default=default_methods,
        help=f"comma-separated, from: {', '.join(METHODS)}; options in parentheses, e.g. "
        f"'opticam(objective=diff),gradcam(layer=blocks.4)' (default {default_methods})",
    )


def parse_methods(text: str) -> list[str]:
    """``--methods opticam,gradcam(layer=blocks.4)`` -> the specs' keys (one check for every command:
    :func:`~opticam.methods.registry.parse_method_list`)."""
    return parse_method_list(text)


def method_specs_from_args(args: argparse.Namespace) -> list[MethodSpec]:
    """``--methods`` as checked specs, with what the other flags set: ``--preset`` and the Opti-CAM flags for
    the methods that take them (plain ``opticam``; explicit flags win over the preset, a spec's own options
    over both), and each method's own flags (``--cam-batch-size``, ...).

    The spec's key then spells the options that differ from the paper's: ``--preset fast`` turns ``opticam``
    into ``opticam(iterations=32,lr=1.0,objective=log-prob,schedule=cosine)``.
    """
    specs = parse_method_specs(args.methods)
    given = {o.name: getattr(args, o.flag) for o in flag_options() if getattr(args, o.flag, None) is not None}
    preset = preset_from_args(args)
    flags = dict(vars(args))
    if given or preset is not None:
        opticam = opticam_config_from_args(args, preset)  # a bad value: a usage error naming its flag
        names = [o.name for o in opticam_options()] if preset is not None else list(given)
        flags.update({name: getattr(opticam, name) for name in names})  # the preset fills plain Opti-CAM's flags
    return specs_with_flags(specs, flags)


def check_class_argument(class_index: int | None, loaded: LoadedModel) -> None:
    """Refuse a ``--class`` the model does not have, before any work is done."""
    if class_index is not None and not 0 <= class_index < len(loaded.class_names):
        raise UsageError(f"--class {class_index} is out of range: {loaded.name} has {len(loaded.class_names)} classes")


def check_topk(topk: int, class_index: int | None, loaded: LoadedModel) -> int:
    """A ``--topk`` that can work: at least 1, at most the number of classes, not with ``--class``."""
    if class_index is not None:
        raise UsageError("--topk and --class cannot be combined: --topk explains each image's top-K classes")
    if not 1 <= topk <= len(loaded.class_names):
        raise UsageError(f"--topk must be between 1 and {len(loaded.class_names)} (the model's classes), got {topk}")
    return topk
