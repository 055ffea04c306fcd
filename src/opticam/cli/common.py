"""What every command shares: model flags, Opti-CAM flags, the method list, images, the samples path.

Every check of a user's value lives here or in the library and raises :class:`~opticam.errors.UsageError`,
which :func:`opticam.cli.main` prints as one line (``opticam: error: ...``, exit status 2), never a
traceback. The web app uses the same checks.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..errors import ConfigValueError, ImageLoadError, UsageError
from ..evaluation.distributed import RayPlan, check_pool_sizes, check_ray_address, require_ray
from ..evaluation.distributed import ray_pool as distributed_pool
from ..images import IMAGE_SUFFIXES, load_image, sample_image  # sample_image: re-exported, it used to live here
from ..methods.opticam_config import OptiCAMConfig, flag_options, opticam_options
from ..methods.presets import PRESETS, preset_config
from ..methods.registry import MethodSpec, parse_method_list, parse_method_specs, specs_with_flags
from ..models.layers import check_feature_layer
from ..models.loading import LoadedModel, load_model
from ..models.specs import DEFAULT_MODEL
from ..perf.allocator import tune_cpu_allocator, tuning_wanted

T = TypeVar("T")
V = TypeVar("V")


# -- models -----------------------------------------------------------------------------------------
def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--checkpoint``, ``--random-weights``, ``--device``: shared by every command."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name (default {DEFAULT_MODEL}, offline)")
    parser.add_argument(
        "--checkpoint",
        help="state-dict file to load into the model's architecture (default: none, the pretrained weights)",
    )
    parser.add_argument(
        "--random-weights", action="store_true", help="random weights instead of pretrained (wiring tests)"
    )
    add_device_argument(parser)


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device``: its default is this machine's (CUDA when PyTorch sees a GPU)."""
    parser.add_argument(
        "--device", default=default_device(), help="cpu, cuda or cuda:N (default: cuda if present, else cpu)"
    )


def check_device(device: str) -> str:
    """``device`` if this machine has it; a usage error that says what is there otherwise."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device!r} is not a device name; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: this machine has no CUDA GPU that PyTorch can use; use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: there are only {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type != "cpu":
        raise UsageError(f"--device {device}: only cpu and cuda are supported")
    return device


def model_from_args(args: argparse.Namespace) -> LoadedModel:
    """The model the flags name, on a checked ``--device``; a ``--layer`` flag, when the command has one, is
    checked against it at once (:func:`~opticam.models.layers.check_feature_layer`), before any work."""
    device = check_device(args.device)
    if args.checkpoint is not None:
        check_input_file(args.checkpoint, "--checkpoint")
    loaded = load_model(args.model, pretrained=not args.random_weights, checkpoint=args.checkpoint, device=device)
    check_feature_layer(loaded, getattr(args, "layer", None))
    return loaded


# -- Opti-CAM ---------------------------------------------------------------------------------------
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


# -- methods, classes, images -------------------------------------------------------------------------
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


def read_images(paths: list[str], loaded: LoadedModel) -> tuple[list[tuple[Path, torch.Tensor]], int]:
    """``([(path, preprocessed image)], number skipped)``, by :func:`read_each`."""
    return read_each(paths, lambda path: (Path(path), loaded.preprocess(load_image(path))))


def read_each(items: Sequence[T], read: Callable[[T], V]) -> tuple[list[V], int]:
    """``([read(item)], number skipped)``: items whose image cannot be read (``read`` raises
    :class:`~opticam.errors.ImageLoadError`) are reported and skipped, so one bad file does not lose the
    others. When none can be read, that is the one error (exit status 1): there is nothing to do."""
    values, failures = [], []
    for item in items:
        try:
            values.append(read(item))
        except ImageLoadError as exc:
            failures.append(exc)
    if failures and not values:
        if len(failures) == 1:
            raise failures[0]
        raise ImageLoadError(f"none of the {len(failures)} images could be read (the first: {failures[0]})")
    for exc in failures:
        print(f"opticam: skipping {exc}", file=sys.stderr)
    return values, len(failures)


def unreadable_summary(failed: int, total: int) -> int:
    """Say once more, at the end, how many images could not be read; the exit status: 1 if any, else 0.

    Every command that reads several images ends this way (``explain``, ``compare``, ``evaluate``,
    ``sanity``): the others are done, and the status says that the output is not complete.
    """
    if failed:
        print(f"opticam: {failed} of {total} image(s) could not be read", file=sys.stderr)
    return 1 if failed else 0


def expand_images(items: list[str]) -> list[str]:
    """The image arguments with each folder replaced by its image files (recursively, sorted).

    A folder without an image file is a usage error (there would be nothing to do for it); a file argument is
    kept as it is (a missing or unreadable one is reported when it is read).
    """
    paths = []
    for item in items:
        folder = Path(item)
        if folder.is_dir():
            found = sorted(str(f) for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                kinds = ", ".join(sorted(IMAGE_SUFFIXES))
                raise UsageError(f"{item}: the folder holds no image file ({kinds})")
            paths += found
        else:
            paths.append(item)
    return paths


# -- paths ------------------------------------------------------------------------------------------
def check_input_file(path: str | Path, flag: str) -> Path:
    """``path`` if it is an existing file; a usage error naming the flag otherwise."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{flag} {path}: no such file")
    if not p.is_file():
        raise UsageError(f"{flag} {path}: not a file")
    return p


def check_output_folder(path: str | Path, flag: str) -> Path:
    """An output folder that exists or can be made (nothing is created here): a usage error naming the flag
    when it is a file or lies where nothing can be written."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a folder")
    _check_writable(p, flag, path)
    return p


def check_output_file(path: str | Path, flag: str, suffixes: tuple[str, ...] | None = None) -> Path:
    """An output file that can be written (nothing is created here): not a folder, with one of ``suffixes``
    when given, in a folder that exists or can be made and can be written."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; give a file name")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise UsageError(f"{flag} {path}: the name must end in {', '.join(suffixes)}")
    _check_writable(p.parent, flag, path)
    return p


SQLITE_HEADER = b"SQLite format 3\x00"


def check_sqlite_file(path: str | Path, flag: str = "--db") -> Path:
    """A result file to write: a new file, an empty one or an SQLite file (its first 16 bytes say so), never
    another kind of file, which SQLite would refuse only after the model has loaded."""
    p = check_output_file(path, flag)
    if p.is_file() and p.stat().st_size > 0:
        with p.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
        if head != SQLITE_HEADER:
            raise UsageError(f"{flag} {path}: not an SQLite file; give a new file name or an opticam result file")
    return p


def _check_writable(folder: Path, flag: str, shown: str | Path) -> None:
    """``folder``, or the closest existing folder above it (where it would be made), must take a file."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {shown}: {existing} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise UsageError(f"{flag} {shown}: cannot create files in {existing} ({exc.strerror or exc})") from None


# -- progress ---------------------------------------------------------------------------------------
def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: every command that shows progress has it."""
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars or progress lines (they are off anyway when stderr is not a terminal)",
    )


def show_progress(args: argparse.Namespace) -> bool:
    """Progress is shown unless ``--no-progress``, and only on a terminal (a log file gets no bar updates)."""
    if getattr(args, "no_progress", False):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ray``, ``--ray-address``, ``--workers``, ``--cpus-per-worker``, ``--gpus-per-worker``."""
    g = parser.add_argument_group("Ray (pip install 'opticam[ray]'; docs/scale.md)")
    g.add_argument("--ray", action="store_true", help="run on a Ray worker pool (a local Ray unless --ray-address)")
    g.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="join this Ray cluster (auto, host:6379); implies --ray (default: none, a local Ray)",
    )
    g.add_argument("--workers", type=int, default=1, help="Ray workers, each with its own model (default 1)")
    g.add_argument(
        "--cpus-per-worker",
        type=float,
        default=None,
        help="CPUs per worker (its torch threads; default 1); fractions share CPUs, which a local pool of more "
        "workers than CPUs must ask for",
    )
    g.add_argument(
        "--gpus-per-worker", type=float, default=0.0, help="GPUs per worker, fractions allowed (default 0: CPU)"
    )


def check_ray_arguments(args: argparse.Namespace) -> None:
    """Bad Ray values are usage errors; ``--ray-address`` implies ``--ray``; a missing Ray says how to get it.

    A local pool (no ``--ray-address``, no Ray already running in this process) is checked against this
    machine's CPUs (``os.cpu_count()``): more workers than CPUs needs an explicit ``--cpus-per-worker``. An
    address is tried first (a TCP connection with a short timeout), so that a cluster nobody runs is one line
    within seconds, not a wait. Leaves ``args.cpus_per_worker`` set (1 when not given).
    """
    if args.ray_address:
        args.ray = True
    given = args.cpus_per_worker is not None
    cpus = args.cpus_per_worker if given else 1.0
    ray = sys.modules.get("ray")
    running = ray is not None and ray.is_initialized()  # a Ray this process already joined: its CPUs decide
    local = None if args.ray_address or running else (os.cpu_count() or 1)
    check_pool_sizes(args.workers, cpus, args.gpus_per_worker, local_cpus=local, cpus_given=given)
    args.cpus_per_worker = cpus
    if args.ray:
        if args.ray_address:
            check_ray_address(args.ray_address)
        require_ray()


def worker_process_setup():
    """What each Ray worker runs first: the CPU allocator tuning this command's own process got (docs/speed.md,
    section 2b), unless ``OPTICAM_MALLOC_TUNING=0``; ``None`` when off."""
    return tune_cpu_allocator if tuning_wanted() else None


def ray_plan(args: argparse.Namespace) -> RayPlan:
    """The Ray flags (checked by :func:`check_ray_arguments`) as a :class:`RayPlan`."""
    return RayPlan(args.workers, args.cpus_per_worker, args.gpus_per_worker, args.ray_address)


def ray_pool(args: argparse.Namespace, worker_cls: type, *worker_args: Any):
    """:func:`opticam.evaluation.distributed.ray_pool` per the Ray flags."""
    return distributed_pool(ray_plan(args), worker_cls, *worker_args)


def default_samples() -> Path:
    """``$OPTICAM_SAMPLES``, else the shared ImageNet samples beside the repository checkout."""
    env = os.environ.get("OPTICAM_SAMPLES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4] / "shared/data/imagenet-samples"


__all__ = [
    "add_model_arguments",
    "add_opticam_arguments",
    "check_batch_size",
    "check_class_argument",
    "add_ray_arguments",
    "check_device",
    "check_ray_arguments",
    "ray_pool",
    "check_topk",
    "default_device",
    "default_samples",
    "model_from_args",
    "opticam_config_from_args",
    "method_specs_from_args",
    "parse_methods",
    "read_images",
    "sample_image",
]
