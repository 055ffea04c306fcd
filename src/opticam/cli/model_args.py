"""The model flags every command shares: ``--model``, ``--checkpoint``, ``--random-weights``, ``--device``.

A bad value is a :class:`~opticam.errors.UsageError` (one line, exit status 2), raised before any work; a
``--layer`` is checked against the loaded model here, the one place the command line resolves it.
"""

from __future__ import annotations

import argparse

import torch

from ..errors import UsageError
from ..models.layers import check_feature_layer
from ..models.loading import LoadedModel, load_model
from ..models.specs import DEFAULT_MODEL
from .paths import check_input_file


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
