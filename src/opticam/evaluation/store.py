"""The SQLite result store: one row per (run, image, method), committed chunk by chunk.

A run is identified by the hash of its configuration (:func:`opticam.evaluation.runner.run_config`: model,
weights or checkpoint, layer, input size, target mode, data set, the boxes file and each metric's settings
that change its numbers): a changed configuration is a separate run in the same file, never mixed in. The
methods are not part of that hash: each method's settings are recorded in the ``methods`` table under its
spec key (``opticam(objective=diff)``), so adding a method, or a variant with other options, extends the
run, and a method whose recorded settings differ is refused rather than mixed.

Rows are written in one transaction per chunk and method, so a run killed at any moment (even SIGKILL)
loses at most the chunk in flight, and a restart skips what is stored. Each row keeps the fingerprint of the
input it was computed from (``input_hash``: image bytes, label, boxes); a row whose input has changed since
is deleted and computed again, never reused. The file holds everything the tables, the JSON summary and
the report need (the per-image values, the insertion/deletion curves, the diagnostics), and
``ResultStore(path, readonly=True)`` reads it without changing it. The schema is documented in
``docs/evaluation.md``; files of older schemas are upgraded in place when opened for writing.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OpticamError, ResourceError
from ..metrics.registry import metric_columns

SCHEMA_VERSION = 3
"""3: metric columns nullable and derived from the metric declarations, the ``methods`` table (each method's
settings per run); 2: the localization columns. Older files are upgraded in place when opened for writing
(:meth:`ResultStore._upgrade`): their rows and run ids are kept."""

BASE_COLUMNS: dict[str, str] = {
    "image": "TEXT NOT NULL",  # path relative to the dataset root
    "method": "TEXT NOT NULL",  # the method's spec key: opticam, gradcam, opticam(objective=diff), ...
    "label": "INTEGER NOT NULL",  # ground-truth class index
    "class_index": "INTEGER NOT NULL",  # class explained and scored (label or predicted, per target mode)
    "predicted": "INTEGER NOT NULL",  # top-1 class on the original image
    "seconds": "REAL NOT NULL",  # the method's wall time per image (its batch's time / batch size)
    "iterations": "INTEGER",  # optimizer steps for this image (iterative methods); NULL for the others
    "extra": "TEXT",  # JSON: the method's other diagnostics (objective before/after, passes per map, ...)
    "device": "TEXT NOT NULL",
    "input_hash": "TEXT",  # the image's bytes, label and boxes the row was computed from (dataset.fingerprint)
}
"""The columns every row has, whatever the metrics; each metric adds its own (nullable) columns."""


def _schema() -> str:
    """The tables, with the metric columns of every registered metric (all nullable: NULL = not scored)."""
    metrics = "".join(f"    {c.name} {c.sql},  -- {c.doc}\n" for c in metric_columns())
    base = "".join(f"    {name} {kind},\n" for name, kind in BASE_COLUMNS.items())
    return f"""
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id  TEXT PRIMARY KEY,          -- first 16 hex digits of sha256(config JSON, sorted keys)
    config  TEXT NOT NULL,             -- the configuration as JSON
    created TEXT NOT NULL              -- UTC, ISO 8601
);
CREATE TABLE IF NOT EXISTS methods (
    run_id   TEXT NOT NULL REFERENCES runs(run_id),
    method   TEXT NOT NULL,            -- the spec key the rows use
    settings TEXT NOT NULL,            -- JSON: every option that makes the method's maps what they are
    PRIMARY KEY (run_id, method)
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
{base}    created TEXT NOT NULL,
{metrics}    PRIMARY KEY (run_id, image, method)
);
"""


SUMMARY_BASE = ["image", "method", "label", "predicted", "seconds", "iterations", "extra"]


def summary_columns() -> list[str]:
    """What :func:`~opticam.evaluation.summary.summarize` reads: the base columns it needs and every metric
    column marked ``summary`` (so never the curves, kilobytes of JSON per row)."""
    return SUMMARY_BASE + [c.name for c in metric_columns() if c.summary]


def _summary_index(columns: list[str]) -> tuple[str, str]:
    """``(name, CREATE INDEX ...)``: an index covering the summary's columns, named after them so that a new
    metric's columns give a new index (the old one is dropped): 450,000 rows print their table in seconds."""
    digest = hashlib.sha256(",".join(columns).encode()).hexdigest()[:8]
    name = f"results_summary_{digest}"
    return name, f"CREATE INDEX IF NOT EXISTS {name} ON results(run_id, {', '.join(c for c in columns)})"


@dataclass
class ResultRow:
    """One stored result: the base columns, and ``values``, the metric columns by name (missing = NULL)."""

    image: str
    method: str
    label: int
    class_index: int
    predicted: int
    seconds: float
    iterations: int | None
    extra: str | None
    device: str
    input_hash: str | None = None
    values: dict[str, Any] = field(default_factory=dict)


def config_hash(config: dict[str, Any]) -> str:
    """The run id: 16 hex digits of the sha256 of the configuration's canonical JSON."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class StoreError(OpticamError, ValueError):
    """A result file that cannot be read: missing, not SQLite, or not written by opticam."""


class StoreCorruptError(ResourceError):
    """A result file whose pages SQLite's ``PRAGMA quick_check`` finds damaged (a garbled or truncated page).

    Raised when the file is opened, before anything is written: the file is left byte for byte as it was.
    A run-time failure (exit status 1): restore the file or give a new ``--db``; the rows can be exported
    from a copy with ``sqlite3 COPY.sqlite .recover``.
    """


def _check_intact(db: sqlite3.Connection, path: Path) -> None:
    """``PRAGMA quick_check`` on ``db``: anything but ``ok`` raises :class:`StoreCorruptError`."""
    try:
        result = [r[0] for r in db.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        result = [str(exc)]
    if result != ["ok"]:
        db.close()
        raise StoreCorruptError(
            f"{path}: the result file is corrupt ({result[0]}); it was not changed. Restore it from a copy or "
            f"give a new --db (its rows can be exported from a copy with `sqlite3 COPY.sqlite .recover`)"
        )


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
        try:
            self.db = sqlite3.connect(self.path, timeout=30)
            _check_intact(self.db, self.path)  # before any write: a damaged file is never touched
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._upgrade()
            with self.db:
                _execute_script(self.db, _schema())
                self._add_metric_columns()
                self._index_summary()
                self.db.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot be used as a result file ({exc})") from None
        self._columns = {r[1] for r in self.db.execute("PRAGMA table_info(results)")}

    def _upgrade(self) -> None:
        """Bring a file written by an older opticam to schema 3, keeping every row and run id.

        Schema 1/2 files declared ``p``, ``o`` and the AD/AG/AI terms ``NOT NULL``; a run may now store
        only the metrics it selects, so the ``results`` table is rebuilt with every metric column nullable
        (one ``INSERT ... SELECT`` in the open transaction). Their runs' methods get ``methods`` rows from
        what the run configuration recorded (:func:`legacy_method_settings`).
        """
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "results" not in tables or "methods" in tables:
            return
        self.db.execute("BEGIN IMMEDIATE")  # all or nothing: a file killed mid-upgrade keeps its old tables
        try:
            self._rebuild()
        except BaseException:
            self.db.rollback()
            raise
        self.db.commit()

    def _rebuild(self) -> None:
        """:meth:`_upgrade`'s work, inside its transaction."""
        have = [r[1] for r in self.db.execute("PRAGMA table_info(results)")]
        self.db.execute("ALTER TABLE results RENAME TO results_old")
        query = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'results_old'"
        for (name,) in self.db.execute(query).fetchall():
            if not name.startswith("sqlite_autoindex"):
                self.db.execute(f"DROP INDEX {name}")
        _execute_script(self.db, _schema())
        now = {r[1] for r in self.db.execute("PRAGMA table_info(results)")}
        kept = ", ".join(c for c in have if c in now)
        self.db.execute(f"INSERT INTO results({kept}) SELECT {kept} FROM results_old")
        self.db.execute("DROP TABLE results_old")
        for run_id, config in self.db.execute("SELECT run_id, config FROM runs").fetchall():
            rows = self.db.execute("SELECT DISTINCT method FROM results WHERE run_id = ?", (run_id,))
            methods = [m for (m,) in rows]
            for method, settings in legacy_method_settings(json.loads(config), methods).items():
                self.db.execute(
                    "INSERT OR IGNORE INTO methods(run_id, method, settings) VALUES (?, ?, ?)",
                    (run_id, method, json.dumps(settings, sort_keys=True)),
                )

    def _add_metric_columns(self) -> None:
        """Give the file the nullable columns added since it was written (metrics registered since: NULL =
        not scored)."""
        have = {r[1] for r in self.db.execute("PRAGMA table_info(results)")}
        missing = [(c.name, c.sql) for c in metric_columns() if c.name not in have]
        missing += [(n, k) for n, k in BASE_COLUMNS.items() if n not in have and "NOT NULL" not in k]
        for name, sql in missing:
            if name not in have:
                try:
                    self.db.execute(f"ALTER TABLE results ADD COLUMN {name} {sql}")
                except sqlite3.OperationalError as exc:  # another process added it first
                    if "duplicate column" not in str(exc):
                        raise

    def _index_summary(self) -> None:
        """The covering index of the summary's columns; older summary indexes are dropped."""
        name, sql = _summary_index(summary_columns())
        for (old,) in self.db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'results_summary%'"
        ).fetchall():
            if old != name:
                self.db.execute(f"DROP INDEX {old}")
        self.db.execute(sql)

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

    def has_run(self, run_id: str) -> bool:
        """Whether the file holds the run ``run_id``."""
        return self.db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is not None

    def runs(self) -> list[tuple[str, dict[str, Any], str]]:
        """``(run_id, config, created)`` of every run in the file, oldest first."""
        rows = self.db.execute("SELECT run_id, config, created FROM runs ORDER BY created, run_id").fetchall()
        return [(r, json.loads(c), t) for r, c, t in rows]

    def record_method(self, run_id: str, method: str, settings: dict[str, Any]) -> None:
        """Record the settings behind ``method``'s rows in ``run_id``; the same key with other settings is an
        error (the rows would mix two different methods), which says what differs.

        Raises:
            StoreError: ``method`` is stored in this run with other settings.
        """
        text = json.dumps(settings, sort_keys=True)
        with self.db:
            self.db.execute(
                "INSERT OR IGNORE INTO methods(run_id, method, settings) VALUES (?, ?, ?)", (run_id, method, text)
            )
        (stored,) = self.db.execute(
            "SELECT settings FROM methods WHERE run_id = ? AND method = ?", (run_id, method)
        ).fetchone()
        if stored != text:
            before, now = json.loads(stored), settings
            keys = sorted(set(before) | set(now))
            diff = {k: (before.get(k), now.get(k)) for k in keys if before.get(k) != now.get(k)}
            raise StoreError(
                f"{self.path}: method {method!r} of run {run_id} was stored with other settings "
                f"(stored vs now: {diff}); use another --db, or name the method with its options"
            )

    def method_settings(self, run_id: str) -> dict[str, dict[str, Any]]:
        """``{method key: settings}`` of a run (from the ``methods`` table; empty for an old read-only file)."""
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "methods" not in tables:
            row = self.db.execute("SELECT config FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            found = self.db.execute("SELECT DISTINCT method FROM results WHERE run_id = ?", (run_id,))
            methods = [m for (m,) in found]
            return legacy_method_settings(json.loads(row[0]), methods) if row else {}
        rows = self.db.execute("SELECT method, settings FROM methods WHERE run_id = ?", (run_id,))
        return {m: json.loads(t) for m, t in rows}

    def row_counts(self) -> dict[str, int]:
        """Stored rows per run id (runs without rows are absent)."""
        return dict(self.db.execute("SELECT run_id, COUNT(*) FROM results GROUP BY run_id").fetchall())

    # -- rows -------------------------------------------------------------------------------------
    def done(self, run_id: str, method: str) -> set[str]:
        """Images already stored for ``method`` in ``run_id``."""
        rows = self.db.execute("SELECT image FROM results WHERE run_id = ? AND method = ?", (run_id, method))
        return {r[0] for r in rows}

    def fingerprints(self, run_id: str, method: str) -> dict[str, str | None]:
        """``{image: input_hash}`` of the rows stored for ``method`` in ``run_id``."""
        rows = self.db.execute(
            "SELECT image, input_hash FROM results WHERE run_id = ? AND method = ?", (run_id, method)
        )
        return dict(rows.fetchall())

    def forget(self, run_id: str, method: str, images: Sequence[str]) -> None:
        """Delete the rows of ``images`` (stale: computed from an older version of their input), in one
        transaction, so that they are computed again."""
        with self.db:
            self.db.executemany(
                "DELETE FROM results WHERE run_id = ? AND method = ? AND image = ?",
                [(run_id, method, image) for image in images],
            )

    def add(self, run_id: str, rows: Iterable[ResultRow]) -> None:
        """Store rows in one transaction (all or nothing); a row already stored is an error, not a duplicate."""
        created = _now()
        rows = list(rows)
        metric_names = [c.name for c in metric_columns() if any(c.name in r.values for r in rows)]
        names = ["run_id", *BASE_COLUMNS, "created", *metric_names]
        values = [
            (run_id, *(getattr(r, c) for c in BASE_COLUMNS), created, *(r.values.get(c) for c in metric_names))
            for r in rows
        ]
        marks = ", ".join("?" * len(names))
        with self.db:
            self.db.executemany(f"INSERT INTO results({', '.join(names)}) VALUES ({marks})", values)

    def rows(
        self,
        run_id: str,
        methods: Sequence[str] | None = None,
        images: Sequence[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> list[dict]:
        """Stored rows of a run as dicts (optionally only some methods / images / columns).

        All columns come in insertion order; ``columns`` (e.g. :func:`summary_columns`) reads only those,
        from the covering index when they are the summary's (ordered by method and image then).
        """
        # A file opened read-only may lack newer metric columns: its rows read them as None.
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
        wanted = [c.name for c in metric_columns()] if columns is None else list(columns)
        for row in out:
            for name in wanted:
                row.setdefault(name, None)
        if images is not None:
            wanted = set(images)
            out = [r for r in out if r["image"] in wanted]
        return out

    def summary_rows(
        self, run_id: str, methods: Sequence[str] | None = None, images: Sequence[str] | None = None
    ) -> list[dict]:
        """The rows the table needs (:func:`summary_columns`, from the covering index): never the curves."""
        return self.rows(run_id, methods, images, summary_columns())


def _execute_script(db: sqlite3.Connection, script: str) -> None:
    """Run the statements of ``script`` one by one (``executescript`` would commit the open transaction)."""
    for statement in script.split(";\n"):
        if statement.strip():
            db.execute(statement)


def legacy_method_settings(config: dict[str, Any], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """What a run written before schema 3 recorded of its methods, as ``methods`` rows.

    Such a run's configuration holds ``method_options`` (Opti-CAM's recorded options, Extremal's
    iterations when not the default); the presets ran at their own settings. Names that are no longer
    registered keep what the configuration says.
    """
    from ..methods.registry import METHODS, method_entry

    options = config.get("method_options", {}) or {}
    out: dict[str, dict[str, Any]] = {}
    for name in methods:
        given = dict(options.get(name, {}))
        if name not in METHODS:
            out[name] = {"method": name, **given}
            continue
        entry = method_entry(name)
        known = {o.name for o in entry.all_options()}
        out[name] = {"method": name, **entry.settings({k: v for k, v in given.items() if k in known})}
        if "layer" in out[name]:
            out[name]["layer"] = out[name]["layer"] or config.get("layer")
    return out


def _open_readonly(path: Path) -> sqlite3.Connection:
    if not path.is_file():  # sqlite3.connect would silently create an empty file
        raise StoreError(f"{path}: no such result file (write one with `opticam evaluate --db {path}`)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not an SQLite file ({exc})") from None
    _check_intact(db, path)
    if not {"runs", "results"} <= tables:
        db.close()
        raise StoreError(f"{path}: not an opticam result file (it has no runs/results tables)")
    return db
