"""``opticam serve`` exits 130 after Ctrl-C, like every other command (uvicorn swallows the interrupt)."""

from __future__ import annotations

import contextlib
import signal
import socket

import pytest

from opticam.cli import main

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ctrl_c_while_serving_exits_130(monkeypatch, capsys):
    """The real uvicorn server starts on a free port, then gets SIGINT (what Ctrl-C sends) from its main loop:
    uvicorn shuts down gracefully and returns normally, and the command still exits 130."""
    import uvicorn

    async def interrupted_main_loop(self) -> None:
        signal.raise_signal(signal.SIGINT)  # handled by uvicorn: should_exit, then its shutdown

    monkeypatch.setattr(uvicorn.Server, "main_loop", interrupted_main_loop)
    before = signal.getsignal(signal.SIGINT)
    assert main(["serve", "--port", str(free_port())]) == 130
    captured = capsys.readouterr()
    assert "serving on" in captured.out
    assert captured.err.strip().splitlines()[-1] == "opticam: interrupted"
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back


def test_ctrl_c_swallowed_by_uvicorn_run_exits_130(monkeypatch):
    """The same through a stand-in for ``uvicorn.run`` that does what it does on SIGINT: raise the signal
    again after its shutdown and catch the KeyboardInterrupt."""

    def run(*_args, **_kwargs):
        with contextlib.suppress(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr("uvicorn.run", run)
    assert main(["serve", "--port", str(free_port())]) == 130


def test_a_server_that_stops_by_itself_exits_0(monkeypatch):
    monkeypatch.setattr("uvicorn.run", lambda *_args, **_kwargs: None)
    assert main(["serve", "--port", str(free_port())]) == 0
