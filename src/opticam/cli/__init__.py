"""The ``opticam`` command line.

Subcommands live in modules of this package, each with ``register(subparsers)`` that adds its parsers
and sets ``func``; :data:`COMMAND_MODULES` lists those modules in the order ``opticam --help`` shows them.
What they share (model and Opti-CAM flags, the method list, the checks) is in :mod:`.common`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import OpticamError
from ..perf.allocator import tune_cpu_allocator, tuning_wanted

COMMAND_MODULES = ["explain", "compare", "serve", "report", "bench", "evaluate", "sanity"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opticam",
        description="Opti-CAM saliency maps (Zhang et al., CVIU 2024) and the paper's evaluation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{module}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if tuning_wanted():
        tune_cpu_allocator()  # see opticam.perf.allocator: model passes stop paying for page faults
    try:
        return int(args.func(args) or 0)
    except OpticamError as exc:
        print(f"opticam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("opticam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
