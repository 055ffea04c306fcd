"""What every command shares: model flags, Opti-CAM flags, the method list, images, the samples path.

Every check of a user's value lives here or in the library and raises :class:`~opticam.errors.UsageError`,
which :func:`opticam.cli.main` prints as one line (``opticam: error: ...``, exit status 2), never a
traceback. The web app uses the same checks.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigValueError, ImageLoadError, UsageError
from ..evaluation.distributed import WorkerPool, check_pool_sizes, require_ray, start_ray
from ..images import load_image, sample_image  # sample_image: re-exported, it used to live here
from ..methods.opticam_config import OptiCAMConfig, flag_fields
from ..methods.registry import MethodSpec, parse_method_list, parse_method_specs, specs_with_flags
from ..models.loading import LoadedModel, load_model
from ..models.specs import DEFAULT_MODEL
from ..perf.allocator import tune_cpu_allocator, tuning_wanted


# -- models -----------------------------------------------------------------------------------------
def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--checkpoint``, ``--random-weights``, ``--device``: shared by every command."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name (default {DEFAULT_MODEL}, offline)")
    parser.add_argument("--checkpoint", help="state-dict file to load into the model's architecture")
    parser.add_argument(
        "--random-weights", action="store_true", help="random weights instead of pretrained (wiring tests)"
    )
    parser.add_argument("--device", default=default_device(), help="cpu, cuda or cuda:N (default: cuda if present)")


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
    device = check_device(args.device)
    return load_model(args.model, pretrained=not args.random_weights, checkpoint=args.checkpoint, device=device)


# -- Opti-CAM ---------------------------------------------------------------------------------------
PAPER = OptiCAMConfig()


def add_opticam_arguments(parser: argparse.ArgumentParser, *, defaults: OptiCAMConfig | None = PAPER) -> None:
    """``--layer``, ``--batch-size`` and one flag per :class:`OptiCAMConfig` field marked ``flag``.

    ``defaults=None`` leaves the config flags unset (``None``) so that a preset can fill them
    (:func:`opticam_config_from_args`).
    """
    parser.add_argument("--layer", help="target layer, dotted name (default: the model's usual layer)")
    parser.add_argument("--batch-size", type=int, default=8, help="images processed together (default 8)")
    for f in flag_fields():
        kind = f.type if isinstance(f.type, type) else type(f.default)
        default = getattr(defaults, f.name) if defaults is not None else None
        shown = f" (default {f.default})" if defaults is not None else f" (default: the preset's; paper {f.default})"
        extra: dict[str, Any] = {"choices": list(f.metadata["choices"])} if f.metadata["choices"] else {}
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=kind if not extra else str,
            default=default,
            help=f.metadata["help"] + shown,
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
    changes = {f.name: getattr(args, f.name) for f in flag_fields() if getattr(args, f.name, None) is not None}
    changes.update(extra)
    try:
        return (base or OptiCAMConfig()).replace(**changes)
    except ConfigValueError as exc:
        name = next((n for n in exc.fields if n in changes), None)
        flag = f"--{name.replace('_', '-')}: " if name else ""
        raise UsageError(f"{flag}{exc}") from None


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
        required=True,
        help="labels.csv, a folder with labels.csv, synset folders, or a MedMNIST .npz (with --split)",
    )
    parser.add_argument(
        "--split",
        choices=SPLITS,
        help="which split of an .npz data set (<split>_images, <split>_labels); keys are <split>/<row>",
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
    """``--methods`` as checked specs, with what the other flags set: the Opti-CAM flags for the methods that
    take them (plain ``opticam``), and each method's own flags (``--cam-batch-size``, ...)."""
    specs = parse_method_specs(args.methods)
    given = {f.name: getattr(args, f.name) for f in flag_fields() if getattr(args, f.name, None) is not None}
    opticam = opticam_config_from_args(args) if given else None  # a bad value: a usage error naming its flag
    options = {name: getattr(opticam, name) for name in given} if opticam is not None else {}
    return specs_with_flags(specs, vars(args), options)


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
    """``([(path, preprocessed image)], number skipped)``: unreadable files are reported and skipped,
    so one bad file does not lose the others."""
    images, failed = [], 0
    for path in paths:
        try:
            images.append((Path(path), loaded.preprocess(load_image(path))))
        except ImageLoadError as exc:
            print(f"opticam: skipping {exc}", file=sys.stderr)
            failed += 1
    return images, failed


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ray``, ``--ray-address``, ``--workers``, ``--cpus-per-worker``, ``--gpus-per-worker``."""
    g = parser.add_argument_group("Ray (pip install 'opticam[ray]'; docs/scale.md)")
    g.add_argument("--ray", action="store_true", help="run on a Ray worker pool (a local Ray unless --ray-address)")
    g.add_argument("--ray-address", metavar="ADDRESS", help="join this Ray cluster (auto, host:6379); implies --ray")
    g.add_argument("--workers", type=int, default=1, help="Ray workers, each with its own model (default 1)")
    g.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per worker (its torch threads; default 1)")
    g.add_argument(
        "--gpus-per-worker", type=float, default=0.0, help="GPUs per worker, fractions allowed (default 0: CPU)"
    )


def check_ray_arguments(args: argparse.Namespace) -> None:
    """Bad Ray values are usage errors; ``--ray-address`` implies ``--ray``; a missing Ray says how to get it."""
    if args.ray_address:
        args.ray = True
    check_pool_sizes(args.workers, args.cpus_per_worker, args.gpus_per_worker)
    if args.ray:
        require_ray()


def worker_process_setup():
    """What each Ray worker runs first: the CPU allocator tuning this command's own process got (docs/speed.md,
    section 2b), unless ``OPTICAM_MALLOC_TUNING=0``; ``None`` when off."""
    return tune_cpu_allocator if tuning_wanted() else None


@contextlib.contextmanager
def ray_pool(args: argparse.Namespace, worker_cls: type, *worker_args: Any):
    """A :class:`WorkerPool` of ``worker_cls(threads, *worker_args)`` per the Ray flags, on a local Ray
    (sized to fit the pool) or the cluster at ``--ray-address``."""
    need = math.ceil(args.workers * args.cpus_per_worker)
    ours = not require_ray().is_initialized() and not args.ray_address  # a Ray we start, we stop
    ray = start_ray(args.ray_address, num_cpus=None if args.ray_address else max(os.cpu_count() or 1, need))
    pool = WorkerPool(
        worker_cls,
        *worker_args,
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
    )
    try:
        yield pool
    finally:
        pool.shutdown()
        if ours:
            ray.shutdown()


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
