"""``opticam bench``: Opti-CAM's speed against the floor L (see :mod:`opticam.perf.bench`), as a table and JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..errors import UsageError
from ..evaluation.dataset import load_sample, read_dataset
from ..perf.bench import VARIANTS, BenchSettings, benchmark, format_table, report
from .image_args import imagenet_samples_folder
from .model_args import add_model_arguments, model_from_args
from .paths import check_output_file
from .progress import add_progress_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="time Opti-CAM against the bare forward+backward loop (the floor L)",
        description="Time Opti-CAM against L = iterations x (forward of the masked batch + backward to the input), "
        "alternating the two in one run. Prints a table; --json writes the numbers.",
    )
    add_model_arguments(p)
    p.add_argument("--layer", help="target layer (default: the model's usual layer)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32], help="batch sizes (default 1 8 32)")
    p.add_argument("--iterations", type=int, default=100, help="Opti-CAM iterations (default 100)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each measurement (default 3)")
    p.add_argument(
        "--variants",
        nargs="+",
        default=["default"],
        choices=sorted(VARIANTS),
        help="Opti-CAM variants to time against the same float32 floor (default: default)",
    )
    p.add_argument("--official", action="store_true", help="also time the official research code's loop")
    p.add_argument(
        "--images",
        "--samples",
        dest="samples",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder with labels.csv and images (default: the shared samples; --samples: the same)",
    )
    p.add_argument("--random-images", action="store_true", help="uniform random images instead of the samples")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", dest="json_path", type=Path, help="write the results to this JSON file (default: none)")
    add_progress_argument(p)
    p.set_defaults(func=bench_command)


def bench_images(loaded, count: int, samples: Path | None, random_images: bool, device: str) -> torch.Tensor:
    """``count`` images ``[count, C, H, W]`` in [0, 1] (the model's channels and size): the first rows of the
    samples' labels.csv, or noise."""
    if random_images:
        gen = torch.Generator().manual_seed(0)
        return torch.rand(count, loaded.channels, *loaded.input_size, generator=gen).to(device)
    folder = samples or imagenet_samples_folder()
    labels = folder / "labels.csv"
    if not labels.is_file():
        raise UsageError(f"no labels.csv in {folder}: pass --images DIR, or --random-images for timing on noise")
    _, samples = read_dataset(labels, limit=count)
    if len(samples) < count:
        raise UsageError(f"{folder} has {len(samples)} images; the largest batch needs {count}")
    return torch.stack([loaded.preprocess(load_sample(s)) for s in samples]).to(device)


def bench_command(args: argparse.Namespace) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if min(args.batches) < 1 or args.iterations < 1 or args.repeats < 1:
        raise UsageError("--batches, --iterations and --repeats must be at least 1")
    if args.json_path:
        check_output_file(args.json_path, "--json")
    if args.samples is not None and not (args.samples / "labels.csv").is_file():  # refused even with --random-images
        raise UsageError(
            f"--images {args.samples}: no labels.csv there; pass a folder with labels.csv and its images, or "
            "--random-images alone to time on noise"
        )
    loaded = model_from_args(args)
    images = bench_images(loaded, max(args.batches), args.samples, args.random_images, args.device)
    settings = BenchSettings(
        batches=args.batches,
        iterations=args.iterations,
        repeats=args.repeats,
        variants=args.variants,
        official=args.official,
    )
    rows = benchmark(
        loaded.model,
        args.layer or loaded.target_layer,
        images,
        settings,
        reshape_transform=loaded.reshape_transform,
        progress=None if args.no_progress else (lambda msg: print(msg, flush=True)),
    )
    doc = report(rows, loaded.name, images.device)
    print(f"\n{loaded.name} on {doc['device_name']} ({doc['threads']} threads), {args.iterations} iterations")
    print(format_table(rows))
    if args.json_path:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json_path}")
    return 0
