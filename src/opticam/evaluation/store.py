"""The SQLite result store: one row per (run, image, method), committed batch by batch.

A run is identified by the hash of its configuration (model, weights, layer, target mode, method
options, insertion/deletion settings, dataset): a changed configuration is a separate run in the same
file, never mixed in. Rows are written in one transaction per batch of images and method, so a run
killed at any moment (even SIGKILL) loses at most the batch in flight, and a restart skips what is
stored. The schema is documented in ``docs/evaluation.md``; it is enough to rebuild every table and
curve from the file alone.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import OpticamError

SCHEMA_VERSION = 2  # 2: the nullable localization columns (LOCALIZATION_COLUMNS); 1 files are upgraded in place

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id  TEXT PRIMARY KEY,          -- first 16 hex digits of sha256(config JSON, sorted keys)
    config  TEXT NOT NULL,             -- the configuration as JSON
    created TEXT NOT NULL              -- UTC, ISO 8601
);
CREATE TABLE IF NOT EXISTS results (
    run_id          TEXT NOT NULL REFERENCES runs(run_id),
    image           TEXT NOT NULL,     -- path relative to the dataset root
    method          TEXT NOT NULL,     -- registry name: opticam, fakecam, gradcam, ...
    label           INTEGER NOT NULL,  -- ground-truth class index
    class_index     INTEGER NOT NULL,  -- class explained and scored (label or predicted, per target mode)
    predicted       INTEGER NOT NULL,  -- top-1 class on the original image
    p               REAL NOT NULL,     -- softmax prob of class_index, original image
    o               REAL NOT NULL,     -- same, masked image x * M (pixel space)
    ad_term         REAL NOT NULL,     -- max(p - o, 0) / p
    ag_term         REAL NOT NULL,     -- max(o - p, 0) / (1 - p)
    ai_term         INTEGER NOT NULL,  -- 1 if p < o else 0
    insertion       REAL,              -- insertion AUC in [0, 1]; NULL when insertion/deletion is off
    deletion        REAL,              -- deletion AUC in [0, 1]; NULL when off
    insertion_curve TEXT,              -- JSON list of probabilities at config.insdel.fractions
    deletion_curve  TEXT,              -- JSON list, same points
    seconds         REAL NOT NULL,     -- the method's wall time per image (its batch's time / batch size)
    iterations      INTEGER,           -- Opti-CAM optimizer steps for this image; NULL for other methods
    extra           TEXT,              -- JSON: method-specific details (Opti-CAM objective values ...)
    device          TEXT NOT NULL,
    created         TEXT NOT NULL,
    n_boxes              INTEGER,      -- ground-truth boxes left after preprocessing; NULL = not scored
    pointing_game        INTEGER,      -- 1 if the map's maximum is within 15 px of a box, else 0; NULL = not scored
    energy_pointing_game REAL,         -- share of the map's sum inside the union of the boxes; NULL = not scored
    box_ious             TEXT,         -- JSON: best IoU at each box threshold 0, 0.01, ..., 0.99; NULL = not scored
    PRIMARY KEY (run_id, image, method)
);
"""

# Covers the table's columns, so the summary never reads the curves (kilobytes of JSON per row, stored
# before `seconds` in each record): 450,000 rows print their table in seconds (docs/scale.md). Created after
# the schema-2 upgrade, since it names the localization columns.
SUMMARY_INDEX = """
CREATE INDEX IF NOT EXISTS results_summary ON results(
    run_id, method, image, label, predicted, ad_term, ag_term, ai_term, insertion, deletion, seconds,
    n_boxes, pointing_game, energy_pointing_game
);
"""

# Added in schema 2 (after ``created``, so ``ALTER TABLE ... ADD COLUMN`` gives old files the same layout).
LOCALIZATION_COLUMNS = {
    "n_boxes": "INTEGER",
    "pointing_game": "INTEGER",
    "energy_pointing_game": "REAL",
    "box_ious": "TEXT",
}


@dataclass
class ResultRow:
    """One stored result; the field names are the ``results`` columns."""

    image: str
    method: str
    label: int
    class_index: int
    predicted: int
    p: float
    o: float
    ad_term: float
    ag_term: float
    ai_term: int
    insertion: float | None
    deletion: float | None
    insertion_curve: str | None
    deletion_curve: str | None
    seconds: float
    iterations: int | None
    extra: str | None
    device: str
    n_boxes: int | None = None
    pointing_game: int | None = None
    energy_pointing_game: float | None = None
    box_ious: str | None = None


COLUMNS = [f for f in ResultRow.__dataclass_fields__]
SUMMARY_COLUMNS = [
    "image",
    "method",
    "label",
    "predicted",
    "ad_term",
    "ag_term",
    "ai_term",
    "insertion",
    "deletion",
    "seconds",
    "n_boxes",
    "pointing_game",
    "energy_pointing_game",
]
"""What :func:`~opticam.evaluation.summary.summarize` reads from the ``results_summary`` index; the per-image
box IoUs it also needs are read only for the rows that have boxes (:meth:`ResultStore.summary_rows`)."""


def config_hash(config: dict[str, Any]) -> str:
    """The run id: 16 hex digits of the sha256 of the configuration's canonical JSON."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class StoreError(OpticamError, ValueError):
    """A result file that cannot be read: missing, not SQLite, or not written by opticam."""


class ResultStore:
    """An open SQLite result file (WAL journal, so a report can read it while a run writes).

    ``readonly=True`` opens an existing file for reading only (the report does): a missing file, a file
    that is not SQLite or one without opticam's tables raises :class:`StoreError` instead of being created.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            self.db = _open_readonly(self.path)
            self._columns = {r[1] for r in self.db.execute("PRAGMA table_info(results)")}
            return
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        with self.db:
            self.db.executescript(SCHEMA)
            self._upgrade()
            self.db.executescript(SUMMARY_INDEX)
            self.db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        self._columns = {r[1] for r in self.db.execute("PRAGMA table_info(results)")}

    def _upgrade(self) -> None:
        """Give a schema-1 file the nullable localization columns (its rows read NULL: not scored)."""
        have = {r[1] for r in self.db.execute("PRAGMA table_info(results)")}
        for name, kind in LOCALIZATION_COLUMNS.items():
            if name not in have:
                try:
                    self.db.execute(f"ALTER TABLE results ADD COLUMN {name} {kind}")
                except sqlite3.OperationalError as exc:  # another process added it first
                    if "duplicate column" not in str(exc):
                        raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs -------------------------------------------------------------------------------------
    def open_run(self, config: dict[str, Any]) -> str:
        """The run id of ``config``, registering the run if it is new."""
        run_id = config_hash(config)
        with self.db:
            self.db.execute(
                "INSERT OR IGNORE INTO runs(run_id, config, created) VALUES (?, ?, ?)",
                (run_id, json.dumps(config, sort_keys=True), _now()),
            )
        return run_id

    def runs(self) -> list[tuple[str, dict[str, Any], str]]:
        """``(run_id, config, created)`` of every run in the file, oldest first."""
        rows = self.db.execute("SELECT run_id, config, created FROM runs ORDER BY created, run_id").fetchall()
        return [(r, json.loads(c), t) for r, c, t in rows]

    def row_counts(self) -> dict[str, int]:
        """Stored rows per run id (runs without rows are absent)."""
        return dict(self.db.execute("SELECT run_id, COUNT(*) FROM results GROUP BY run_id").fetchall())

    # -- rows -------------------------------------------------------------------------------------
    def done(self, run_id: str, method: str) -> set[str]:
        """Images already stored for ``method`` in ``run_id``."""
        rows = self.db.execute("SELECT image FROM results WHERE run_id = ? AND method = ?", (run_id, method))
        return {r[0] for r in rows}

    def add(self, run_id: str, rows: Iterable[ResultRow]) -> None:
        """Store rows in one transaction (all or nothing); a row already stored is an error, not a duplicate."""
        created = _now()
        values = [(run_id, *(getattr(r, c) for c in COLUMNS), created) for r in rows]
        names = ", ".join(["run_id", *COLUMNS, "created"])
        marks = ", ".join("?" * (len(COLUMNS) + 2))
        with self.db:
            self.db.executemany(f"INSERT INTO results({names}) VALUES ({marks})", values)

    def rows(
        self,
        run_id: str,
        methods: Sequence[str] | None = None,
        images: Sequence[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> list[dict]:
        """Stored rows of a run as dicts (optionally only some methods / images / columns).

        All columns come in insertion order; ``columns`` (e.g. :data:`SUMMARY_COLUMNS`) reads only those,
        from the covering index when they are the summary's (ordered by method and image then).
        """
        # A schema-1 file opened read-only has no localization columns: its rows read them as None.
        names = "*" if columns is None else ", ".join(c for c in columns if c in self._columns)
        sql = f"SELECT {names} FROM results WHERE run_id = ?"
        params: list[Any] = [run_id]
        if methods is not None:
            sql += f" AND method IN ({', '.join('?' * len(methods))})"
            params += list(methods)
        if columns is None:
            sql += " ORDER BY rowid"
        self.db.row_factory = sqlite3.Row
        try:
            out = [dict(r) for r in self.db.execute(sql, params)]
        finally:
            self.db.row_factory = None
        for row in out:
            for name in LOCALIZATION_COLUMNS if columns is None else columns:
                row.setdefault(name, None)
        if images is not None:
            wanted = set(images)
            out = [r for r in out if r["image"] in wanted]
        return out

    def summary_rows(
        self, run_id: str, methods: Sequence[str] | None = None, images: Sequence[str] | None = None
    ) -> list[dict]:
        """The rows the table needs: :data:`SUMMARY_COLUMNS` from the covering index, plus ``box_ious`` for
        the rows that have boxes (the only ones that use it), so that the curves are never read."""
        out = self.rows(run_id, methods, images, SUMMARY_COLUMNS)
        ious: dict[tuple[str, str], str] = {}
        if "box_ious" in self._columns and any(r["n_boxes"] for r in out):
            query = "SELECT image, method, box_ious FROM results WHERE run_id = ? AND n_boxes > 0"
            ious = {(i, m): b for i, m, b in self.db.execute(query, (run_id,))}
        for row in out:
            row["box_ious"] = ious.get((row["image"], row["method"]))
        return out


def _open_readonly(path: Path) -> sqlite3.Connection:
    if not path.is_file():  # sqlite3.connect would silently create an empty file
        raise StoreError(f"{path}: no such result file (write one with `opticam evaluate --db {path}`)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not an SQLite file ({exc})") from None
    if not {"runs", "results"} <= tables:
        db.close()
        raise StoreError(f"{path}: not an opticam result file (it has no runs/results tables)")
    return db
