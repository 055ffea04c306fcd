"""``opticam serve``: the web page (FastAPI + uvicorn), on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import signal
import socket
import sys
import threading
from collections.abc import Iterator

from ..errors import ResourceError, UsageError
from .method_args import parse_methods
from .model_args import add_device_argument, check_device
from .paths import check_input_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="web page: upload an image, watch Opti-CAM run, see overlays and top-5")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="a Host name to serve besides 127.0.0.1, localhost, ::1 and --host (repeatable; default: none); "
        "other Host headers get 421, a guard against DNS rebinding",
    )
    p.add_argument(
        "--models",
        help="comma-separated model names to offer, FILE.py:factory ones too (default: the offline ones)",
    )
    p.add_argument(
        "--checkpoint",
        help="state-dict file for the one model of --models (e.g. a factory model's weights; default: none)",
    )
    p.add_argument("--methods", help="comma-separated methods to offer (default: all registered)")
    p.add_argument(
        "--images",
        "--samples",
        dest="samples",
        metavar="DIR",
        help="a folder whose first 24 images are offered as samples too (--samples: the same; default: none, "
        "only the bundled sample)",
    )
    p.add_argument("--max-mb", type=float, default=20.0, help="upload size limit in MB (default 20)")
    p.add_argument("--max-megapixels", type=float, default=40.0, help="pixel-count limit (default 40 megapixels)")
    p.add_argument(
        "--max-iterations", type=int, default=200, help="most Opti-CAM steps a request may ask (default 200)"
    )
    p.add_argument("--iterations", type=int, default=50, help="the form's default Opti-CAM steps (default 50)")
    p.add_argument("--queue", type=int, default=8, help="jobs that may wait for the worker (default 8)")
    add_device_argument(p)
    p.set_defaults(func=serve_command)


def settings_from_args(args: argparse.Namespace):
    """:class:`opticam.web.Settings` from the command line, with range checks."""
    from ..web.app import Settings, samples_from_folder

    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    settings = Settings(device=check_device(args.device))
    for name in args.allowed_host or []:
        bare = name.strip().strip("[]")
        if not bare or "/" in bare or any(c.isspace() for c in bare) or bare.count(":") == 1:
            raise UsageError(f"--allowed-host {name!r}: give a host name or address without scheme or port")
        settings.allowed_hosts.append(bare)
    if args.models:
        from ..models.loading import check_model_name

        settings.models = [m.strip() for m in args.models.split(",") if m.strip()]
        for name in settings.models:
            check_model_name(name)  # an unknown name: one line now, not a failed job later
    if args.methods:
        wanted = parse_methods(args.methods)
        settings.methods = wanted
        settings.default_methods = wanted[:1]
    if args.samples:
        settings.samples.update(samples_from_folder(args.samples))
    positive = (args.max_mb > 0, args.max_megapixels > 0, args.max_iterations >= 1, args.queue >= 1)  # NaN: False
    if not all(positive) or not math.isfinite(args.max_mb) or not math.isfinite(args.max_megapixels):
        raise UsageError("--max-mb, --max-megapixels, --max-iterations and --queue must be positive")
    if not 1 <= args.iterations <= args.max_iterations:
        raise UsageError(f"--iterations must be between 1 and --max-iterations ({args.max_iterations})")
    settings.max_bytes = int(args.max_mb * 1e6)
    settings.max_pixels = int(args.max_megapixels * 1e6)
    settings.max_iterations = args.max_iterations
    settings.default_iterations = args.iterations
    settings.max_waiting = args.queue
    return settings


def check_port_free(host: str, port: int) -> None:
    """Bind ``host:port`` once and let go, so that an address in use (or one this machine does not have) is one
    line before "serving on ..." is printed, instead of uvicorn's log and a silent exit.

    Raises:
        UsageError: ``host`` is not an address or name this machine can resolve.
        ResourceError: the port is taken, or binding is not allowed.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(f"--host {host}: not an address or a name this machine knows ({exc})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as exc:
            raise ResourceError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None


def model_cache(args: argparse.Namespace, settings):
    """The app's model cache: ``--checkpoint`` goes to the one model offered; that model, and models of your own
    (``FILE.py:factory``), are loaded now, so that a checkpoint that does not fit or a broken factory is one line
    here, not a failed job later."""
    from ..models.factory import is_factory_name
    from ..models.loading import load_model
    from ..web.app import ModelCache

    if args.checkpoint is not None:
        if len(settings.models) != 1:
            raise UsageError("--checkpoint needs exactly one model in --models (the one the weights are for)")
        check_input_file(args.checkpoint, "--checkpoint")
    cache = ModelCache(settings.device, loader=functools.partial(load_model, checkpoint=args.checkpoint))
    for name in settings.models:
        if is_factory_name(name) or args.checkpoint is not None:
            cache.get(name)
    return cache


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from ..web.app import create_app

    settings = settings_from_args(args)
    check_port_free(args.host, args.port)
    models = model_cache(args, settings)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"opticam: warning: serving on {args.host}, reachable from other machines (name the host they use "
            "with --allowed-host)",
            file=sys.stderr,
        )
    print(f"opticam: serving on http://{args.host}:{args.port}/ (Ctrl-C to stop)")
    with interrupt_noted() as interrupted:
        uvicorn.run(create_app(settings, models), host=args.host, port=args.port, log_level="info")
    if interrupted:
        raise KeyboardInterrupt  # Ctrl-C: exit status 130, as for every command
    return 0


@contextlib.contextmanager
def interrupt_noted() -> Iterator[list[int]]:
    """Note a Ctrl-C that ``uvicorn.run`` swallows, so that ``opticam serve`` exits 130 after it too.

    On SIGINT uvicorn shuts down gracefully, restores the handler it found, raises the signal again, and
    then catches the ``KeyboardInterrupt`` that causes. The handler installed here is the one it finds: it
    notes the signal (the list yielded is then non-empty) and still raises ``KeyboardInterrupt``, so a
    Ctrl-C before uvicorn's own handlers are in place stops it as usual."""
    noted: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # signal handlers: main thread only
        yield noted
        return

    def note(signum: int, frame: object) -> None:
        noted.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, previous)
