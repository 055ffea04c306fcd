"""``--no-progress`` and when progress is shown (only on a terminal)."""

from __future__ import annotations

import argparse
import sys


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
