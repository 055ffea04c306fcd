"""Issue 29: a damaged result file is refused when opened, before anything is written, with one line and
exit status 1 (never a traceback), by `opticam evaluate` and `opticam report`."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from opticam.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _store(tmp_path: Path) -> tuple[list[str], Path]:
    data = tmp_path / "data"
    data.mkdir()
    lines = ["file,class_index"]
    for i in range(40):
        Image.new("RGB", (32, 32), (i * 6, 90, 40)).save(data / f"{i}.png")
        lines.append(f"{i}.png,{i % 5}")
    (data / "labels.csv").write_text("\n".join(lines) + "\n")
    db = tmp_path / "r.sqlite"
    base = ["evaluate", "--images", str(data), "--db", str(db), "--methods", "fakecam"]
    base += ["--metrics", "drop-gain", "--no-progress"]
    assert main(base) == 0
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return base, db


def _garble(db: Path) -> None:
    with sqlite3.connect(db) as con:
        (size,) = con.execute("PRAGMA page_size").fetchone()
    raw = bytearray(db.read_bytes())
    for page in range(2, len(raw) // size):  # the middle of every page but the header's: the results among them
        mid = page * size + size // 2
        raw[mid : mid + 64] = b"\xa5" * 64
    db.write_bytes(bytes(raw))


def _truncate(db: Path) -> None:
    with sqlite3.connect(db) as con:
        (size,) = con.execute("PRAGMA page_size").fetchone()
    raw = db.read_bytes()
    db.write_bytes(raw[: len(raw) - size // 2])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("damage", [_garble, _truncate])
def test_a_corrupt_store_is_one_line_exit_1_and_left_unchanged(capsys, mini, tmp_path, damage):
    base, db = _store(tmp_path)
    damage(db)
    before = _sha(db)
    for argv in (base, ["report", str(db), "--out", str(tmp_path / "r.html")], ["report", str(db), "--list"]):
        capsys.readouterr()
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert str(db) in err and "corrupt" in err and "not changed" in err and ".recover" in err
        assert _sha(db) == before, argv


def test_an_empty_file_is_a_new_store(capsys, mini, tmp_path):
    """A zero-byte --db is a new store (documented in docs/evaluation.md)."""
    base, db = _store(tmp_path)
    db.unlink()
    db.write_bytes(b"")
    assert main(base) == 0
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM results").fetchone() == (40,)
