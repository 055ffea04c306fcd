"""Checks of the files and folders a command reads or writes, made before any work: a usage error naming the
flag (exit status 2) instead of a failure after the model has loaded or the run has started."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..errors import UsageError


def check_input_file(path: str | Path, flag: str) -> Path:
    """``path`` if it is an existing file; a usage error naming the flag otherwise."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{flag} {path}: no such file")
    if not p.is_file():
        raise UsageError(f"{flag} {path}: not a file")
    return p


def check_output_folder(path: str | Path, flag: str) -> Path:
    """An output folder that exists or can be made (nothing is created here): a usage error naming the flag
    when it is a file or lies where nothing can be written."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a folder")
    _check_writable(p, flag, path)
    return p


def check_output_file(path: str | Path, flag: str, suffixes: tuple[str, ...] | None = None) -> Path:
    """An output file that can be written (nothing is created here): not a folder, with one of ``suffixes``
    when given, in a folder that exists or can be made and can be written."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; give a file name")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise UsageError(f"{flag} {path}: the name must end in {', '.join(suffixes)}")
    _check_writable(p.parent, flag, path)
    return p


SQLITE_HEADER = b"SQLite format 3\x00"


def check_sqlite_file(path: str | Path, flag: str = "--db") -> Path:
    """A result file to write: a new file, an empty one or an SQLite file (its first 16 bytes say so), never
    another kind of file, which SQLite would refuse only after the model has loaded."""
    p = check_output_file(path, flag)
    if p.is_file() and p.stat().st_size > 0:
        with p.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
        if head != SQLITE_HEADER:
            raise UsageError(f"{flag} {path}: not an SQLite file; give a new file name or an opticam result file")
    return p


def _check_writable(folder: Path, flag: str, shown: str | Path) -> None:
    """``folder``, or the closest existing folder above it (where it would be made), must take a file."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {shown}: {existing} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise UsageError(f"{flag} {shown}: cannot create files in {existing} ({exc.strerror or exc})") from None
