"""Who may talk to the server: the Host header and, for requests that change state, the Origin (issue 29, part 5).

The server binds 127.0.0.1 by default, but a page on any site the user visits can still make the browser send
requests to it. Two guards close that:

* **Host** (DNS rebinding): a page at ``evil.example`` whose name is made to resolve to 127.0.0.1 sends
  ``Host: evil.example``. Only the loopback names, the address the server is bound to and the names given with
  ``--allowed-host`` are served; any other Host gets 421 and nothing else happens.
* **Origin** (cross-site requests): a browser sends ``Origin`` with every cross-origin POST, including the
  "simple" ``text/plain`` ones that need no preflight. A POST, PUT, PATCH or DELETE whose Origin is not the
  server's own (scheme, host and port of the Host it was sent to) gets 403. Requests without an Origin (curl,
  scripts) are not browsers' cross-site requests and pass.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import JSONResponse, Response

LOOPBACK = ("127.0.0.1", "localhost", "::1")
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


def host_name(value: str) -> str:
    """The name part of a Host header value: ``127.0.0.1:8000`` -> ``127.0.0.1``, ``[::1]:80`` -> ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def allowed_names(bound: str | None, extra: Iterable[str]) -> set[str]:
    """The host names served: the loopback names, the bound address (unless it is a wildcard) and ``extra``."""
    names = set(LOOPBACK) | {e.strip().lower() for e in extra if e.strip()}
    if bound and bound not in ("0.0.0.0", "::"):
        names.add(bound.lower())
    return names


def check_request(method: str, host: str | None, origin: str | None, names: set[str]) -> tuple[int, str] | None:
    """``(status, message)`` for a request the guards refuse, ``None`` for one they let through."""
    if not host or host_name(host) not in names:
        return 421, (
            f"Host {host!r} is not served here (a guard against DNS rebinding); start the server with "
            "--allowed-host NAME to serve that name"
        )
    if method.upper() in UNSAFE and origin is not None and origin != "null":
        parts = urlsplit(origin)
        if parts.netloc.lower() != host.strip().lower():
            return 403, f"cross-origin request from {origin} refused: only the server's own page may submit jobs"
    if method.upper() in UNSAFE and origin == "null":
        return 403, "a request from an opaque origin (a sandboxed page or a file) is refused"
    return None


def host_and_origin_guard(
    extra: Iterable[str],
) -> Callable[[Request, Callable[..., Awaitable[Response]]], Awaitable[Response]]:
    """The app's HTTP middleware: refuse per :func:`check_request`, before any route runs."""
    extra = tuple(extra)

    async def guard(request: Request, call_next: Callable[..., Awaitable[Response]]) -> Response:
        server = request.scope.get("server")
        names = allowed_names(server[0] if server else None, extra)
        refused = check_request(request.method, request.headers.get("host"), request.headers.get("origin"), names)
        if refused is not None:
            status, message = refused
            return JSONResponse({"error": message}, status_code=status)
        return await call_next(request)

    return guard
