"""``opticam train-explainer``: train the head of amortized Opti-CAM for a model and layer (``opticam.training``).

The head is written to ``--out`` (a small ``.pt`` file loaded with ``weights_only=True``); a checkpoint
``--out``.partial is written after every epoch, and the same command continues from it after an interruption.
Use the head with ``--methods "opticam-amortized(head=OUT)"`` (or ``opticam explain --method ...``).
"""

from __future__ import annotations

import argparse
import sys

from ..errors import UsageError
from ..methods.opticam_config import OBJECTIVES
from ..training import DistillTargets, TrainSettings, train_explainer, training_images
from .model_args import add_model_arguments, model_from_args
from .paths import check_input_file, check_output_file
from .progress import add_progress_argument, show_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-explainer", help="train an amortized Opti-CAM head for a model and layer")
    p.add_argument("--images", required=True, help="a folder of images, a labels.csv, or a MedMNIST .npz (required)")
    p.add_argument("--split", help="the .npz split to train on: train, val or test (default: none, for folders)")
    p.add_argument(
        "--rows",
        help="only rows START:STOP of the source, in its order (e.g. 200:1000; default: all)",
    )
    p.add_argument("--out", required=True, help="the head file to write, .pt (required)")
    p.add_argument("--layer", help="the layer to explain (default: the model's usual layer)")
    p.add_argument("--epochs", type=int, default=5, help="epochs on the Opti-CAM objective (default 5)")
    p.add_argument(
        "--distill",
        help="paper Opti-CAM's weights for the images, from benchmarks/distill_targets.py merge (default: none)",
    )
    p.add_argument("--distill-epochs", type=int, default=0, help="distillation epochs before them (default 0)")
    p.add_argument("--batch-size", type=int, default=16, help="images per step (default 16)")
    p.add_argument("--head-lr", type=float, default=1e-3, help="the head's learning rate (default 0.001)")
    p.add_argument("--seed", type=int, default=0, help="seed of every draw (default 0)")
    p.add_argument(
        "--train-objective",
        default="log-prob",
        choices=OBJECTIVES,
        help="the Opti-CAM objective the head maximizes (default log-prob)",
    )
    p.add_argument(
        "--target", default="pred", choices=("pred", "labels"), help="predicted class (default) or the labels"
    )
    p.add_argument("--no-augment", action="store_true", help="no random resized crops and flips")
    p.add_argument("--hidden", type=int, default=64, help="the head's width (default 64)")
    add_model_arguments(p)
    add_progress_argument(p)
    p.set_defaults(func=train_explainer_command)


def parse_rows(text: str | None) -> tuple[int, int] | None:
    """``START:STOP`` -> ``(start, stop)`` with ``0 <= start < stop``; ``None`` stays ``None``."""
    if text is None:
        return None
    start, colon, stop = text.partition(":")
    try:
        if not colon:
            raise ValueError
        rows = (int(start), int(stop))
    except ValueError:
        raise UsageError(f"--rows {text!r}: write START:STOP, two whole numbers (e.g. 200:1000)") from None
    if not 0 <= rows[0] < rows[1]:
        raise UsageError(f"--rows {text}: need 0 <= START < STOP")
    return rows


def train_explainer_command(args: argparse.Namespace) -> int:
    """Check every value, load the model and the images, train (resuming), and say where the head is."""
    settings = TrainSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.head_lr,
        seed=args.seed,
        objective=args.train_objective,
        augment=not args.no_augment,
        target=args.target,
        hidden=args.hidden,
        distill_epochs=args.distill_epochs,
    )
    if args.distill_epochs and not args.distill:
        raise UsageError("--distill-epochs needs --distill FILE (paper Opti-CAM's weights for the images)")
    rows = parse_rows(args.rows)
    out = check_output_file(args.out, "--out", (".pt",))
    distill = DistillTargets.load(check_input_file(args.distill, "--distill")) if args.distill else None
    loaded = model_from_args(args)

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    data = training_images(args.images, loaded.preprocess, split=args.split, rows=rows, log=log)
    if settings.target == "labels" and data.labels is None:
        raise UsageError(f"--target labels: {args.images} has no labels (give a labels.csv, synset folders or an .npz)")
    log(f"training a head for {loaded.name} on {len(data)} images from {args.images}")
    outcome = train_explainer(
        loaded,
        args.layer,
        data,
        out,
        settings,
        distill=distill,
        device=args.device,
        progress=show_progress(args),
        log=log,
    )
    info = outcome.info
    print(
        f"{outcome.path}: head for {info.model} at {info.layer} (weights {info.weights_fingerprint}), "
        f"{info.training.get('seconds', 0):.0f} s of training; use it as opticam-amortized(head={outcome.path})"
    )
    return 0
