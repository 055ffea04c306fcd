"""The ``opticam`` command line.

Subcommands live in modules of this package, each with ``register(subparsers)`` that adds its parsers
and sets ``func``; :data:`COMMAND_MODULES` lists those modules in the order ``opticam --help`` shows them.
What they share is in one module per job: :mod:`.model_args`, :mod:`.opticam_args`, :mod:`.method_args`,
:mod:`.image_args`, :mod:`.paths`, :mod:`.progress`, :mod:`.ray_args`.

Every failure is one line on stderr, ``opticam: error: ...``, never a traceback, and an exit status that
says whose it is:

* **2**: a value that cannot work (a bad flag value, argparse's own complaints included, an unknown model,
  layer or method, a path that cannot be used): nothing was computed.
* **1**: the command ran but something failed at run time: images that could not be read (reported, the
  others done), a port already in use, a cluster that does not answer, a file that could not be written.
* **130**: interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from ..errors import ImageLoadError, NumericalError, OpticamError, ResourceError
from ..perf.allocator import tune_cpu_allocator, tuning_wanted

COMMAND_MODULES = ["explain", "compare", "serve", "report", "bench", "evaluate", "sanity", "train_explainer", "catalog"]

RUNTIME_ERRORS: tuple[type[BaseException], ...] = (ImageLoadError, NumericalError, ResourceError, OSError)
"""Errors found while working, not in the values given: exit status 1 (every other one is 2)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad value is the same one line as every other error: ``opticam: error: <message>``
    and exit status 2 (argparse prints its multi-line usage instead). ``--help`` still shows the usage.

    Subparsers made by ``add_subparsers`` are of this class too (argparse uses the parent's class).
    """

    def error(self, message: str, prog: str | None = None) -> NoReturn:
        message = " ".join(message.removeprefix("argument ").split())
        self.exit(2, f"opticam: error: {message} (see '{prog or self.prog} --help')\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        """argparse's, but "unrecognized arguments" points to the help of the command they were given to
        (``opticam explain --help``), as every other complaint about a command's flags does; argparse
        itself reports them from the top-level parser, which would point to ``opticam --help``."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}", prog=self._command_prog(parsed))
        return parsed

    def _command_prog(self, parsed: argparse.Namespace) -> str:
        """The ``prog`` of the (sub)command ``parsed`` ran: ``opticam explain``, or this parser's own."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(parsed, action.dest, None) or "")
                if isinstance(chosen, OneLineParser):
                    return chosen._command_prog(parsed)
        return self.prog


def version() -> str:
    """The installed distribution's version (the package's own when it runs from a source tree)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("opticam")
    except PackageNotFoundError:
        from .. import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="opticam",
        description="Opti-CAM saliency maps (Zhang et al., CVIU 2024) and the paper's evaluation.",
        epilog="Exit status: 0 done; 1 a run-time failure (unreadable images, a port in use, ...); "
        "2 a value that cannot work (nothing was computed).",
    )
    parser.add_argument("--version", action="version", version=f"opticam {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{module}").register(sub)
    return parser


def exit_status(exc: BaseException) -> int:
    """1 for a run-time failure (:data:`RUNTIME_ERRORS`), 2 for a value that cannot work."""
    return 1 if isinstance(exc, RUNTIME_ERRORS) else 2


def error_line(exc: BaseException) -> str:
    """The one line that describes ``exc``: its message; an OS error also names its path."""
    if isinstance(exc, OSError) and not isinstance(exc, OpticamError):
        where = exc.filename if exc.filename is not None else ""
        reason = exc.strerror or str(exc)
        return f"{where}: {reason}" if where else reason
    return " ".join(str(exc).split("\n"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status (argparse's errors, ``--help`` and ``--version`` included)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) or a bad value (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    if tuning_wanted():
        tune_cpu_allocator()  # see opticam.perf.allocator: model passes stop paying for page faults
    try:
        return int(args.func(args) or 0)
    except (OpticamError, OSError) as exc:
        print(f"opticam: error: {error_line(exc)}", file=sys.stderr)
        return exit_status(exc)
    except KeyboardInterrupt:
        print("opticam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
